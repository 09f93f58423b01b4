// Package redis is sluice's durable buffer on Redis Streams.
//
// Each pipeline's buffer is one stream; every record is one stream entry, and its buffer position (what
// the sink stores and acknowledges) is the entry's ID, such as "1700000000000-5". An Append writes the
// batch's entries and the batch's source position (the checkpoint) in one Lua script, so Redis holds both
// or neither: after a crash anywhere, the host resumes the source strictly after the checkpoint and
// nothing is lost or appended twice (the position rule, docs/architecture.md). The sink's acknowledgements trim the stream.
//
// Keys, for the setting key = K (default "sluice:{PIPELINE}"): the stream K, and a hash K:meta holding the
// checkpoint (field pos), the fencing token (fence) and byte counters. When K has no {hash tag}, the
// whole of K is wrapped in one ("orders" becomes "{orders}"), so that both keys share a Redis Cluster slot
// and the script may touch them together.
//
// See docs/decisions/2026-11-22-redis-buffer.md for the layout and the choices behind it.
package redis

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/sdk"
)

// Plugin returns the redis plugin: its spec and its buffer constructor.
func Plugin() sdk.Plugin {
	return sdk.Plugin{
		Spec: sdk.Spec{
			Name:    "redis",
			Version: "0.1.0",
			Summary: "A durable, bounded buffer on Redis Streams that stores the source position atomically with the records.",
			Author:  "sluice",
			Buffer: &sdk.Stage{
				Summary:  "Appends each batch and its source position in one Lua script; reads in order with blocking reads; trims what the sink has stored; blocks the source when full. Survives restarts of sluice and of Redis when Redis keeps an append-only file with appendfsync always.",
				Settings: settings,
				Rules: []sdk.Rule{
					{Expr: `((tls_cert_file ?? "") == "") == ((tls_key_file ?? "") == "")`, Settings: []string{"tls_cert_file", "tls_key_file"},
						Message: "tls_cert_file and tls_key_file go together: set both, or neither"},
				},
				Capabilities: sdk.Capabilities{
					AtomicPosition: true,
				},
			},
		},
		NewBuffer: func() sdk.Buffer { return &Buffer{} },
	}
}

var settings = []sdk.Setting{
	{Name: "addr", Type: sdk.TypeString, Default: "127.0.0.1:6379",
		Doc: "The Redis server, host:port (with cluster: any node of the cluster). Ignored when url is set."},
	{Name: "url", Type: sdk.TypeString,
		Doc: "A Redis URL instead of addr, username, password and db: redis://user:password@host:6379/0, or rediss:// for TLS."},
	{Name: "username", Type: sdk.TypeString,
		Doc: "The ACL user. Empty: the default user."},
	{Name: "password", Type: sdk.TypeString, Secret: true,
		Doc: "The ACL user's password (or requirepass). Write it as ${env:NAME} or ${file:PATH} rather than in the file."},
	{Name: "db", Type: sdk.TypeInt, Default: "0", Min: "0",
		Doc: "The database number (standalone servers only)."},
	{Name: "cluster", Type: sdk.TypeBool, Default: "false",
		Doc: "True: addr is a node of a Redis Cluster; the client follows the cluster's slots. The buffer's keys share a hash tag, so they live on one node."},
	{Name: "key", Type: sdk.TypeString,
		Doc: "The stream's key; the checkpoint and counters are in the hash KEY:meta. Default sluice:{PIPELINE}. A key without a {hash tag} is wrapped in one, so both keys share a cluster slot. Two pipelines must not share a key."},
	{Name: "max_entries", Type: sdk.TypeInt, Default: "1000000", Min: "0",
		Doc: "Records held (appended and not yet stored by the sink) before Append blocks and the source stops being read. Default 1000000; 0: no limit on the count. Nothing unacknowledged is ever evicted."},
	{Name: "max_bytes", Type: sdk.TypeInt, Default: "1073741824", Min: "0",
		Doc: "Bytes of records held (their encoded size, without Redis's own overhead of roughly 20-60 bytes an entry) before Append blocks. Default 1 GiB; 0: no limit on bytes. Size Redis's maxmemory above it."},
	{Name: "tls", Type: sdk.TypeBool, Default: "false",
		Doc: "Connect with TLS (also implied by a rediss:// url or any tls_* file). The server is verified against the system's CAs unless tls_ca_file is set."},
	{Name: "tls_ca_file", Type: sdk.TypeString,
		Doc: "A PEM file of CA certificates to verify the server with."},
	{Name: "tls_cert_file", Type: sdk.TypeString,
		Doc: "A PEM client certificate, for servers that require mutual TLS (with tls_key_file)."},
	{Name: "tls_key_file", Type: sdk.TypeString,
		Doc: "The PEM private key of tls_cert_file."},
	{Name: "tls_server_name", Type: sdk.TypeString,
		Doc: "The name the server's certificate must carry. Default: the host of addr."},
	{Name: "dial_timeout", Type: sdk.TypeDuration, Default: "5s", Min: "1ms",
		Doc: "How long to wait for a connection. Default 5s."},
	{Name: "timeout", Type: sdk.TypeDuration, Default: "10s", Min: "1ms",
		Doc: "How long one command may take before it counts as failed (a blocking read adds its wait). Default 10s; an append of 16 batches of large records on a slow disk with appendfsync always needs room."},
	{Name: "retry_timeout", Type: sdk.TypeDuration, Default: "1m", Min: "0s",
		Doc: "How long an operation keeps retrying, with exponential backoff, while Redis is unreachable or loading (a restart) before the stage fails and the host restarts the pipeline. Default 1m."},
}

// Config holds the buffer's settings.
type Config struct {
	Addr          string        `setting:"addr"`
	URL           string        `setting:"url"`
	Username      string        `setting:"username"`
	Password      string        `setting:"password"`
	DB            int           `setting:"db"`
	Cluster       bool          `setting:"cluster"`
	Key           string        `setting:"key"`
	MaxEntries    int64         `setting:"max_entries"`
	MaxBytes      int64         `setting:"max_bytes"`
	TLS           bool          `setting:"tls"`
	TLSCAFile     string        `setting:"tls_ca_file"`
	TLSCertFile   string        `setting:"tls_cert_file"`
	TLSKeyFile    string        `setting:"tls_key_file"`
	TLSServerName string        `setting:"tls_server_name"`
	DialTimeout   time.Duration `setting:"dial_timeout"`
	Timeout       time.Duration `setting:"timeout"`
	RetryTimeout  time.Duration `setting:"retry_timeout"`
}

// defaults returns the settings' defaults, as the spec declares them.
func defaults() Config {
	return Config{Addr: "127.0.0.1:6379", MaxEntries: 1000000, MaxBytes: 1 << 30,
		DialTimeout: 5 * time.Second, Timeout: 10 * time.Second, RetryTimeout: time.Minute}
}

// invalid wraps a settings problem so that the host fails the pipeline instead of restarting it.
func invalid(format string, args ...any) error {
	return fmt.Errorf("redis: %s: %w", fmt.Sprintf(format, args...), sdk.ErrInvalidSettings)
}

// client builds the Redis client the settings describe. It does not connect.
func (c *Config) client() (goredis.UniversalClient, error) {
	switch {
	case c.MaxEntries < 0:
		return nil, invalid("max_entries must not be negative, got %d", c.MaxEntries)
	case c.MaxBytes < 0:
		return nil, invalid("max_bytes must not be negative, got %d", c.MaxBytes)
	case c.Timeout <= 0 || c.DialTimeout <= 0:
		return nil, invalid("timeout and dial_timeout must be positive")
	case c.RetryTimeout < 0:
		return nil, invalid("retry_timeout must not be negative")
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		return nil, invalid("tls_cert_file and tls_key_file go together")
	}
	opts := &goredis.UniversalOptions{
		Addrs:         []string{c.Addr},
		Username:      c.Username,
		Password:      c.Password,
		DB:            c.DB,
		IsClusterMode: c.Cluster,
		DialTimeout:   c.DialTimeout,
		ReadTimeout:   c.Timeout,
		WriteTimeout:  c.Timeout,
		// Retries are the buffer's own (retry_timeout, with backoff), in one place: go-redis would
		// otherwise also retry writes, which the append script tolerates but which hides outages.
		MaxRetries: -1,
		PoolSize:   4, // Append, Read and Ack each hold at most one connection at a time
		// Commands honour the deadlines of the contexts the SDK passes (a blocking read gets its block
		// time added to timeout by go-redis).
		ContextTimeoutEnabled: true,
		DisableIdentity:       true, // no CLIENT SETINFO: older and managed servers refuse it
	}
	if c.URL != "" {
		u, err := goredis.ParseURL(c.URL)
		if err != nil {
			return nil, invalid("url: %v", err)
		}
		opts.Addrs, opts.Username, opts.Password, opts.DB = []string{u.Addr}, u.Username, u.Password, u.DB
		if u.TLSConfig != nil {
			c.TLS = true
			if c.TLSServerName == "" {
				c.TLSServerName = u.TLSConfig.ServerName
			}
		}
	}
	if c.TLS || c.TLSCAFile != "" || c.TLSCertFile != "" || c.TLSServerName != "" {
		tc, err := c.tlsConfig(opts.Addrs[0])
		if err != nil {
			return nil, err
		}
		opts.TLSConfig = tc
	}
	return goredis.NewUniversalClient(opts), nil
}

func (c *Config) tlsConfig(addr string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLSServerName}
	if tc.ServerName == "" {
		tc.ServerName = addr
		if i := strings.LastIndexByte(addr, ':'); i >= 0 {
			tc.ServerName = strings.Trim(addr[:i], "[]")
		}
	}
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		if err != nil {
			return nil, invalid("tls_ca_file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, invalid("tls_ca_file %s holds no PEM certificate", c.TLSCAFile)
		}
		tc.RootCAs = pool
	}
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return nil, invalid("tls_cert_file/tls_key_file: %v", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// keys returns the stream's key and the meta hash's key for the setting key (default sluice:{pipeline}).
func keys(key, pipeline string) (stream, meta string) {
	if key == "" {
		key = "sluice:{" + pipeline + "}"
	}
	if open := strings.IndexByte(key, '{'); open < 0 || !strings.Contains(key[open+1:], "}") || key[open+1] == '}' {
		key = "{" + key + "}"
	}
	return key, key + ":meta"
}

// checkPersistence reads the server's persistence settings and logs what a Redis restart would cost. A
// server that refuses CONFIG (an ACL, a managed service) gets a warning that says what to check by hand.
func checkPersistence(ctx context.Context, c goredis.UniversalClient, log *slog.Logger) {
	get := func(name string) (string, error) {
		m, err := c.ConfigGet(ctx, name).Result()
		if err != nil {
			return "", err
		}
		v, ok := m[name]
		if !ok {
			return "", fmt.Errorf("CONFIG GET %s returned nothing", name)
		}
		return v, nil
	}
	aof, err1 := get("appendonly")
	fsync, err2 := get("appendfsync")
	save, err3 := get("save")
	if err := errors.Join(err1, err2, err3); err != nil {
		log.Warn("redis: cannot read the server's persistence settings; make sure it keeps an append-only file with appendfsync always, or a Redis restart can lose buffered records",
			slog.String("error", err.Error()))
		return
	}
	attrs := []any{slog.String("appendonly", aof), slog.String("appendfsync", fsync), slog.String("save", save)}
	switch {
	case aof != "yes" && save == "":
		log.Warn("redis: Redis persistence is off: a Redis restart empties the buffer, and records it held that the source can no longer replay are lost; set appendonly yes and appendfsync always", attrs...)
	case aof != "yes":
		log.Warn("redis: Redis keeps only RDB snapshots: a Redis restart rolls the buffer and its source position back to the last snapshot, so records are read from the source again (duplicates downstream) or lost if the source cannot replay them; set appendonly yes and appendfsync always", attrs...)
	case fsync == "everysec":
		log.Warn("redis: appendfsync everysec: a crash of the Redis process loses nothing, but a machine crash or power loss can lose about the last second of appends (entries and position together); set appendfsync always for exactly-once across machine crashes", attrs...)
	case fsync != "always":
		log.Warn("redis: appendfsync "+fsync+": a machine crash or power loss can lose the appends the operating system had not yet written (entries and position together); set appendfsync always for exactly-once across machine crashes", attrs...)
	default:
		log.Info("redis: persistence: append-only file, fsync on every write", attrs...)
	}
}
