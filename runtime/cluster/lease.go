package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/runtime/pipeline"
)

// nowMS is the Lua snippet that sets now to the Redis server's clock in milliseconds.
const nowMS = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// acquireScript takes a free lease and issues its fencing token.
//
// KEYS: lease, info. ARGV: owner, TTL (ms), instance id. Returns {status, token, since, previous owner,
// previous renewal (ms), previous released}: status 1: acquired now (the previous fields describe the
// holder before, if any); 2: already this owner's (a retry after a lost reply); 0: held by the owner
// returned as previous owner.
var acquireScript = goredis.NewScript(nowMS + `
local cur = redis.call('GET', KEYS[1])
if cur then
  local sp = string.find(cur, ' ', 1, true) or (#cur + 1)
  local owner = string.sub(cur, sp + 1)
  if owner == ARGV[1] then
    return {2, string.sub(cur, 1, sp - 1), redis.call('HGET', KEYS[2], 'since') or string.format('%d', now), '', '', ''}
  end
  return {0, string.sub(cur, 1, sp - 1), '', owner, '', ''}
end
local m = redis.call('HMGET', KEYS[2], 'token', 'owner', 'renewed', 'released')
local token = string.format('%d', math.max(tonumber(m[1] or '0') + 1, now))
local since = string.format('%d', now)
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], 'token', token, 'holder', ARGV[3], 'owner', ARGV[1], 'since', since, 'renewed', since, 'released', '0')
return {1, token, since, m[2] or '', m[3] or '', m[4] or ''}
`)

// renewScript extends a lease its owner still holds. KEYS: lease, info. ARGV: owner, token, TTL (ms).
// Returns 1, or 0 when the lease is not (or no longer) the owner's.
var renewScript = goredis.NewScript(nowMS + `
if redis.call('GET', KEYS[1]) ~= ARGV[2] .. ' ' .. ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], 'renewed', string.format('%d', now))
return 1
`)

// releaseScript gives up a lease its owner holds. KEYS: lease, info. ARGV: owner, token. Returns 1, or 0
// when the lease was not (or no longer) the owner's.
var releaseScript = goredis.NewScript(nowMS + `
if redis.call('GET', KEYS[1]) ~= ARGV[2] .. ' ' .. ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], 'released', '1', 'renewed', string.format('%d', now))
return 1
`)

// Lease is a lease this instance holds on a pipeline. It implements pipeline.Lease.
type Lease struct {
	m        *Member
	pipeline string
	token    int64
	since    time.Time

	ctx    context.Context
	cancel context.CancelCauseFunc

	mu sync.Mutex
	// renewed is when (this host's clock) the last renewal that succeeded, or the acquisition, was sent;
	// the lease is relied on until renewed + Member.stopBy, and lost then.
	renewed  time.Time
	timer    *time.Timer
	err      error // why it was lost; nil while held
	released bool
}

func newLease(m *Member, id string, token int64, since, sent time.Time) *Lease {
	l := &Lease{m: m, pipeline: id, token: token, since: since, renewed: sent}
	l.ctx, l.cancel = context.WithCancelCause(context.Background())
	// The timer may fire at once (the acquisition took longer than stopBy): expire then waits for l.mu
	// until l.timer is set.
	l.mu.Lock()
	l.timer = time.AfterFunc(time.Until(sent.Add(m.stopBy)), l.expire)
	l.mu.Unlock()
	return l
}

// Pipeline is the id of the pipeline the lease is on.
func (l *Lease) Pipeline() string { return l.pipeline }

// Token is the lease's fencing token.
func (l *Lease) Token() int64 { return l.token }

// Since is when this instance acquired the lease (the Redis server's clock).
func (l *Lease) Since() time.Time { return l.since }

// Done is closed when the lease is lost or released; context.Cause(Context()) then says why.
func (l *Lease) Done() <-chan struct{} { return l.ctx.Done() }

// Context is cancelled when the lease is lost (its cause wraps pipeline.ErrLeaseLost) or released.
func (l *Lease) Context() context.Context { return l.ctx }

// Err returns why the lease was lost (wrapping pipeline.ErrLeaseLost), or nil while it is held or after
// it was released.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Valid returns nil while the lease is held and was renewed recently enough to be relied on, else an
// error wrapping pipeline.ErrLeaseLost. It reads this host's clock, so it is right even when the timer
// that loses the lease has not run yet (the process was frozen past the deadline).
func (l *Lease) Valid() error {
	l.mu.Lock()
	err, released, late := l.err, l.released, time.Since(l.renewed) >= l.m.stopBy
	l.mu.Unlock()
	switch {
	case err != nil:
		return err
	case released:
		return fmt.Errorf("%w: the lease on pipeline %s was released", pipeline.ErrLeaseLost, l.pipeline)
	case late:
		l.expire()
		if err := l.Err(); err != nil {
			return err
		}
		return fmt.Errorf("%w: the lease on pipeline %s was not renewed in time", pipeline.ErrLeaseLost, l.pipeline)
	}
	return nil
}

// renewedAt records a renewal sent at sent that succeeded.
func (l *Lease) renewedAt(sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil || l.released || !sent.After(l.renewed) {
		return
	}
	l.renewed = sent
	l.timer.Reset(time.Until(sent.Add(l.m.stopBy)))
}

// expire loses the lease when it has not been renewed in time (the timer fires, or Valid notices).
func (l *Lease) expire() {
	l.mu.Lock()
	since := time.Since(l.renewed)
	if since < l.m.stopBy {
		l.timer.Reset(l.m.stopBy - since) // renewed meanwhile
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	l.lose(fmt.Errorf("%w: the lease on pipeline %s could not be renewed for %s (it would expire in Redis %s later, when another instance may take it over)",
		pipeline.ErrLeaseLost, l.pipeline, since.Round(time.Millisecond), max(l.m.ttl-since, 0).Round(time.Millisecond)))
}

// lose marks the lease lost because of err, cancels its context (which stops its pipeline) and tells the
// member. Only the first call counts.
func (l *Lease) lose(err error) {
	l.mu.Lock()
	if l.err != nil || l.released {
		l.mu.Unlock()
		return
	}
	l.err = err
	l.timer.Stop()
	l.mu.Unlock()
	l.cancel(err)
	l.m.lost(l, err)
}

// release marks the lease released (given up on purpose) and reports whether it was held until then.
func (l *Lease) release() bool {
	l.mu.Lock()
	held := l.err == nil && !l.released
	l.released = true
	l.timer.Stop()
	l.mu.Unlock()
	l.cancel(fmt.Errorf("%w: the lease on pipeline %s was released", pipeline.ErrLeaseLost, l.pipeline))
	return held
}
