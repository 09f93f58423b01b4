package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
)

// testLease is a Lease whose validity a test sets.
type testLease struct {
	token int64
	mu    sync.Mutex
	err   error
}

func (l *testLease) Token() int64 { return l.token }
func (l *testLease) Valid() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}
func (l *testLease) lose(why string) {
	l.mu.Lock()
	l.err = fmt.Errorf("%w: %s", ErrLeaseLost, why)
	l.mu.Unlock()
}

// TestLeaseTokenReachesStages: every stage of a pipeline run under a lease is opened with its fencing
// token.
func TestLeaseTokenReachesStages(t *testing.T) {
	f := newFixture(300)
	fences := make(chan int64, 10)
	var attempts atomic.Int64
	cfg := config(true, true)
	cfg.Lease = &testLease{token: 1764504000123}
	p, _ := hookPipeline(f, cfg, func() *hookSink {
		return &hookSink{worldSink: worldSink{w: f.w}, attempts: &attempts}
	})
	starter := p.starter.(*fakeStarter)
	base := starter.plugins["t"]
	starter.plugins["t"] = func() sdk.Plugin {
		pl := base()
		src, buf, snk := pl.NewSource, pl.NewBuffer, pl.NewSink
		pl.NewSource = func() sdk.Source { return &fenceSource{Source: src(), fences: fences} }
		pl.NewBuffer = func() sdk.Buffer { return &fenceBuffer{Buffer: buf(), fences: fences} }
		pl.NewSink = func() sdk.Sink { return &fenceSink{Sink: snk(), fences: fences} }
		return pl
	}
	run(t, p)
	checkAll(t, f.w.seqs(), 300, true)
	close(fences)
	n := 0
	for got := range fences {
		n++
		if got != 1764504000123 {
			t.Fatalf("a stage was opened with fence %d, want the lease's token", got)
		}
	}
	if n != 3 {
		t.Fatalf("%d stages opened, want 3", n)
	}
}

type fenceSource struct {
	sdk.Source
	fences chan<- int64
}

func (s *fenceSource) Open(ctx context.Context, req sdk.OpenRequest) error {
	s.fences <- req.Fence
	return s.Source.Open(ctx, req)
}

type fenceBuffer struct {
	sdk.Buffer
	fences chan<- int64
}

func (b *fenceBuffer) Open(ctx context.Context, req sdk.OpenRequest) error {
	b.fences <- req.Fence
	return b.Buffer.Open(ctx, req)
}

type fenceSink struct {
	sdk.Sink
	fences chan<- int64
}

func (s *fenceSink) Open(ctx context.Context, req sdk.OpenRequest) error {
	s.fences <- req.Fence
	return s.Sink.Open(ctx, req)
}

// TestLostLeaseOpensNothing: a pipeline whose lease is not valid starts no attempt; one whose lease is
// lost while it waits to restart does not start another. Either stops with the lease's error, not as a
// failure.
func TestLostLeaseOpensNothing(t *testing.T) {
	t.Run("before the first attempt", func(t *testing.T) {
		f := newFixture(100)
		var attempts atomic.Int64
		l := &testLease{token: 7}
		l.lose("taken over by b")
		cfg := config(true, false)
		cfg.Lease = l
		p, _ := hookPipeline(f, cfg, func() *hookSink { return &hookSink{worldSink: worldSink{w: f.w}, attempts: &attempts} })
		err := p.Run(context.Background())
		if !errors.Is(err, ErrLeaseLost) || attempts.Load() != 0 || p.State() != Stopped {
			t.Fatalf("Run = %v after %d attempts, state %s; want ErrLeaseLost, no attempt, stopped", err, attempts.Load(), p.State())
		}
	})
	t.Run("while restarting", func(t *testing.T) {
		f := newFixture(100)
		var attempts atomic.Int64
		l := &testLease{token: 7}
		cfg := config(true, false)
		cfg.Lease = l
		cfg.Retry = Retry{Initial: 50 * time.Millisecond, Max: 50 * time.Millisecond}
		p, _ := hookPipeline(f, cfg, func() *hookSink {
			return &hookSink{worldSink: worldSink{w: f.w}, attempts: &attempts, write: func(context.Context, int64) error {
				l.lose("renewal failed")
				return errors.New("broker unreachable")
			}}
		})
		err := p.Run(context.Background())
		if !errors.Is(err, ErrLeaseLost) || attempts.Load() != 1 || p.State() != Stopped {
			t.Fatalf("Run = %v after %d attempts, state %s; want ErrLeaseLost after one attempt, stopped", err, attempts.Load(), p.State())
		}
		if p.Status().LastError == "" {
			t.Error("the failure before the lease was lost is not shown")
		}
	})
}

// TestAbortStopsWritesAtOnce: once Abort returns, the sink writes nothing more, and Run returns Abort's
// cause with the pipeline stopped (not failed).
func TestAbortStopsWritesAtOnce(t *testing.T) {
	f := newFixture(-1)
	var attempts, writes atomic.Int64
	cfg := config(true, true)
	cfg.Lease = &testLease{token: 3}
	started := make(chan struct{})
	var once sync.Once
	p, _ := hookPipeline(f, cfg, func() *hookSink {
		return &hookSink{worldSink: worldSink{w: f.w}, attempts: &attempts, write: func(context.Context, int64) error {
			writes.Add(1)
			once.Do(func() { close(started) })
			return nil
		}}
	})
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the pipeline wrote nothing")
	}
	cause := fmt.Errorf("%w: renewal failed for 7.5s", ErrLeaseLost)
	began := time.Now()
	p.Abort(cause)
	took := time.Since(began)
	after := writes.Load()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Abort")
	}
	if err != cause || p.State() != Stopped {
		t.Fatalf("Run = %v, state %s; want Abort's cause, stopped", err, p.State())
	}
	if n := writes.Load(); n != after {
		t.Fatalf("the sink wrote %d more batches after Abort returned", n-after)
	}
	if attempts.Load() != 1 {
		t.Fatalf("%d attempts: an aborted pipeline must not restart", attempts.Load())
	}
	t.Logf("Abort took %s", took)
	p.Abort(cause) // again: nothing to do
}
