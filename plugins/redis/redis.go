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
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/plugins/redis/redisconn"
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
				Settings: sdk.MustSettingsOf[Config](),
				Rules:    redisconn.Rules,
				Capabilities: sdk.Capabilities{
					AtomicPosition: true,
				},
			},
		},
		NewBuffer: func() sdk.Buffer { return &Buffer{} },
	}
}

// Config holds the buffer's settings, the connection settings (redisconn.Config) first; its tags declare
// them (sdk.SettingsOf).
type Config struct {
	redisconn.Config `setting:",squash"`
	Key              string        `setting:"key" doc:"The stream's key; the checkpoint and counters are in the hash KEY:meta. Default sluice:{PIPELINE}. A key without a {hash tag} is wrapped in one, so both keys share a cluster slot. Two pipelines must not share a key."`
	MaxEntries       int64         `setting:"max_entries" default:"1000000" min:"0" doc:"Records held (appended and not yet stored by the sink) before Append blocks and the source stops being read. Default 1000000; 0: no limit on the count. Nothing unacknowledged is ever evicted."`
	MaxBytes         int64         `setting:"max_bytes" default:"1073741824" min:"0" doc:"Bytes of records held (their encoded size, without Redis's own overhead of roughly 20-60 bytes an entry) before Append blocks. Default 1 GiB; 0: no limit on bytes. Size Redis's maxmemory above it."`
	RetryTimeout     time.Duration `setting:"retry_timeout" default:"1m" min:"0s" doc:"How long an operation keeps retrying, with exponential backoff, while Redis is unreachable or loading (a restart) before the stage fails and the host restarts the pipeline. Default 1m."`
}

// invalid wraps a settings problem so that the host fails the pipeline instead of restarting it.
func invalid(format string, args ...any) error {
	return fmt.Errorf("redis: %s: %w", fmt.Sprintf(format, args...), sdk.ErrInvalidSettings)
}

// client builds the Redis client the settings describe. It does not connect.
func (c *Config) client() (goredis.UniversalClient, error) {
	opts, err := c.Options()
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	// Retries are the buffer's own (retry_timeout, with backoff), in one place: go-redis would otherwise
	// also retry writes, which the append script tolerates but which hides outages (Options turns them
	// off). Append, Read and Ack each hold at most one connection at a time.
	opts.PoolSize = 4
	return goredis.NewUniversalClient(opts), nil
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
