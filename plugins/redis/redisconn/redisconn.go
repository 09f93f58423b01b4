// Package redisconn is how sluice connects to Redis: the connection settings (address or URL, ACL user,
// database, Redis Cluster, TLS, timeouts) with their spec, and the go-redis client options they describe.
// The Redis buffer's settings start with these; the host uses the same settings, and this package, for
// the leases and the shared state store of several instances (a connector file's cluster.redis), so both
// connect alike and are documented once.
package redisconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/sdk"
)

// Settings are the connection settings, as a plugin spec declares them: Config's tags.
var Settings = sdk.MustSettingsOf[Config]()

// Rules are the rules across the connection settings, as a plugin spec declares them.
var Rules = sdk.TLSRules

// Config holds the connection settings; its tags declare them (sdk.SettingsOf). Embed it in a stage's
// settings struct with the tag `setting:",squash"`: Settings then start the stage's settings, and
// sdk.Settings.Decode fills it.
type Config struct {
	Addr     string `setting:"addr" default:"127.0.0.1:6379" doc:"The Redis server, host:port (with cluster: any node of the cluster). Ignored when url is set."`
	URL      string `setting:"url" doc:"A Redis URL instead of addr, username, password and db: redis://user:password@host:6379/0, or rediss:// for TLS."`
	Username string `setting:"username" doc:"The ACL user. Empty: the default user."`
	Password string `setting:"password,secret" doc:"The ACL user's password (or requirepass). Write it as ${env:NAME} or ${file:PATH} rather than in the file."`
	DB       int    `setting:"db" default:"0" min:"0" doc:"The database number (standalone servers only)."`
	Cluster  bool   `setting:"cluster" default:"false" doc:"True: addr is a node of a Redis Cluster; the client follows the cluster's slots. The keys sluice keeps for one pipeline share a hash tag, so they live on one node."`
	// TLS is the shared TLS settings group; a rediss:// url turns TLS on too, and tls_server_name
	// defaults to the host of addr (or of the url).
	sdk.TLS     `setting:",squash"`
	DialTimeout time.Duration `setting:"dial_timeout" default:"5s" min:"1ms" doc:"How long to wait for a connection. Default 5s."`
	Timeout     time.Duration `setting:"timeout" default:"10s" min:"1ms" doc:"How long one command may take before it counts as failed (a blocking read adds its wait). Default 10s; leave room for an append of many large records on a slow disk with appendfsync always."`
}

// Defaults returns the settings' defaults, as Config's tags declare them.
func Defaults() Config {
	var c Config
	if err := (sdk.Settings{}).Decode(&c); err != nil {
		panic(err) // the tags' defaults are valid: TestDefaults
	}
	return c
}

// invalid wraps a settings problem in sdk.ErrInvalidSettings.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), sdk.ErrInvalidSettings)
}

// Options returns the go-redis options the settings describe: the server (a url replaces addr, username,
// password and db), Redis Cluster, TLS (its files are read now) and the timeouts, with go-redis's own
// retries off (MaxRetries -1: callers retry, with their own backoff), command deadlines taken from the
// contexts callers pass, and no CLIENT SETINFO (older and managed servers refuse it). The caller sets the
// pool size. Problems wrap sdk.ErrInvalidSettings and name the setting.
func (c *Config) Options() (*goredis.UniversalOptions, error) {
	switch {
	case c.Timeout <= 0 || c.DialTimeout <= 0:
		return nil, invalid("timeout and dial_timeout must be positive")
	}
	opts := &goredis.UniversalOptions{
		Addrs:                 []string{c.Addr},
		Username:              c.Username,
		Password:              c.Password,
		DB:                    c.DB,
		IsClusterMode:         c.Cluster,
		DialTimeout:           c.DialTimeout,
		ReadTimeout:           c.Timeout,
		WriteTimeout:          c.Timeout,
		MaxRetries:            -1,
		ContextTimeoutEnabled: true,
		DisableIdentity:       true,
	}
	tlsOn, serverName := c.On(), c.ServerName
	if c.URL != "" {
		u, err := goredis.ParseURL(c.URL)
		if err != nil {
			return nil, invalid("url: %v", err)
		}
		opts.Addrs, opts.Username, opts.Password, opts.DB = []string{u.Addr}, u.Username, u.Password, u.DB
		if u.TLSConfig != nil {
			tlsOn = true
			if serverName == "" {
				serverName = u.TLSConfig.ServerName
			}
		}
	}
	if tlsOn {
		tc, err := c.tlsConfig(opts.Addrs[0], serverName)
		if err != nil {
			return nil, err
		}
		opts.TLSConfig = tc
	}
	return opts, nil
}

// Where returns the server the settings name, for messages: the url's host:port, or addr. It never
// includes credentials.
func (c *Config) Where() string {
	if c.URL != "" {
		if u, err := goredis.ParseURL(c.URL); err == nil {
			return u.Addr
		}
		return "(the url)"
	}
	return c.Addr
}

// ConnectError is a failure to reach a Redis server, or to get a Redis reply from it, described for users
// (see Config.Explain).
type ConnectError struct {
	// Where is the server (Config.Where).
	Where string
	// Problem says what happened, naming Where and the setting to check.
	Problem string
	// Err is the client's error.
	Err error
}

// Error returns the problem.
func (e *ConnectError) Error() string { return e.Problem }

// Unwrap returns the client's error: errors.Is, errors.As and Transient see through a ConnectError, so
// describing a failure never changes its class.
func (e *ConnectError) Unwrap() error { return e.Err }

// Explain describes err, the failure of the first command on a new connection (a PING), for users: it
// names the server and the setting to check, and says which timeout fired, if one did. A reply of the
// server's own (WRONGPASS, NOAUTH, …) is kept, after the server's address. err is returned unchanged
// when it is nil or the caller's context ended (context.Canceled, or context.DeadlineExceeded without
// TLS: only the TLS handshake runs under dial_timeout as a context deadline).
func (c *Config) Explain(err error) error {
	if err == nil {
		return nil
	}
	where, setting := c.Where(), "addr"
	if c.URL != "" {
		setting = "url"
	}
	tlsOn := c.On() || strings.HasPrefix(c.URL, "rediss:")
	notRedis := "is it a Redis server"
	if !tlsOn {
		notRedis += " (one that expects TLS needs tls: true)"
	}
	var (
		problem string
		op      *net.OpError
		dns     *net.DNSError
		nerr    net.Error
		rerr    goredis.Error
	)
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) && !tlsOn:
		return err
	case errors.Is(err, context.DeadlineExceeded):
		problem = fmt.Sprintf("no TLS handshake with %s within dial_timeout (%s): does the server speak TLS, and is %s right?",
			where, c.DialTimeout, setting)
	case errors.As(err, &dns):
		problem = fmt.Sprintf("the host of %s does not resolve (%s): check %s", where, dns.Err, setting)
	case errors.Is(err, syscall.ECONNREFUSED):
		problem = fmt.Sprintf("%s refused the connection: is Redis running there, and is %s right?", where, setting)
	case errors.As(err, &op) && op.Op == "dial" && op.Timeout():
		problem = fmt.Sprintf("no connection to %s within dial_timeout (%s): is the host up and reachable, and is %s right?",
			where, c.DialTimeout, setting)
	case errors.As(err, &nerr) && nerr.Timeout():
		problem = fmt.Sprintf("%s accepted the connection but sent no reply within timeout (%s): %s, and is %s right?",
			where, c.Timeout, notRedis, setting)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET):
		problem = fmt.Sprintf("%s closed the connection without a reply: %s, and is %s right?", where, notRedis, setting)
	case errors.As(err, &rerr):
		problem = fmt.Sprintf("Redis at %s replied: %v", where, rerr)
	case strings.HasPrefix(err.Error(), "redis: can't parse") || strings.HasPrefix(err.Error(), "redis: invalid reply"):
		problem = fmt.Sprintf("%s answered, but not in Redis's protocol: %s, and is %s right?", where, notRedis, setting)
	default:
		problem = fmt.Sprintf("Redis at %s: %v", where, err)
	}
	return &ConnectError{Where: where, Problem: problem, Err: err}
}

// tlsConfig is the TLS group's configuration, verifying serverName, else the host of addr.
func (c *Config) tlsConfig(addr, serverName string) (*tls.Config, error) {
	tc, err := c.TLS.Config()
	if err != nil {
		return nil, err
	}
	tc.ServerName = serverName
	if tc.ServerName == "" {
		tc.ServerName = addr
		if i := strings.LastIndexByte(addr, ':'); i >= 0 {
			tc.ServerName = strings.Trim(addr[:i], "[]")
		}
	}
	return tc, nil
}

// Transient reports whether err is worth retrying: a connection problem, a timeout, or a server reply
// saying it is loading, busy or failing over. Other replies (WRONGPASS, NOPERM, a script's
// error) and certificate errors are not: they would be refused again.
func Transient(err error) bool {
	var verr *tls.CertificateVerificationError
	if errors.Is(err, goredis.ErrClosed) || errors.As(err, &verr) {
		return false // retrying cannot make a certificate valid
	}
	var rerr goredis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		// OOM (maxmemory reached) heals as the sink drains the buffer; the rest are failovers and
		// resharding in progress. Anything else Redis refuses (WRONGPASS, NOAUTH, NOPERM, an unknown
		// command) will be refused again.
		for _, p := range []string{"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "READONLY", "CLUSTERDOWN", "MOVED", "ASK", "OOM"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		// go-redis reports some connection failures as redis.Error too.
		var nerr net.Error
		return errors.As(err, &nerr)
	}
	return true // network errors, EOF, timeouts
}
