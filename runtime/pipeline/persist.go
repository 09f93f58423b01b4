package pipeline

import (
	"errors"
	"log/slog"
	"sync"

	"github.com/sluicehq/sluice/sdk/record"
)

// persister writes acked positions to the state store in the background, always the latest one: a slow
// disk coalesces many acks into one write instead of slowing the pipeline. What it has not yet written when
// the host dies is delivered again after the restart (at-least-once); close writes the last position.
type persister struct {
	store         Store
	pipeline, key string
	log           *slog.Logger

	// stored, when set, is called after a position was stored, with the records sent through it.
	stored func(through int64)

	mu      sync.Mutex
	latest  record.Position
	through int64
	dirty   bool
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

func newPersister(store Store, pipeline, key string, log *slog.Logger) *persister {
	p := &persister{store: store, pipeline: pipeline, key: key, log: log,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	return p
}

// set records pos, through which through records were sent, as the latest acked position. It never blocks
// on the store.
func (p *persister) set(pos record.Position, through int64) {
	p.mu.Lock()
	p.latest, p.through, p.dirty = pos.Clone(), through, true
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *persister) loop() {
	defer close(p.done)
	for {
		select {
		case <-p.wake:
			p.write()
		case <-p.stop:
			p.write()
			return
		}
	}
}

func (p *persister) write() {
	p.mu.Lock()
	pos, through, dirty := p.latest, p.through, p.dirty
	p.dirty = false
	p.mu.Unlock()
	if !dirty {
		return
	}
	err := p.store.Put(p.pipeline, p.key, pos)
	if err == nil && p.stored != nil {
		p.stored(through)
	}
	if err != nil {
		if errors.Is(err, ErrLeaseLost) {
			// Another host holds the pipeline now and resumes from what it stored under its own lease.
			p.log.Warn("position not stored: the pipeline's lease was lost", "err", err)
			return
		}
		// Nothing is lost: the position stays behind and records after it are delivered again.
		p.log.Error("storing position failed; records after the last stored position will be delivered again", "err", err)
		p.mu.Lock()
		if !p.dirty {
			p.latest, p.through, p.dirty = pos, through, true
		}
		p.mu.Unlock()
	}
}

// close writes the latest position and stops the persister. Safe to call more than once.
func (p *persister) close() {
	p.once.Do(func() { close(p.stop) })
	<-p.done
}

// inflight keeps a segment's in-flight count in an InFlightStore: the records sent to a sink that keeps no
// positions itself beyond the position stored for it. It is written before each send and after each store,
// so a host killed at any moment leaves behind how many records the next process will send again.
type inflight struct {
	store           InFlightStore
	pipeline, stage string
	log             *slog.Logger

	mu           sync.Mutex
	sent, stored int64 // records sent in this attempt, and how many of them the stored position covers
	warned       bool
}

// newInflight starts the count of a new attempt at 0.
func newInflight(store InFlightStore, pipeline, stage string, log *slog.Logger) *inflight {
	c := &inflight{store: store, pipeline: pipeline, stage: stage, log: log}
	c.write()
	return c
}

// sending counts n records about to be sent; it returns once the count is written.
func (c *inflight) sending(n int) {
	c.mu.Lock()
	c.sent += int64(n)
	c.write()
	c.mu.Unlock()
}

// storedThrough notes that the stored position covers the first through records sent.
func (c *inflight) storedThrough(through int64) {
	c.mu.Lock()
	c.stored = max(c.stored, through)
	c.write()
	c.mu.Unlock()
}

// reset sets the count to 0: the records still in flight were counted as redelivered already.
func (c *inflight) reset() {
	c.mu.Lock()
	c.stored = c.sent
	c.write()
	c.mu.Unlock()
}

// write stores the count; callers hold c.mu (or own c). A failure is logged once: it costs only the
// accuracy of the redelivered count after a crash, never a record.
func (c *inflight) write() {
	if err := c.store.StoreInFlight(c.pipeline, c.stage, c.sent-c.stored); err != nil && !c.warned {
		c.warned = true
		c.log.Warn("could not store the in-flight count; records delivered again after a crash of sluice will not be counted", "err", err)
	}
}
