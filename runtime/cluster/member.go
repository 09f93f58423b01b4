package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/sluicehq/sluice/runtime/pipeline"
)

// Options configure a Member.
type Options struct {
	// Client is the Redis client (see redisconn); required.
	Client goredis.UniversalClient
	// Where names the Redis server in messages (host:port, never credentials).
	Where string
	// Prefix is the prefix of every key (default DefaultPrefix).
	Prefix string
	// Instance is this instance's id, unique among the instances sharing the pipelines; required.
	Instance string
	// TTL is the lease TTL (default DefaultTTL).
	TTL time.Duration
	// Poll is how often free leases are looked for (default the lesser of a second and TTL/4).
	Poll time.Duration
	// Logger receives what happens to leases; nil discards it.
	Logger *slog.Logger
}

// Holder is who holds a pipeline's lease.
type Holder struct {
	// Instance is the holder's instance id; empty when nobody holds the lease.
	Instance string
	// Owner identifies the holding process (instance id, '#', nonce).
	Owner string
	// Token is the lease's fencing token and Since when the holder acquired it (Redis clock).
	Token int64
	Since time.Time
}

// EventKind says what an Event is about.
type EventKind int

// The events a Member reports.
const (
	// Acquired: this instance holds Event.Lease now; run its pipeline.
	Acquired EventKind = iota + 1
	// Lost: this instance lost Event.Lease (Event.Err says why); its context is cancelled. Release it
	// once the pipeline has stopped.
	Lost
	// Rebalance: another instance holds too few pipelines; drain Event.Lease's pipeline, then Release it.
	Rebalance
)

// Event is something that happened to this instance's leases.
type Event struct {
	Kind  EventKind
	Lease *Lease
	// Previous is the instance that held the lease before (Acquired; empty: nobody ever did).
	Previous string
	// TakenOver: Previous had not released the lease (it died, froze, or lost Redis); Unrenewed is how
	// long its lease had gone without a renewal when this instance took it (Redis clock).
	TakenOver bool
	Unrenewed time.Duration
	// Err is why the lease was lost (Lost), wrapping pipeline.ErrLeaseLost.
	Err error
}

// Member is this instance's membership: it registers the instance, takes its fair share of the wanted
// pipelines' leases, renews them, gives some up when other instances have too few, and reports what
// happens as Events. Create it with Join, then call Run. Safe for concurrent use.
type Member struct {
	client goredis.UniversalClient
	where  string
	keys   keys
	id     string
	owner  string
	ttl    time.Duration
	// renewEvery is how often leases are renewed; stopBy how long after a successful renewal was sent a
	// lease is relied on (then it is lost, TTL-stopBy before Redis can expire it).
	renewEvery, stopBy, poll time.Duration
	log                      *slog.Logger

	mu        sync.Mutex
	wanted    []string
	held      map[string]*Lease
	holders   map[string]Holder
	live      []string // live instance ids, as last seen
	leaving   bool
	giving    map[string]bool      // pipelines asked to be given up (Rebalance), not yet released
	cooldown  map[string]time.Time // pipelines given up here: not taken again before then
	settle    int                  // polls to wait before the next rebalancing decision
	failing   int                  // renewal rounds in a row with an error
	queue     []Event
	ready     chan struct{}
	lastError string // the last poll error logged
}

// Join connects to Redis and registers this instance. It fails when Redis cannot be reached or refuses
// the instance's commands.
func Join(ctx context.Context, o Options) (*Member, error) {
	if o.Client == nil || o.Instance == "" {
		return nil, errors.New("cluster: a Redis client and an instance id are required")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.TTL < MinTTL || o.TTL > MaxTTL {
		return nil, fmt.Errorf("cluster: lease TTL %s is out of range: want %s to %s", o.TTL, MinTTL, MaxTTL)
	}
	if o.Poll <= 0 {
		o.Poll = min(time.Second, o.TTL/4)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	nonce := make([]byte, 6)
	_, _ = rand.Read(nonce)
	m := &Member{client: o.Client, where: o.Where, keys: keys{o.Prefix}, id: o.Instance, owner: o.Instance + "#" + hex.EncodeToString(nonce),
		ttl: o.TTL, renewEvery: o.TTL / 4, stopBy: o.TTL - o.TTL/4, poll: o.Poll, log: o.Logger,
		held: map[string]*Lease{}, holders: map[string]Holder{}, giving: map[string]bool{}, cooldown: map[string]time.Time{},
		ready: make(chan struct{}, 1)}
	if err := m.client.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("cluster: reaching Redis at %s: %w", m.where, err)
	}
	score, err := m.client.ZScore(ctx, m.keys.instances(), m.id).Result()
	if err != nil && !errors.Is(err, goredis.Nil) {
		return nil, fmt.Errorf("cluster: Redis at %s: %w", m.where, err)
	}
	if err == nil && time.UnixMilli(int64(score)).After(time.Now()) {
		m.log.Warn("cluster: an instance with this instance id registered less than a lease TTL ago: if it is still running, give each instance its own instance_id (the earlier one may also be this instance before a restart)",
			"instance", m.id)
	}
	if err := m.heartbeat(ctx); err != nil {
		return nil, fmt.Errorf("cluster: registering instance %s in Redis at %s: %w", m.id, m.where, err)
	}
	m.log.Info("cluster: joined", "instance", m.id, "redis", m.where, "lease_ttl", m.ttl.String(),
		"instances", strings.Join(m.Instances(), ","))
	return m, nil
}

// ID returns this instance's id.
func (m *Member) ID() string { return m.id }

// TTL returns the lease TTL.
func (m *Member) TTL() time.Duration { return m.ttl }

// Want sets the pipelines to share: the ids of the connector files' pipelines, the same on every
// instance.
func (m *Member) Want(ids []string) {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	m.mu.Lock()
	m.wanted = slices.Compact(ids)
	m.mu.Unlock()
}

// Ready is signalled when events are waiting; Take them.
func (m *Member) Ready() <-chan struct{} { return m.ready }

// Take returns the events reported since the last call, oldest first.
func (m *Member) Take() []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	q := m.queue
	m.queue = nil
	return q
}

func (m *Member) emit(e Event) {
	m.mu.Lock()
	m.queue = append(m.queue, e)
	m.mu.Unlock()
	select {
	case m.ready <- struct{}{}:
	default:
	}
}

// Holders returns who held each wanted pipeline's lease when this instance last looked (leases this
// instance holds are always its own).
func (m *Member) Holders() map[string]Holder {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Holder, len(m.holders))
	for id, h := range m.holders {
		out[id] = h
	}
	for id, l := range m.held {
		if l.Err() == nil {
			out[id] = Holder{Instance: m.id, Owner: m.owner, Token: l.token, Since: l.since}
		}
	}
	return out
}

// Instances returns the ids of the live instances, as last seen, sorted.
func (m *Member) Instances() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.live)
}

// Run renews this instance's leases and registration every TTL/4, and looks for leases to take or give
// up every Poll, until ctx is done. Leases it takes are reported as Acquired events.
func (m *Member) Run(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(m.renewEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			m.renewAll(ctx)
		}
	}()
	t := time.NewTicker(m.poll)
	defer t.Stop()
	for {
		m.look(ctx)
		select {
		case <-ctx.Done():
			<-done
			return
		case <-t.C:
		}
	}
}

// heartbeat renews this instance's registration and reads the live instances.
func (m *Member) heartbeat(ctx context.Context) error {
	live, err := heartbeatScript.Run(ctx, m.client, []string{m.keys.instances()}, m.id, m.ttl.Milliseconds()).StringSlice()
	if err != nil {
		return err
	}
	slices.Sort(live)
	m.mu.Lock()
	m.live = live
	m.mu.Unlock()
	return nil
}

// heartbeatScript registers an instance until now + TTL and drops expired ones. KEYS: instances. ARGV:
// instance id, TTL (ms). Returns the live instance ids.
var heartbeatScript = goredis.NewScript(nowMS + `
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
`)

// renewAll renews every held lease, then the registration, within one renewal period. A lease found
// taken or expired is lost at once; one that cannot be renewed is lost by its timer when renewals have
// failed for too long.
func (m *Member) renewAll(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, m.renewEvery)
	defer cancel()
	m.mu.Lock()
	leases := make([]*Lease, 0, len(m.held))
	for _, l := range m.held {
		leases = append(leases, l)
	}
	m.mu.Unlock()
	var failed error
	for _, l := range leases {
		if l.Err() != nil {
			continue
		}
		sent := time.Now()
		ok, err := renewScript.Run(rctx, m.client, []string{m.keys.lease(l.pipeline), m.keys.info(l.pipeline)},
			m.owner, l.token, m.ttl.Milliseconds()).Int()
		switch {
		case err != nil:
			failed = err
		case ok == 1:
			l.renewedAt(sent)
		default:
			l.lose(fmt.Errorf("%w: the lease on pipeline %s expired in Redis or another instance holds it now", pipeline.ErrLeaseLost, l.pipeline))
		}
	}
	if err := m.heartbeat(rctx); err != nil && failed == nil {
		failed = err
	}
	m.mu.Lock()
	if failed != nil {
		m.failing++
	} else {
		m.failing = 0
	}
	n := m.failing
	m.mu.Unlock()
	if failed != nil && (n == 1 || n%10 == 0) && ctx.Err() == nil {
		m.log.Warn("cluster: renewing leases failed; a lease not renewed for 3/4 of its TTL is given up and its pipeline stopped",
			"redis", m.where, "err", failed, "attempts", n, "leases", len(leases))
	}
}

// lost reports a lost lease.
func (m *Member) lost(l *Lease, err error) {
	m.log.Error("cluster: lease lost; stopping the pipeline at once", "pipeline", l.pipeline, "token", l.token, "err", err)
	m.emit(Event{Kind: Lost, Lease: l, Err: err})
}

// look reads who holds the wanted pipelines, takes free ones up to this instance's share, and asks for
// one to be given up when the instances' counts differ by two or more.
func (m *Member) look(ctx context.Context) {
	m.mu.Lock()
	wanted := slices.Clone(m.wanted)
	m.mu.Unlock()
	holders, err := m.readHolders(ctx, wanted)
	if err != nil {
		if ctx.Err() == nil {
			m.mu.Lock()
			repeat := m.lastError == err.Error()
			m.lastError = err.Error()
			m.mu.Unlock()
			if !repeat {
				m.log.Warn("cluster: reading the leases failed; trying again", "redis", m.where, "err", err)
			}
		}
		return
	}
	m.mu.Lock()
	m.holders, m.lastError = holders, ""
	if m.leaving {
		m.mu.Unlock()
		return
	}
	live := slices.Clone(m.live)
	if !slices.Contains(live, m.id) {
		live = append(live, m.id)
	}
	counts := make(map[string]int, len(live))
	for _, id := range live {
		counts[id] = 0
	}
	for id, h := range holders {
		if _, ok := counts[h.Instance]; ok && h.Instance != m.id && slices.Contains(wanted, id) {
			counts[h.Instance]++
		}
	}
	counts[m.id] = len(m.held)
	share := int(math.Ceil(float64(len(wanted)) / float64(len(live))))
	limit := share
	for id, n := range counts {
		if id != m.id {
			limit = min(limit, n+1)
		}
	}
	mine := counts[m.id]
	var free []string
	now := time.Now()
	for _, id := range wanted {
		if _, held := m.held[id]; !held && holders[id].Instance == "" && now.After(m.cooldown[id]) {
			free = append(free, id)
		}
	}
	m.mu.Unlock()

	if mine < limit && len(free) > 0 {
		m.sortByPreference(free)
		for _, id := range free {
			if mine >= limit || ctx.Err() != nil {
				break
			}
			if m.acquire(ctx, id) {
				mine++
			}
		}
		m.mu.Lock()
		m.settle = max(m.settle, 2)
		m.mu.Unlock()
		return
	}
	m.rebalance(counts)
}

// rebalance asks for one pipeline to be given up when this instance holds the most (the smallest id
// among those that do) and two more than the instance holding the fewest.
func (m *Member) rebalance(counts map[string]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.settle > 0 {
		m.settle--
		return
	}
	if len(m.giving) > 0 {
		return
	}
	most, fewest := -1, math.MaxInt
	top := ""
	for id, n := range counts {
		fewest = min(fewest, n)
		if n > most || n == most && id < top {
			most, top = n, id
		}
	}
	if top != m.id || most-fewest < 2 {
		return
	}
	var ids []string
	for id, l := range m.held {
		if l.Err() == nil {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return
	}
	m.sortByPreference(ids)
	id := ids[len(ids)-1] // the one this instance cares least for
	m.giving[id] = true
	m.settle = 3
	m.log.Info("cluster: giving a pipeline up to an instance with fewer", "pipeline", id, "held", most, "fewest", fewest)
	l := m.held[id]
	m.queue = append(m.queue, Event{Kind: Rebalance, Lease: l})
	select {
	case m.ready <- struct{}{}:
	default:
	}
}

// sortByPreference orders ids by how much this instance prefers them, most first: by a hash of the
// instance and pipeline ids, so that each instance prefers different pipelines.
func (m *Member) sortByPreference(ids []string) {
	score := func(id string) uint64 {
		h := fnv.New64a()
		h.Write([]byte(m.id))
		h.Write([]byte{0})
		h.Write([]byte(id))
		return h.Sum64()
	}
	slices.SortFunc(ids, func(a, b string) int {
		sa, sb := score(a), score(b)
		switch {
		case sa > sb:
			return -1
		case sa < sb:
			return 1
		}
		return strings.Compare(a, b)
	})
}

// readHolders returns who holds each of ids' leases.
func (m *Member) readHolders(ctx context.Context, ids []string) (map[string]Holder, error) {
	out := make(map[string]Holder, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rctx, cancel := context.WithTimeout(ctx, max(m.poll, time.Second))
	defer cancel()
	pipe := m.client.Pipeline()
	leases := make([]*goredis.StringCmd, len(ids))
	infos := make([]*goredis.SliceCmd, len(ids))
	for i, id := range ids {
		leases[i] = pipe.Get(rctx, m.keys.lease(id))
		infos[i] = pipe.HMGet(rctx, m.keys.info(id), "holder", "since")
	}
	if _, err := pipe.Exec(rctx); err != nil && !errors.Is(err, goredis.Nil) {
		return nil, err
	}
	for i, id := range ids {
		v, err := leases[i].Result()
		if errors.Is(err, goredis.Nil) {
			out[id] = Holder{}
			continue
		}
		if err != nil {
			return nil, err
		}
		tok, owner, _ := strings.Cut(v, " ")
		h := Holder{Owner: owner}
		h.Instance, _, _ = strings.Cut(owner, "#")
		h.Token, _ = strconv.ParseInt(tok, 10, 64)
		if f, err := infos[i].Result(); err == nil && len(f) == 2 {
			if holder, _ := f[0].(string); holder != "" {
				h.Instance = holder
			}
			if s, _ := f[1].(string); s != "" {
				if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
					h.Since = time.UnixMilli(ms)
				}
			}
		}
		out[id] = h
	}
	return out, nil
}

// acquire tries to take pipeline id's lease, and reports whether this instance holds it now.
func (m *Member) acquire(ctx context.Context, id string) bool {
	sent := time.Now()
	rctx, cancel := context.WithTimeout(ctx, m.renewEvery)
	defer cancel()
	r, err := acquireScript.Run(rctx, m.client, []string{m.keys.lease(id), m.keys.info(id)}, m.owner, m.ttl.Milliseconds(), m.id).Slice()
	if err != nil || len(r) != 6 {
		if ctx.Err() == nil {
			m.log.Warn("cluster: taking a lease failed; trying again", "pipeline", id, "redis", m.where, "err", err)
		}
		return false
	}
	status, _ := r[0].(int64)
	str := func(i int) string { s, _ := r[i].(string); return s }
	num := func(i int) int64 { n, _ := strconv.ParseInt(str(i), 10, 64); return n }
	if status == 0 {
		return false
	}
	l := newLease(m, id, num(1), time.UnixMilli(num(2)), sent)
	e := Event{Kind: Acquired, Lease: l}
	if prev := str(3); prev != "" && prev != m.owner {
		e.Previous, _, _ = strings.Cut(prev, "#")
		if str(5) != "1" {
			e.TakenOver = true
			if renewed := num(4); renewed > 0 {
				e.Unrenewed = max(time.UnixMilli(num(2)).Sub(time.UnixMilli(renewed)), 0)
			}
		}
	}
	m.mu.Lock()
	if m.leaving {
		m.mu.Unlock()
		m.releaseInRedis(l) // Close began meanwhile
		return false
	}
	m.held[id] = l
	m.mu.Unlock()
	args := []any{"pipeline", id, "token", l.token}
	if e.TakenOver {
		args = append(args, "from", e.Previous, "unrenewed_for", e.Unrenewed.Round(time.Millisecond).String())
		m.log.Warn("cluster: took over a pipeline whose holder stopped renewing its lease", args...)
	} else {
		if e.Previous != "" {
			args = append(args, "released_by", e.Previous)
		}
		m.log.Info("cluster: acquired a lease", args...)
	}
	m.emit(e)
	return true
}

// Release gives l up: it is deleted in Redis if this instance still holds it there, so that another
// instance may take its pipeline at once. Call it once l's pipeline has stopped. A pipeline given up to
// rebalance is not taken again here for a lease TTL.
func (m *Member) Release(l *Lease) {
	held := l.release()
	m.mu.Lock()
	if m.held[l.pipeline] == l {
		delete(m.held, l.pipeline)
	}
	if m.giving[l.pipeline] {
		delete(m.giving, l.pipeline)
		m.cooldown[l.pipeline] = time.Now().Add(2 * m.ttl)
	}
	m.mu.Unlock()
	if held || l.Err() != nil {
		// A lost lease may still be this instance's in Redis (renewals were only slow): give it up too.
		m.releaseInRedis(l)
	}
}

func (m *Member) releaseInRedis(l *Lease) {
	ctx, cancel := context.WithTimeout(context.Background(), max(m.renewEvery, time.Second))
	defer cancel()
	n, err := releaseScript.Run(ctx, m.client, []string{m.keys.lease(l.pipeline), m.keys.info(l.pipeline)}, m.owner, l.token).Int()
	switch {
	case err != nil:
		m.log.Warn("cluster: releasing a lease failed; it expires after its TTL", "pipeline", l.pipeline, "redis", m.where, "err", err)
	case n == 1:
		m.log.Info("cluster: released a lease", "pipeline", l.pipeline, "token", l.token)
	}
}

// Leave stops taking leases (sluice is stopping); leases held are renewed until they are released.
func (m *Member) Leave() {
	m.mu.Lock()
	m.leaving = true
	m.mu.Unlock()
}

// Close stops taking leases and removes this instance's registration. Leases still held are not
// released — release those whose pipelines have stopped first: the others expire after the TTL, by when
// the process has ended. Call it after Run has returned.
func (m *Member) Close(ctx context.Context) {
	m.Leave()
	if err := m.client.ZRem(ctx, m.keys.instances(), m.id).Err(); err != nil {
		m.log.Warn("cluster: removing this instance's registration failed; it expires after the lease TTL", "redis", m.where, "err", err)
	}
}

// Held returns the leases this instance holds (lost ones included until they are released).
func (m *Member) Held() []*Lease {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Lease, 0, len(m.held))
	for _, l := range m.held {
		out = append(out, l)
	}
	return out
}
