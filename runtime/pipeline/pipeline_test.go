package pipeline

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
)

// The stages below are deliberately small and live in the test: they exercise the pipeline over the real
// protocol (in-memory gRPC) without depending on the built-in plugins.

func pos(n uint64) record.Position { return binary.BigEndian.AppendUint64(nil, n) }
func seqOf(p record.Position) uint64 {
	if len(p) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

// countSource emits records 0..n-1 (n < 0: forever) with position = seq.
type countSource struct {
	sdk.UnimplementedSource
	n      int64
	next   uint64
	opened chan record.Position // receives the After of each Open
	failAt *atomic.Int64        // Read fails once when next reaches it (nil or 0: never)
}

func (s *countSource) Open(_ context.Context, req sdk.OpenRequest) error {
	if s.opened != nil {
		s.opened <- req.After.Clone()
	}
	if req.After != nil {
		s.next = seqOf(req.After) + 1
	}
	return nil
}

func (s *countSource) Read(ctx context.Context) ([]record.Record, error) {
	if s.n >= 0 && s.next >= uint64(s.n) {
		return nil, sdk.ErrDone
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.failAt != nil && s.failAt.Load() > 0 && s.next >= uint64(s.failAt.Load()) {
		s.failAt.Store(0)
		return nil, errors.New("source lost its connection")
	}
	var recs []record.Record
	for len(recs) < 100 && (s.n < 0 || s.next < uint64(s.n)) {
		recs = append(recs, record.Record{Position: pos(s.next), Op: record.OpInsert, Key: []byte(fmt.Sprint(s.next)),
			Payload: fmt.Appendf(nil, `{"seq":%d}`, s.next), Encoding: record.EncodingJSON})
		s.next++
	}
	if s.n < 0 {
		time.Sleep(time.Millisecond) // an endless source should not spin the test
	}
	return recs, nil
}

// world is the shared state of the fake external systems, surviving plugin restarts.
type world struct {
	mu      sync.Mutex
	written []uint64        // seqs the sink wrote, in order
	stored  record.Position // the atomic sink's stored position
	failAt  int             // the sink fails once when it has written this many records (0: never)
	openErr error           // Open fails with it (nil: never)
	atomic  bool            // a failed write leaves nothing behind (a transaction), else what was written stays
}

func (w *world) seqs() []uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]uint64(nil), w.written...)
}

type worldSink struct {
	sdk.UnimplementedSink
	w *world
}

func (s *worldSink) Open(context.Context, sdk.OpenRequest) error {
	return s.w.openErr
}

func (s *worldSink) Checkpoint(context.Context) (record.Position, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return s.w.stored.Clone(), nil
}

func (s *worldSink) Write(_ context.Context, b record.Batch) error {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	before := len(s.w.written)
	for _, r := range b.Records {
		if s.w.failAt > 0 && len(s.w.written) == s.w.failAt {
			s.w.failAt = 0
			// A crash mid-write: a non-atomic sink keeps what it wrote, an atomic one rolls back.
			if s.w.atomic {
				s.w.written = s.w.written[:before]
			}
			return errors.New("sink crashed")
		}
		var seq uint64
		if _, err := fmt.Sscanf(string(r.Payload), `{"seq":%d}`, &seq); err != nil {
			return err
		}
		s.w.written = append(s.w.written, seq)
	}
	s.w.stored = b.Position.Clone()
	return nil
}

// memBuffer is a minimal atomic buffer whose contents live in the world.
type bufWorld struct {
	mu      sync.Mutex
	entries []record.Record
	ckpt    record.Position
}

type memBuffer struct {
	sdk.UnimplementedBuffer
	w    *bufWorld
	next int // index of the next entry to read
}

func (b *memBuffer) Open(_ context.Context, req sdk.OpenRequest) error {
	if req.After != nil {
		b.next = int(seqOf(req.After)) + 1
	}
	return nil
}

func (b *memBuffer) Checkpoint(context.Context) (record.Position, error) {
	b.w.mu.Lock()
	defer b.w.mu.Unlock()
	return b.w.ckpt.Clone(), nil
}

func (b *memBuffer) Append(_ context.Context, batch record.Batch) error {
	b.w.mu.Lock()
	defer b.w.mu.Unlock()
	for _, r := range batch.Records {
		r.Position = pos(uint64(len(b.w.entries)))
		r.Payload = append([]byte(nil), r.Payload...)
		r.Key = append([]byte(nil), r.Key...)
		b.w.entries = append(b.w.entries, r)
	}
	b.w.ckpt = batch.Position.Clone()
	return nil
}

func (b *memBuffer) Read(ctx context.Context) ([]record.Record, error) {
	deadline := time.Now().Add(50 * time.Millisecond)
	for {
		b.w.mu.Lock()
		recs := append([]record.Record(nil), b.w.entries[min(b.next, len(b.w.entries)):]...)
		b.w.mu.Unlock()
		if len(recs) > 0 || time.Now().After(deadline) {
			b.next += len(recs)
			return recs, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func (b *memBuffer) Ack(context.Context, record.Position) error { return nil }

type fakeStarter struct {
	plugins map[string]func() sdk.Plugin
}

func (f *fakeStarter) Start(_ context.Context, name string, _ sdk.Kind, _ bool, _ *slog.Logger) (*protocol.Conn, error) {
	return protocol.Local(f.plugins[name]())
}

type memStore struct {
	mu sync.Mutex
	m  map[string]record.Position
}

func (s *memStore) Get(p, st string) (record.Position, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[p+"/"+st].Clone(), nil
}

func (s *memStore) Put(p, st string, pos record.Position) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]record.Position{}
	}
	s.m[p+"/"+st] = pos.Clone()
	return nil
}

func spec(name string, atomic bool) sdk.Spec {
	return sdk.Spec{Name: name, Version: "0", Summary: "test",
		Source: &sdk.Stage{Summary: "s"},
		Buffer: &sdk.Stage{Summary: "b", Capabilities: sdk.Capabilities{AtomicPosition: true}},
		Sink:   &sdk.Stage{Summary: "k", Capabilities: sdk.Capabilities{AtomicPosition: atomic}}}
}

type fixture struct {
	w      *world
	bw     *bufWorld
	store  *memStore
	src    func() *countSource
	opened chan record.Position
}

func newFixture(n int64) *fixture {
	f := &fixture{w: &world{}, bw: &bufWorld{}, store: &memStore{}, opened: make(chan record.Position, 100)}
	f.src = func() *countSource { return &countSource{n: n, opened: f.opened} }
	return f
}

func (f *fixture) starter(atomic bool) *fakeStarter {
	p := func() sdk.Plugin {
		return sdk.Plugin{Spec: spec("t", atomic),
			NewSource: func() sdk.Source { return f.src() },
			NewBuffer: func() sdk.Buffer { return &memBuffer{w: f.bw} },
			NewSink:   func() sdk.Sink { return &worldSink{w: f.w} }}
	}
	return &fakeStarter{plugins: map[string]func() sdk.Plugin{"t": p}}
}

func config(atomic, buffered bool) Config {
	c := Config{ID: "p", Source: Stage{Plugin: "t"}, Sink: Stage{Plugin: "t", Atomic: atomic}, BatchMaxRecords: 64}
	if buffered {
		c.Buffer = &Stage{Plugin: "t", Atomic: true}
	}
	return c
}

func newPipeline(f *fixture, cfg Config) *Pipeline {
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 10 * time.Millisecond}
	return New(cfg, f.starter(cfg.Sink.Atomic), f.store, slog.New(slog.DiscardHandler))
}

func run(t *testing.T, p *Pipeline) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// checkAll checks that seqs holds every seq in [0,n), and, when exact, each once and in order.
func checkAll(t *testing.T, seqs []uint64, n int, exact bool) (dups int) {
	t.Helper()
	seen := make([]int, n)
	for _, s := range seqs {
		if s >= uint64(n) {
			t.Fatalf("unexpected seq %d", s)
		}
		seen[s]++
	}
	for s, c := range seen {
		if c == 0 {
			t.Fatalf("seq %d lost (%d records written)", s, len(seqs))
		}
		dups += c - 1
	}
	if exact {
		if dups != 0 {
			t.Fatalf("%d duplicates with an exactly-once sink", dups)
		}
		for i, s := range seqs {
			if s != uint64(i) {
				t.Fatalf("record %d is seq %d: order not kept", i, s)
			}
		}
	}
	return dups
}

func TestRunDelivers(t *testing.T) {
	for _, tt := range []struct {
		name             string
		atomic, buffered bool
	}{
		{"at-least-once sink", false, false},
		{"atomic sink", true, false},
		{"buffer and at-least-once sink", false, true},
		{"buffer and atomic sink", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(5000)
			p := newPipeline(f, config(tt.atomic, tt.buffered))
			run(t, p)
			checkAll(t, f.w.seqs(), 5000, true)
			if got := p.Stats.Delivered.Load(); got != 5000 {
				t.Errorf("Delivered = %d, want 5000", got)
			}
			stateKey := "p/source"
			if tt.buffered {
				stateKey = "p/buffer"
			}
			stored := f.store.m[stateKey]
			switch {
			case tt.atomic && stored != nil:
				t.Errorf("state store used (%x) although the sink stores positions", stored)
			case !tt.atomic && stored == nil:
				t.Errorf("state store has no position for %s", stateKey)
			case !tt.atomic && !tt.buffered && seqOf(stored) != 4999:
				t.Errorf("stored source position %d, want 4999", seqOf(stored))
			}
		})
	}
}

func TestRunResumesAfterStoredPosition(t *testing.T) {
	for _, atomic := range []bool{false, true} {
		t.Run(fmt.Sprint("atomic=", atomic), func(t *testing.T) {
			f := newFixture(1000)
			if atomic {
				f.w.stored = pos(499)
			} else {
				if err := f.store.Put("p", "source", pos(499)); err != nil {
					t.Fatal(err)
				}
			}
			run(t, newPipeline(f, config(atomic, false)))
			if after := <-f.opened; seqOf(after) != 499 {
				t.Fatalf("source opened after %x, want 499", after)
			}
			seqs := f.w.seqs()
			if len(seqs) != 500 || seqs[0] != 500 {
				t.Fatalf("wrote %d records starting at %v, want 500 from 500", len(seqs), seqs[:1])
			}
		})
	}
}

func TestRunRestartsAfterSinkFailure(t *testing.T) {
	for _, tt := range []struct {
		name             string
		atomic, buffered bool
	}{
		{"at-least-once", false, false},
		{"exactly-once", true, false},
		{"exactly-once through buffer", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(3000)
			f.w.failAt, f.w.atomic = 1234, tt.atomic
			p := newPipeline(f, config(tt.atomic, tt.buffered))
			run(t, p)
			dups := checkAll(t, f.w.seqs(), 3000, tt.atomic)
			if p.Stats.Restarts.Load() != 1 {
				t.Errorf("Restarts = %d, want 1", p.Stats.Restarts.Load())
			}
			if !tt.atomic && int64(dups) > p.Stats.Redelivered.Load() {
				t.Errorf("%d duplicates but only %d reported as redelivered", dups, p.Stats.Redelivered.Load())
			}
		})
	}
}

// TestRunRestartsAfterSourceFailure: a source that fails (without its process dying) restarts the
// pipeline, which resumes after what was delivered.
func TestRunRestartsAfterSourceFailure(t *testing.T) {
	for _, buffered := range []bool{false, true} {
		t.Run(fmt.Sprint("buffered=", buffered), func(t *testing.T) {
			f := newFixture(3000)
			var failAt atomic.Int64
			failAt.Store(1500)
			f.src = func() *countSource { return &countSource{n: 3000, opened: f.opened, failAt: &failAt} }
			p := newPipeline(f, config(true, buffered))
			run(t, p)
			checkAll(t, f.w.seqs(), 3000, true)
			if p.Stats.Restarts.Load() != 1 {
				t.Errorf("Restarts = %d, want 1", p.Stats.Restarts.Load())
			}
		})
	}
}

func TestRunStopsOnBadSettings(t *testing.T) {
	f := newFixture(10)
	f.w.openErr = fmt.Errorf("%w: path: bad", sdk.ErrInvalidSettings)
	p := newPipeline(f, config(false, false))
	err := p.Run(context.Background())
	if !errors.Is(err, sdk.ErrInvalidSettings) || !strings.Contains(err.Error(), "path: bad") {
		t.Fatalf("Run = %v, want the sink's invalid-settings error", err)
	}
	if p.Stats.Restarts.Load() != 0 {
		t.Fatalf("restarted %d times on bad settings", p.Stats.Restarts.Load())
	}
}

func TestDrainStoresLastDelivered(t *testing.T) {
	f := newFixture(-1)
	p := newPipeline(f, config(false, false))
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(f.w.seqs()) < 2000 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	p.Drain()
	select {
	case err := <-done:
		if !errors.Is(err, ErrStopped) {
			t.Fatalf("Run after Drain = %v, want ErrStopped", err)
		}
		if p.State() != Stopped {
			t.Fatalf("state %v after Drain, want stopped", p.State())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not stop the pipeline")
	}
	seqs := f.w.seqs()
	checkAll(t, seqs, len(seqs), true)
	if got := seqOf(f.store.m["p/source"]); got != uint64(len(seqs)-1) {
		t.Fatalf("stored position %d after drain, want the last delivered %d", got, len(seqs)-1)
	}
}

func TestHardStopReturnsStopped(t *testing.T) {
	f := newFixture(-1)
	p := newPipeline(f, config(false, false))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	if err := p.Run(ctx); !errors.Is(err, ErrStopped) {
		t.Fatalf("Run = %v, want ErrStopped", err)
	}
	checkAll(t, f.w.seqs(), len(f.w.seqs()), true)
}

func TestGuarantee(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want Guarantee
	}{
		{config(true, false), ExactlyOnce},
		{config(false, false), AtLeastOnce},
		{config(true, true), ExactlyOnce},
		{Config{Sink: Stage{Atomic: true}, Buffer: &Stage{Atomic: false}}, AtLeastOnce},
	} {
		if got := GuaranteeOf(&tt.cfg); got != tt.want {
			t.Errorf("GuaranteeOf(%+v) = %s, want %s", tt.cfg, got, tt.want)
		}
	}
}

// blockingSink accepts nothing until released: the host must stop reading the source, not buffer it.
type blockingSink struct {
	sdk.UnimplementedSink
	release chan struct{}
}

func (s *blockingSink) Open(context.Context, sdk.OpenRequest) error { return nil }
func (s *blockingSink) Write(ctx context.Context, _ record.Batch) error {
	select {
	case <-s.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// countingSource is an endless source that counts what it emitted.
type countingSource struct {
	sdk.UnimplementedSource
	emitted *atomic.Int64
	next    uint64
}

func (s *countingSource) Open(context.Context, sdk.OpenRequest) error { return nil }
func (s *countingSource) Read(ctx context.Context) ([]record.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	recs := make([]record.Record, 256)
	payload := make([]byte, 200)
	for i := range recs {
		recs[i] = record.Record{Position: pos(s.next), Payload: payload}
		s.next++
	}
	s.emitted.Add(int64(len(recs)))
	return recs, nil
}

// TestBackpressureBoundsMemory: with a sink that accepts nothing, the source is read only as far as the
// in-flight bound plus the transport's buffers allow, not without limit.
func TestBackpressureBoundsMemory(t *testing.T) {
	var emitted atomic.Int64
	release := make(chan struct{})
	starter := &fakeStarter{plugins: map[string]func() sdk.Plugin{"t": func() sdk.Plugin {
		return sdk.Plugin{Spec: spec("t", false),
			NewSource: func() sdk.Source { return &countingSource{emitted: &emitted} },
			NewBuffer: func() sdk.Buffer { return &memBuffer{w: &bufWorld{}} },
			NewSink:   func() sdk.Sink { return &blockingSink{release: release} }}
	}}}
	cfg := config(false, false)
	cfg.MaxInFlightBytes = 1 << 20
	p := New(cfg, starter, &memStore{}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	// Let the pipeline fill every buffer it has: wait until the count has not moved for a whole second
	// (a loaded machine can take seconds to get there), then check the source stopped being read.
	var last int64
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		time.Sleep(time.Second)
		if n := emitted.Load(); n == last && n > 0 {
			break
		} else {
			last = n
		}
	}
	// ~230 B per record: 1 MiB in flight, up to 8 MiB in each gRPC stream window, SDK queues of 16
	// batches: well under 200k records. Without a bound the source would run on for millions.
	if n := emitted.Load(); n > 200_000 {
		t.Fatalf("source emitted %d records while the sink accepted none", n)
	}
	t.Logf("source emitted %d records (%d MiB) before backpressure stopped it", last, last*230>>20)
	time.Sleep(time.Second)
	if n := emitted.Load(); n != last {
		t.Fatalf("source still being read while the sink is blocked: %d then %d records", last, n)
	}
	cancel()
	close(release)
	<-done
}

// idleSource emits records 0..n-1, then nothing; failOnce, when set, makes it fail once it has been idle a
// moment (after everything it emitted was delivered).
type idleSource struct {
	countSource
	failOnce *atomic.Bool
}

func (s *idleSource) Read(ctx context.Context) ([]record.Record, error) {
	if s.next < uint64(s.n) {
		return s.countSource.Read(ctx)
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(100 * time.Millisecond):
	}
	if s.failOnce.CompareAndSwap(true, false) {
		return nil, errors.New("source lost its connection")
	}
	return nil, nil
}

// A pipeline restarted after a failure, with nothing left to deliver, that is drained stops cleanly: the
// attempt that drained ran healthy, so the pipeline is not "failing".
func TestDrainAfterIdleRestartStops(t *testing.T) {
	f := newFixture(500)
	var fail atomic.Bool
	fail.Store(true)
	st := f.starter(true)
	st.plugins["t"] = func() sdk.Plugin {
		return sdk.Plugin{Spec: spec("t", true),
			NewSource: func() sdk.Source { return &idleSource{countSource: countSource{n: 500}, failOnce: &fail} },
			NewBuffer: func() sdk.Buffer { return &memBuffer{w: f.bw} },
			NewSink:   func() sdk.Sink { return &worldSink{w: f.w} }}
	}
	cfg := config(true, false)
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 10 * time.Millisecond}
	p := New(cfg, st, f.store, slog.New(slog.DiscardHandler))
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	deadline := time.Now().Add(10 * time.Second)
	for (p.Stats.Restarts.Load() == 0 || p.State() != Running) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	p.Drain()
	select {
	case err := <-done:
		if !errors.Is(err, ErrStopped) || p.State() != Stopped {
			t.Fatalf("Run after Drain = %v (state %v), want ErrStopped", err, p.State())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not stop the pipeline")
	}
	checkAll(t, f.w.seqs(), 500, true)
}
