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

	mu     sync.Mutex
	latest record.Position
	dirty  bool
	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

func newPersister(store Store, pipeline, key string, log *slog.Logger) *persister {
	p := &persister{store: store, pipeline: pipeline, key: key, log: log,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	return p
}

// set records pos as the latest acked position. It never blocks on the store.
func (p *persister) set(pos record.Position) {
	p.mu.Lock()
	p.latest, p.dirty = pos.Clone(), true
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
	pos, dirty := p.latest, p.dirty
	p.dirty = false
	p.mu.Unlock()
	if !dirty {
		return
	}
	if err := p.store.Put(p.pipeline, p.key, pos); err != nil {
		if errors.Is(err, ErrLeaseLost) {
			// Another host holds the pipeline now and resumes from what it stored under its own lease.
			p.log.Warn("position not stored: the pipeline's lease was lost", "err", err)
			return
		}
		// Nothing is lost: the position stays behind and records after it are delivered again.
		p.log.Error("storing position failed; records after the last stored position will be delivered again", "err", err)
		p.mu.Lock()
		if !p.dirty {
			p.latest, p.dirty = pos, true
		}
		p.mu.Unlock()
	}
}

// close writes the latest position and stops the persister. Safe to call more than once.
func (p *persister) close() {
	p.once.Do(func() { close(p.stop) })
	<-p.done
}
