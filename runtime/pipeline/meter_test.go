package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms"
)

// testMeter records what a pipeline tells its Meter.
type testMeter struct {
	mu        sync.Mutex
	read      map[string][2]int // role → records, bytes
	written   map[string][2]int
	batches   map[string]int // role → batches read
	filtered  map[string]int
	dead      map[string]int
	redeliver int
	restarts  []string // "role/cause"
	latencies []time.Duration
}

func newTestMeter() *testMeter {
	return &testMeter{read: map[string][2]int{}, written: map[string][2]int{}, batches: map[string]int{},
		filtered: map[string]int{}, dead: map[string]int{}}
}

type testStageMeter struct {
	m    *testMeter
	role string
}

func (m *testMeter) Stage(role string) StageMeter { return testStageMeter{m, role} }

func (s testStageMeter) Read(records, bytes int) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	v := s.m.read[s.role]
	s.m.read[s.role] = [2]int{v[0] + records, v[1] + bytes}
	s.m.batches[s.role]++
}

func (s testStageMeter) Written(records, bytes int) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	v := s.m.written[s.role]
	s.m.written[s.role] = [2]int{v[0] + records, v[1] + bytes}
}

func (m *testMeter) Filtered(steps string, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.filtered[steps] += n
}

func (m *testMeter) DeadLettered(origin string, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dead[origin] += n
}

func (m *testMeter) Redelivered(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.redeliver += n
}

func (m *testMeter) Restarted(stage, cause string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.restarts = append(m.restarts, stage+"/"+cause)
}

func (m *testMeter) Latency(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.latencies = append(m.latencies, d)
}

// eventBase is the event time of record 0 in these tests; record i happened i milliseconds later.
var eventBase = time.Now().Add(-time.Hour).Truncate(time.Millisecond)

// timedSource is countSource whose records carry event times, and which counts them in a metric.
type timedSource struct {
	*countSource
	emitted *sdk.Counter
	block   chan struct{} // when set, collecting metrics waits on it: a frozen plugin
}

func (s *timedSource) Open(ctx context.Context, req sdk.OpenRequest) error {
	s.emitted = req.Metrics.Counter("emitted_total", "Records emitted.")
	if s.block != nil {
		req.Metrics.GaugeFunc("frozen", "Never answers.", func() (float64, bool) { <-s.block; return 0, false })
	}
	return s.countSource.Open(ctx, req)
}

func (s *timedSource) Read(ctx context.Context) ([]record.Record, error) {
	recs, err := s.countSource.Read(ctx)
	for i := range recs {
		recs[i].Time = eventBase.Add(time.Duration(seqOf(recs[i].Position)) * time.Millisecond)
	}
	s.emitted.Add(float64(len(recs)))
	return recs, err
}

// fillBuffer is memBuffer that reports a fill of one entry per record it holds.
type fillBuffer struct{ memBuffer }

func (b *fillBuffer) Open(ctx context.Context, req sdk.OpenRequest) error {
	req.Metrics.BufferFill(func() sdk.Fill {
		b.w.mu.Lock()
		defer b.w.mu.Unlock()
		return sdk.Fill{Entries: int64(len(b.w.entries)), Bytes: 10 * int64(len(b.w.entries)), Fraction: 0.5}
	})
	return b.memBuffer.Open(ctx, req)
}

func timedStarter(f *fixture, atomic bool, block chan struct{}) *fakeStarter {
	st := f.starter(atomic)
	base := st.plugins["t"]
	st.plugins["t"] = func() sdk.Plugin {
		p := base()
		p.NewSource = func() sdk.Source { return &timedSource{countSource: f.src(), block: block} }
		p.NewBuffer = func() sdk.Buffer { return &fillBuffer{memBuffer{w: f.bw}} }
		return p
	}
	return st
}

func TestMeterCountsBatchesThroughABuffer(t *testing.T) {
	f := newFixture(1001)
	cfg := config(true, true)
	cfg.Steps = compile(t, transforms.Step{Kind: transforms.Filter, Expr: transforms.Expr{Text: "seq % 2 == 0"}})
	m := newTestMeter()
	cfg.Meter = m
	p := New(cfg, timedStarter(f, true, nil), f.store, slog.New(slog.DiscardHandler))
	run(t, p)
	if got := len(f.w.seqs()); got != 501 {
		t.Fatalf("the sink wrote %d records, want the 501 even ones", got)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if got := m.read["source"][0]; got != 1001 {
		t.Errorf("read from the source: %d records, want 1001", got)
	}
	if m.read["source"][1] < 1001*10 {
		t.Errorf("read from the source: %d bytes, too few", m.read["source"][1])
	}
	if m.filtered["transforms"] != 500 {
		t.Errorf("filtered %v, want 500 by transforms", m.filtered)
	}
	for _, role := range []string{"buffer", "sink"} {
		if got := m.written[role][0]; got != 501 {
			t.Errorf("written to the %s: %d records, want 501", role, got)
		}
	}
	if got := m.read["buffer"][0]; got != 501 {
		t.Errorf("read from the buffer: %d records, want 501", got)
	}
	if m.batches["source"] < 1001/64 {
		t.Errorf("%d batches from the source; want one per 64 records at least", m.batches["source"])
	}
	// Every batch the sink acknowledged was observed, each at least an hour after its latest event.
	if len(m.latencies) == 0 {
		t.Fatal("no latency observed")
	}
	for _, d := range m.latencies {
		if d < time.Hour-time.Second || d > time.Hour+time.Minute {
			t.Fatalf("latency %v, want about an hour", d)
		}
	}
	// The last event acknowledged downstream of the source is record 1000 (filtered records count).
	if got, want := p.Status().LastEventTime, eventBase.Add(1000*time.Millisecond); !got.Equal(want) {
		t.Errorf("LastEventTime %v, want %v", got, want)
	}
}

func TestCollectMetricsWhileRunning(t *testing.T) {
	f := newFixture(-1) // endless
	cfg := config(true, true)
	block := make(chan struct{})
	defer close(block)
	p := New(cfg, timedStarter(f, true, block), f.store, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for p.Stats.Delivered.Load() < 100 {
		select {
		case err := <-done:
			t.Fatalf("Run ended: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	start := time.Now()
	got := p.CollectMetrics(ctx, 300*time.Millisecond)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("CollectMetrics took %v with a frozen source", d)
	}
	var roles []string
	for _, s := range got {
		roles = append(roles, s.Role)
		switch s.Role {
		case "source": // its GaugeFunc never returns
			if !errors.Is(s.Err, context.DeadlineExceeded) {
				t.Errorf("source: err %v, want a deadline error", s.Err)
			}
		default:
			if s.Err != nil || s.Plugin != "t" {
				t.Errorf("%s: %+v", s.Role, s)
			}
		}
	}
	if strings.Join(roles, ",") != "source,buffer,sink" {
		t.Errorf("roles %v, want source, buffer, sink", roles)
	}
	st := p.Status()
	if st.Buffer == nil || st.Buffer.Fraction != 0.5 || st.Buffer.Entries <= 0 || st.Buffer.Bytes != 10*st.Buffer.Entries {
		t.Errorf("Status.Buffer = %+v", st.Buffer)
	}
	if st.LastEventTime.IsZero() {
		t.Error("no LastEventTime while records flow")
	}
	p.Drain()
	if err := <-done; !errors.Is(err, ErrStopped) {
		t.Fatalf("Run: %v", err)
	}
	if got := p.CollectMetrics(context.Background(), time.Second); len(got) != 0 {
		t.Errorf("after Run, CollectMetrics returned %+v", got)
	}
}

func TestCollectMetricsReportsPluginCounters(t *testing.T) {
	f := newFixture(-1)
	p := New(config(true, false), timedStarter(f, true, nil), f.store, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		p.Drain()
		<-done
	}()
	for p.Stats.Delivered.Load() < 100 {
		time.Sleep(5 * time.Millisecond)
	}
	got := p.CollectMetrics(ctx, 5*time.Second)
	if len(got) != 2 || got[0].Role != "source" || !strings.Contains(string(got[0].Text), "emitted_total ") {
		t.Fatalf("collected %+v", got)
	}
	if st := p.Status(); st.Buffer != nil {
		t.Errorf("a pipeline without a buffer has a buffer fill: %+v", st.Buffer)
	}
}

func TestMeterCountsRestartsDeadLettersAndRedeliveries(t *testing.T) {
	t.Run("sink error, at-least-once", func(t *testing.T) {
		f := newFixture(3000)
		f.w.failAt = 1234
		cfg := config(false, false)
		m := newTestMeter()
		cfg.Meter = m
		p := newPipeline(f, cfg)
		run(t, p)
		m.mu.Lock()
		defer m.mu.Unlock()
		if fmt.Sprint(m.restarts) != "[sink/error]" {
			t.Errorf("restarts %v, want [sink/error]", m.restarts)
		}
		if int64(m.redeliver) != p.Stats.Redelivered.Load() {
			t.Errorf("redelivered %d, Stats say %d", m.redeliver, p.Stats.Redelivered.Load())
		}
	})
	t.Run("dead letters by origin", func(t *testing.T) {
		f := &stepsFixture{fixture: newFixture(300), marked: map[uint64]bool{10: true, 11: true}, reject: map[uint64]bool{20: true}}
		cfg := config(true, false)
		cfg.DeadLetter = &Stage{Plugin: "dlq"}
		cfg.OnError = OnErrorDLQ
		cfg.Steps = compile(t, failing) // fails on record 57
		m := newTestMeter()
		cfg.Meter = m
		run(t, f.pipeline(t, cfg))
		m.mu.Lock()
		defer m.mu.Unlock()
		if want := map[string]int{"source": 2, "transforms": 1, "sink": 1}; fmt.Sprint(m.dead) != fmt.Sprint(want) {
			t.Errorf("dead letters %v, want %v", m.dead, want)
		}
	})
	t.Run("open timeout", func(t *testing.T) {
		f := newFixture(10)
		slow := &slowOpen{delay: time.Second}
		st := f.starter(true)
		base := st.plugins["t"]
		st.plugins["t"] = func() sdk.Plugin {
			p := base()
			p.NewSink = func() sdk.Sink { return &slowOpenSink{worldSink: worldSink{w: f.w}, slow: slow} }
			return p
		}
		cfg := config(true, false)
		cfg.OpenTimeout = 100 * time.Millisecond
		cfg.Retry = Retry{Initial: time.Millisecond, Max: 10 * time.Millisecond}
		m := newTestMeter()
		cfg.Meter = m
		events := make(chan Event, 10)
		cfg.Events = func(e Event) { events <- e }
		run(t, New(cfg, st, f.store, slog.New(slog.DiscardHandler)))
		m.mu.Lock()
		defer m.mu.Unlock()
		if fmt.Sprint(m.restarts) != "[sink/open_timeout]" {
			t.Errorf("restarts %v, want [sink/open_timeout]", m.restarts)
		}
		if e := <-events; e.Cause != CauseOpenTimeout {
			t.Errorf("event %+v, want cause %s", e, CauseOpenTimeout)
		}
	})
}

// slowOpen makes the first Open it sees wait for delay.
type slowOpen struct {
	mu    sync.Mutex
	delay time.Duration
}

type slowOpenSink struct {
	worldSink
	slow *slowOpen
}

func (s *slowOpenSink) Open(ctx context.Context, req sdk.OpenRequest) error {
	s.slow.mu.Lock()
	d := s.slow.delay
	s.slow.delay = 0
	s.slow.mu.Unlock()
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.worldSink.Open(ctx, req)
}

func TestCause(t *testing.T) {
	conn, err := protocol.Local(sdk.Plugin{Spec: spec("k", true), NewSource: func() sdk.Source { return &countSource{} },
		NewBuffer: func() sdk.Buffer { return &memBuffer{} }, NewSink: func() sdk.Sink { return &worldSink{} }})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Kill()
	s := &stage{role: "sink", plugin: "k", conn: conn}
	p := &Pipeline{cfg: Config{StallTimeout: time.Minute}, log: slog.New(slog.DiscardHandler)}
	for _, tt := range []struct {
		err  error
		want string
	}{
		{&StageError{Stage: "sink k", Role: "sink", Exit: &protocol.Exit{}, Err: protocol.ErrConnectionLost}, CauseCrash},
		{p.stall(s, 2*time.Minute, 5, 50), CauseStall},
		{s.unresponsive(15*time.Second, context.DeadlineExceeded), CauseUnresponsive},
		{s.fail("opening", &OpenTimeoutError{Method: "Open", Timeout: 2 * time.Minute, Err: context.DeadlineExceeded}), CauseOpenTimeout},
		{s.fail("writing", errors.New("broker down")), CauseError},
	} {
		if got := Cause(tt.err); got != tt.want {
			t.Errorf("Cause(%v) = %s, want %s", tt.err, got, tt.want)
		}
		if tt.want != CauseOpenTimeout && roleOf(tt.err) != "sink" {
			t.Errorf("roleOf(%v) = %q, want sink", tt.err, roleOf(tt.err))
		}
	}
	// The messages did not change with the causes.
	if msg := s.unresponsive(15*time.Second, context.DeadlineExceeded).Error(); !strings.Contains(msg, "the plugin process has not answered for 15s (stopped or hung)") {
		t.Errorf("unresponsive: %s", msg)
	}
	if msg := p.stall(s, 2*time.Minute, 5, 50).Error(); !strings.Contains(msg, "stalled: 5 records (50 bytes) unacknowledged for 2m0s") {
		t.Errorf("stall: %s", msg)
	}
}
