// Package cluster lets several sluice instances share the pipelines of the same connector files (a
// file's cluster:): each pipeline runs on exactly one instance, the one that holds its lease in Redis, and
// the positions the host keeps are stored in Redis (Store) so that whichever instance runs a pipeline next
// resumes them.
//
// # Leases
//
// A lease is a Redis key set with NX and an expiry (the lease TTL) by a script that also issues the
// lease's fencing token: greater than every token issued for the pipeline before (it is at least the
// Redis server's clock in milliseconds, and one more than the last token), so tokens keep growing even if
// the lease keys are lost. The holder renews its leases every TTL/4. A renewal that fails is retried at the
// next; when none has succeeded for 3/4 of the TTL since the last successful one was sent, the lease is
// lost: its context is cancelled at once, and the host kills the pipeline's plugin processes, a quarter of
// the TTL before Redis can expire the lease and let another instance take it. A host that is frozen (a
// paused process, a stopped VM) cannot stop anything in time; the token does: each stage that writes to a
// shared system refuses writes with a token older than the newest it has seen (the Redis buffer, the
// shared Store), and the Kafka sink's transactional id fences the old producer.
//
// # Sharing
//
// Every instance registers itself in a sorted set, scored by when its registration expires (renewed with
// its leases), and looks for free leases every second (or TTL/4 if shorter). With N live instances and P
// pipelines an instance holds at most ceil(P/N) leases, and at most one more than the instance holding
// the fewest; free pipelines are taken in an order that differs per instance (rendezvous hashing), so
// instances starting together spread at once. When an instance joins, the one holding the most (by its
// id, on a tie) gives one pipeline up — it drains it and releases the lease — whenever it holds two more
// than another, until the counts differ by at most one. A graceful stop releases every lease at once; the
// leases of an instance that died are taken over once they expire.
//
// # Keys
//
// For the prefix P and a pipeline ID (the {hash tag} keeps a pipeline's keys on one Redis Cluster node):
//
//	P:lease:{ID}        the lease: "TOKEN OWNER", expiring after the TTL unless renewed
//	P:lease:{ID}:info   hash: token (the last issued), holder (instance id), owner, since and renewed
//	                    (Redis clock, ms), released ("1" once its holder released it)
//	P:state:{ID}        hash: the positions the host keeps, and the token each was written with (Store)
//	P:instances         sorted set of live instance ids, scored by when their registration expires (ms)
//
// OWNER is the instance id, '#' and a random nonce of the process, so that a restarted instance with the
// same id does not mistake its predecessor's leases for its own.
package cluster

import (
	"time"
)

// DefaultPrefix is the prefix of every key unless the connector file's cluster.key_prefix says otherwise.
const DefaultPrefix = "sluice"

// Lease TTL bounds and default.
const (
	// DefaultTTL is the lease TTL unless cluster.lease_ttl says otherwise: a dead instance's pipelines
	// are taken over after about this long.
	DefaultTTL = 10 * time.Second
	// MinTTL and MaxTTL bound cluster.lease_ttl.
	MinTTL = time.Second
	MaxTTL = time.Hour
)

// keys builds the Redis keys under a prefix.
type keys struct{ prefix string }

func (k keys) lease(id string) string { return k.prefix + ":lease:{" + id + "}" }
func (k keys) info(id string) string  { return k.lease(id) + ":info" }
func (k keys) state(id string) string { return k.prefix + ":state:{" + id + "}" }
func (k keys) instances() string      { return k.prefix + ":instances" }

// statePattern matches every pipeline's state hash, for SCAN.
func (k keys) statePattern() string { return k.prefix + ":state:{*}" }

// stateID returns the pipeline id of a state hash's key, and whether the key is one.
func (k keys) stateID(key string) (string, bool) {
	p := k.prefix + ":state:{"
	if len(key) <= len(p)+1 || key[:len(p)] != p || key[len(key)-1] != '}' {
		return "", false
	}
	return key[len(p) : len(key)-1], true
}
