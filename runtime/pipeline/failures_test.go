package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/sdk/sdktest"
)

func TestRetrierBacksOffWithJitterUnderTheCap(t *testing.T) {
	r := newRetrier(Retry{Initial: 100 * time.Millisecond, Max: time.Second, GiveUpAfter: time.Hour})
	now := time.Now()
	var waits []time.Duration
	for i := 0; i < 20; i++ {
		w, giveUp := r.failed(errors.New("boom"), now)
		if giveUp {
			t.Fatalf("gave up at attempt %d", i+1)
		}
		if w <= 0 || w > time.Second {
			t.Fatalf("attempt %d: wait %v outside (0, 1s]", i+1, w)
		}
		waits = append(waits, w)
	}
	// The first waits grow (100ms ±50%, then 200ms ±50%, …) and the later ones sit near the cap.
	if waits[0] > 150*time.Millisecond || waits[19] < 500*time.Millisecond {
		t.Fatalf("waits do not grow from Initial towards Max: %v", waits)
	}
	if r.repeats != 20 || r.attempts != 20 {
		t.Fatalf("repeats %d, attempts %d; want 20 each", r.repeats, r.attempts)
	}
	r.progressed()
	if r.failing() {
		t.Fatal("still failing after progress")
	}
	if w, _ := r.failed(errors.New("other"), now); w > 150*time.Millisecond {
		t.Fatalf("backoff not reset by progress: %v", w)
	}
}

func TestRetrierGivesUpWithoutProgress(t *testing.T) {
	r := newRetrier(Retry{GiveUpAfter: time.Minute})
	t0 := time.Now()
	if _, giveUp := r.failed(errors.New("boom"), t0); giveUp {
		t.Fatal("gave up at once")
	}
	if _, giveUp := r.failed(errors.New("boom"), t0.Add(59*time.Second)); giveUp {
		t.Fatal("gave up before GiveUpAfter")
	}
	if _, giveUp := r.failed(errors.New("boom"), t0.Add(61*time.Second)); !giveUp {
		t.Fatal("did not give up after GiveUpAfter")
	}
	forever := newRetrier(Retry{GiveUpAfter: time.Minute, Forever: true})
	forever.failed(errors.New("boom"), t0)
	if _, giveUp := forever.failed(errors.New("boom"), t0.Add(time.Hour)); giveUp {
		t.Fatal("gave up with Forever")
	}
}

// hookSink is a worldSink whose Open and Write first call hooks with the attempt number (counting from 1).
type hookSink struct {
	worldSink
	attempts *atomic.Int64
	attempt  int64
	open     func(ctx context.Context, attempt int64) error
	write    func(ctx context.Context, attempt int64) error
}

func (s *hookSink) Open(ctx context.Context, req sdk.OpenRequest) error {
	s.attempt = s.attempts.Add(1)
	if s.open != nil {
		return s.open(ctx, s.attempt)
	}
	return nil
}

func (s *hookSink) Write(ctx context.Context, b record.Batch) error {
	if s.write != nil {
		if err := s.write(ctx, s.attempt); err != nil {
			return err
		}
	}
	return s.worldSink.Write(ctx, b)
}

// hookPipeline runs config(true, false) with a hookSink; log collects the pipeline's log.
func hookPipeline(f *fixture, cfg Config, sink func() *hookSink) (*Pipeline, *sdktest.Output) {
	starter := f.starter(cfg.Sink.Atomic)
	base := starter.plugins["t"]
	starter.plugins["t"] = func() sdk.Plugin {
		p := base()
		p.NewSink = func() sdk.Sink { return sink() }
		return p
	}
	log := &sdktest.Output{}
	if cfg.Retry.Initial == 0 {
		cfg.Retry.Initial, cfg.Retry.Max = time.Millisecond, 10*time.Millisecond
	}
	return New(cfg, starter, f.store, slog.New(slog.NewTextHandler(log, nil))), log
}

func TestGivesUpOnRepeatedTransientFailure(t *testing.T) {
	f := newFixture(100)
	var attempts atomic.Int64
	cfg := config(true, false)
	cfg.Retry = Retry{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, GiveUpAfter: 300 * time.Millisecond}
	p, log := hookPipeline(f, cfg, func() *hookSink {
		return &hookSink{worldSink: worldSink{w: f.w}, attempts: &attempts,
			open: func(context.Context, int64) error { return errors.New("connection refused") }}
	})
	var failed atomic.Int64
	p.cfg.Events = func(e Event) {
		if e.Kind == EventFailed {
			failed.Add(1)
		}
	}
	err := p.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "gave up after") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Run = %v, want it to give up naming the error", err)
	}
	if failed.Load() != 1 {
		t.Fatalf("%d pipeline_failed events, want 1", failed.Load())
	}
	if p.State() != Failed || p.LastError() == nil {
		t.Fatalf("state %v, last error %v; want failed with the error", p.State(), p.LastError())
	}
	// The error is printed once; the repeats are counted.
	logs := log.String()
	if n := strings.Count(logs, "connection refused"); n != 1 {
		t.Errorf("the error is logged %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs, "the same error as the previous attempt") || !strings.Contains(logs, "attempt=2") {
		t.Errorf("repeats not counted in the log:\n%s", logs)
	}
}

func TestRetryForeverUntilStopped(t *testing.T) {
	f := newFixture(100)
	var attempts atomic.Int64
	cfg := config(true, false)
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond, GiveUpAfter: 10 * time.Millisecond, Forever: true}
	p, _ := hookPipeline(f, cfg, func() *hookSink {
		return &hookSink{worldSink: worldSink{w: f.w}, attempts: &attempts,
			open: func(context.Context, int64) error { return errors.New("broker not available") }}
	})
	go func() {
		// Stop it once it has retried a few times (a loaded machine may take a while to get there).
		for deadline := time.Now().Add(20 * time.Second); attempts.Load() < 5 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		p.Drain()
	}()
	err := p.Run(context.Background())
	// Stopped while it was failing: the summary must say it failed, with the error.
	if err == nil || errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), "broker not available") {
		t.Fatalf("Run = %v, want the failure it was restarting after", err)
	}
	if attempts.Load() < 5 {
		t.Fatalf("only %d attempts with retry: forever before it stopped", attempts.Load())
	}
}

func TestHealsAfterTransientFailures(t *testing.T) {
	f := newFixture(2000)
	var attempts atomic.Int64
	var mu sync.Mutex
	var events []Event
	cfg := config(false, false)
	cfg.Events = func(e Event) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}
	p, _ := hookPipeline(f, cfg, func() *hookSink {
		return &hookSink{worldSink: worldSink{w: f.w}, attempts: &attempts,
			open: func(_ context.Context, a int64) error {
				if a <= 3 {
					return errors.New("broker restarting")
				}
				return nil
			}}
	})
	run(t, p)
	checkAll(t, f.w.seqs(), 2000, true)
	if n := p.Stats.Restarts.Load(); n != 3 {
		t.Fatalf("%d restarts, want 3", n)
	}
	if p.State() != Completed || p.LastError() != nil {
		t.Fatalf("state %v, last error %v", p.State(), p.LastError())
	}
	st := p.Status()
	if st.State != Completed || st.Delivered != 2000 || st.Restarts != 3 || seqOf(st.Positions["source"]) != 1999 || len(st.Stages) != 0 {
		t.Fatalf("status %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 3 {
		t.Fatalf("%d events, want 3 restarts: %+v", len(events), events)
	}
	for i, e := range events {
		if e.Kind != EventRestarting || e.Attempt != i+1 || e.Pipeline != "p" || !strings.Contains(e.Err.Error(), "broker restarting") || e.Stage != "sink t" {
			t.Errorf("event %d: %+v", i, e)
		}
	}
}

func TestOpenTimeout(t *testing.T) {
	f := newFixture(500)
	var attempts atomic.Int64
	cfg := config(true, false)
	cfg.OpenTimeout = 200 * time.Millisecond
	p, log := hookPipeline(f, cfg, func() *hookSink {
		return &hookSink{worldSink: worldSink{w: f.w}, attempts: &attempts,
			open: func(ctx context.Context, a int64) error {
				if a == 1 {
					<-ctx.Done() // hangs until the host gives up on it
					return ctx.Err()
				}
				return nil
			}}
	})
	run(t, p)
	checkAll(t, f.w.seqs(), 500, true)
	if !regexp.MustCompile(`err="sink \S+ did not finish Open within open_timeout \(200ms\)"`).MatchString(log.String()) {
		t.Fatalf("the open timeout is not reported as one sentence:\n%s", log)
	}
}

// TestOpenFailsWithItsOwnTimeout: an Open that fails well before open_timeout, with a timeout of the
// plugin's own (a driver's context.DeadlineExceeded), is reported with the plugin's words: open_timeout
// did not fire.
func TestOpenFailsWithItsOwnTimeout(t *testing.T) {
	f := newFixture(500)
	var attempts atomic.Int64
	cfg := config(true, false)
	cfg.OpenTimeout = time.Minute
	p, log := hookPipeline(f, cfg, func() *hookSink {
		return &hookSink{worldSink: worldSink{w: f.w}, attempts: &attempts,
			open: func(ctx context.Context, a int64) error {
				if a == 1 {
					return fmt.Errorf("server selection: %w", context.DeadlineExceeded)
				}
				return nil
			}}
	})
	run(t, p)
	checkAll(t, f.w.seqs(), 500, true)
	if strings.Contains(log.String(), "open_timeout") || !strings.Contains(log.String(), "opening: server selection: context deadline exceeded") {
		t.Fatalf("the plugin's own timeout is not reported as its own:\n%s", log)
	}
}

func TestStalledSinkIsRestarted(t *testing.T) {
	f := newFixture(3000)
	var attempts atomic.Int64
	cfg := config(true, false)
	cfg.StallTimeout = 400 * time.Millisecond
	p, log := hookPipeline(f, cfg, func() *hookSink {
		return &hookSink{worldSink: worldSink{w: f.w}, attempts: &attempts,
			write: func(ctx context.Context, a int64) error {
				if a == 1 && len(f.w.seqs()) >= 1000 {
					<-ctx.Done() // frozen: accepts batches, never acknowledges them
					return ctx.Err()
				}
				return nil
			}}
	})
	run(t, p)
	checkAll(t, f.w.seqs(), 3000, true)
	logs := log.String()
	for _, want := range []string{"stage stalled", "stage=\"sink t\"", "pending_records=", "stall_timeout=400ms"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if n := p.Stats.Restarts.Load(); n != 1 {
		t.Fatalf("%d restarts, want 1", n)
	}
}
