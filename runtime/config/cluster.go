package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/sluicehq/sluice/plugins/redis/redisconn"
	"github.com/sluicehq/sluice/runtime/cluster"
	"github.com/sluicehq/sluice/sdk"
)

// Cluster is a file's cluster key: several sluice instances load the same files and share their
// pipelines, each pipeline running on the instance that holds its lease in Redis (see runtime/cluster).
type Cluster struct {
	// Pos is where the key's value starts.
	Pos Pos
	// Redis holds the connection settings (key redis: those of the Redis buffer, redisconn.Settings),
	// validated, with defaults applied and references expanded, as JSON-ready values like
	// Stage.Settings.
	Redis map[string]any
	// LeaseTTL is how long a lease lasts unless renewed (key lease_ttl, default cluster.DefaultTTL).
	LeaseTTL time.Duration
	// InstanceID names this instance among those sharing the pipelines (key instance_id, references
	// expanded); empty: the CLI's default, the host name and the process id.
	InstanceID string
	// KeyPrefix starts every Redis key the instances share (key key_prefix, default
	// cluster.DefaultPrefix).
	KeyPrefix string

	printed map[string]any // Redis as Print shows it
	idRef   bool           // InstanceID came from a reference: Print redacts it
}

// clusterKeys are the keys of cluster, in the order they are documented.
var clusterKeys = []string{"redis", "lease_ttl", "instance_id", "key_prefix"}

// clusterSpec declares cluster.redis: the Redis buffer's connection settings and their rules.
var clusterSpec = &sdk.Stage{Summary: "the Redis that holds leases and positions", Settings: redisconn.Settings, Rules: redisconn.Rules}

// cluster reads the cluster key (n, nil when absent):
//
//	cluster:
//	  redis: { addr: redis:6379, password: ${env:REDIS_PASSWORD} }   # as the Redis buffer's
//	  lease_ttl: 10s
//	  instance_id: ${env:HOSTNAME}                                     # default: host name and pid
//	  key_prefix: sluice
func (v *validator) cluster(n *node) *Cluster {
	if n == nil || isNull(n) {
		return nil
	}
	if n.kind != kindMap {
		v.errorf(n.pos, "cluster: want an object like { redis: { addr: HOST:PORT }, lease_ttl: 10s }, got %s", describe(n, false))
		return nil
	}
	errs := len(v.errs)
	c := &Cluster{Pos: n.pos, LeaseTTL: cluster.DefaultTTL, KeyPrefix: cluster.DefaultPrefix}
	v.unknownKeys(n, "in cluster", clusterKeys)
	redis := n.fields["redis"]
	at := n.pos
	if redis != nil {
		at = redis.key
		if isNull(redis) {
			redis = nil
		} else if redis.kind != kindMap {
			v.errorf(redis.pos, "cluster.redis: want an object of connection settings like { addr: HOST:PORT }, got %s", describe(redis, false))
			redis = nil
		}
	}
	s := &Stage{Settings: map[string]any{}, printed: map[string]any{}, Pos: at, where: "cluster.redis"}
	v.settings(s, clusterSpec, redis, at, at)
	c.Redis, c.printed = s.Settings, s.printed
	if k := n.fields["lease_ttl"]; k != nil {
		if d, ok := v.durationKey(k, "cluster.lease_ttl"); ok {
			if d < cluster.MinTTL || d > cluster.MaxTTL {
				v.errorf(k.pos, "cluster.lease_ttl: want %s to %s, got %s", cluster.MinTTL, cluster.MaxTTL, d)
			}
			c.LeaseTTL = d
		}
	}
	if k := n.fields["instance_id"]; k != nil {
		c.InstanceID, c.idRef = v.clusterName(k, "cluster.instance_id", "#", 200)
	}
	if k := n.fields["key_prefix"]; k != nil {
		if p, ref := v.clusterName(k, "cluster.key_prefix", "{}", 100); ref {
			v.errorf(k.pos, "cluster.key_prefix: references are not expanded here: every instance must use the same prefix, so write it")
		} else {
			c.KeyPrefix = p
		}
	}
	if len(v.errs) > errs {
		return nil
	}
	return c
}

// clusterName reads a name (instance_id, key_prefix): a string, references expanded, of 1 to limit
// characters, printable, without spaces or any of the characters in forbidden. It reports whether the
// value held a reference.
func (v *validator) clusterName(n *node, what, forbidden string, limit int) (string, bool) {
	s, ok := v.stringKey(n, what)
	if !ok {
		return "", false
	}
	r := v.x.expand(s, false, MaxValueBytes)
	for _, p := range r.problems {
		v.errorf(n.pos, "%s: %s", what, p)
	}
	if len(r.problems) > 0 {
		return "", r.refs
	}
	from := ""
	if r.refs {
		from = " (from a reference)"
	}
	name := r.out
	switch {
	case name == "":
		v.errorf(n.pos, "%s%s is empty: remove the key for the default, or give a name", what, from)
	case len([]rune(name)) > limit:
		v.errorf(n.pos, "%s%s: longer than %d characters", what, from, limit)
	case strings.ContainsAny(name, forbidden):
		v.errorf(n.pos, "%s%s: %s may not contain %s", what, from, quote(name), joinAnd(strings.Split(forbidden, "")))
	case strings.IndexFunc(name, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0:
		v.errorf(n.pos, "%s%s: %s may not contain spaces or control characters", what, from, quote(name))
	default:
		return name, r.refs
	}
	return "", r.refs
}

// Same reports whether c and o configure the same cluster, as resolved (references expanded).
func (c *Cluster) Same(o *Cluster) bool {
	if c == nil || o == nil {
		return c == o
	}
	return c.fingerprint() == o.fingerprint()
}

func (c *Cluster) fingerprint() string {
	b, err := json.Marshal(map[string]any{"redis": c.Redis, "lease_ttl": c.LeaseTTL, "instance_id": c.InstanceID,
		"key_prefix": c.KeyPrefix})
	if err != nil {
		return "unencodable: " + err.Error()
	}
	return string(b)
}

// printCluster is how Print shows cluster.
type printCluster struct {
	Redis      map[string]any `yaml:"redis"`
	LeaseTTL   string         `yaml:"lease_ttl"`
	InstanceID string         `yaml:"instance_id,omitempty"`
	KeyPrefix  string         `yaml:"key_prefix"`
}

func printedCluster(c *Cluster) *printCluster {
	if c == nil {
		return nil
	}
	id := c.InstanceID
	if c.idRef {
		id = redacted
	}
	redis := c.printed
	if redis == nil {
		redis = map[string]any{}
		for k := range c.Redis {
			redis[k] = redacted
		}
	}
	return &printCluster{Redis: redis, LeaseTTL: c.LeaseTTL.String(), InstanceID: id, KeyPrefix: c.KeyPrefix}
}

// String describes the cluster for people, without credentials: "Redis at redis:6379, lease TTL 10s".
func (c *Cluster) String() string {
	var rc redisconn.Config
	_ = sdk.Settings(c.Redis).Decode(&rc)
	return fmt.Sprintf("Redis at %s, lease TTL %s, keys %s:*", rc.Where(), c.LeaseTTL, c.KeyPrefix)
}
