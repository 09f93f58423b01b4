package metrics

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms"
)

// The stages below run in-process over the real protocol (in-memory gRPC).

func pos(n uint64) record.Position { return binary.BigEndian.AppendUint64(nil, n) }

// eventBase is the event time of record 0; record i happened i milliseconds later.
var eventBase = time.Now().Add(-time.Minute).Truncate(time.Millisecond)

// source emits records 0..n-1 (n < 0: forever) with event times, counting them in a metric of its own.
type source struct {
	sdk.UnimplementedSource
	n       int64
	next    uint64
	emitted *sdk.Counter
	block   chan struct{} // when set, collecting metrics waits on it: a frozen plugin
}

func (s *source) Open(_ context.Context, req sdk.OpenRequest) error {
	s.emitted = req.Metrics.Counter("emitted_total", "Records emitted.", sdk.Label{Name: "kind", Value: "count"})
	if s.block != nil {
		req.Metrics.GaugeFunc("frozen", "Never answers.", func() (float64, bool) { <-s.block; return 0, false })
	}
	if req.After != nil {
		s.next = binary.BigEndian.Uint64(req.After) + 1
	}
	return nil
}

func (s *source) Read(ctx context.Context) ([]record.Record, error) {
	if s.n >= 0 && s.next >= uint64(s.n) {
		return nil, sdk.ErrDone
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var recs []record.Record
	for len(recs) < 100 && (s.n < 0 || s.next < uint64(s.n)) {
		recs = append(recs, record.Record{Position: pos(s.next), Op: record.OpInsert, Payload: fmt.Appendf(nil, `{"seq":%d}`, s.next),
			Encoding: record.EncodingJSON, Time: eventBase.Add(time.Duration(s.next) * time.Millisecond)})
		s.next++
	}
	s.emitted.Add(float64(len(recs)))
	if s.n < 0 {
		time.Sleep(time.Millisecond)
	}
	return recs, nil
}

// buffer keeps its entries in memory, reporting its fill.
type buffer struct {
	sdk.UnimplementedBuffer
	mu      *sync.Mutex
	entries *[]record.Record
	ckpt    *record.Position
	next    int
}

func (b *buffer) Open(_ context.Context, req sdk.OpenRequest) error {
	req.Metrics.BufferFill(func() sdk.Fill {
		b.mu.Lock()
		defer b.mu.Unlock()
		return sdk.Fill{Entries: int64(len(*b.entries)), Bytes: 100 * int64(len(*b.entries)), Fraction: 0.25}
	})
	if req.After != nil {
		b.next = int(binary.BigEndian.Uint64(req.After)) + 1
	}
	return nil
}

func (b *buffer) Checkpoint(context.Context) (record.Position, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ckpt.Clone(), nil
}

func (b *buffer) Append(_ context.Context, batch record.Batch) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range batch.Records {
		r.Position = pos(uint64(len(*b.entries)))
		r.Payload = append([]byte(nil), r.Payload...)
		*b.entries = append(*b.entries, r)
	}
	*b.ckpt = batch.Position.Clone()
	return nil
}

func (b *buffer) Read(ctx context.Context) ([]record.Record, error) {
	deadline := time.Now().Add(50 * time.Millisecond)
	for {
		b.mu.Lock()
		recs := append([]record.Record(nil), (*b.entries)[min(b.next, len(*b.entries)):]...)
		b.mu.Unlock()
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

func (b *buffer) Ack(context.Context, record.Position) error { return nil }

// sink keeps the last position; it fails once after failAt writes when failAt > 0.
type sink struct {
	sdk.UnimplementedSink
	w *world
}

type world struct {
	mu     sync.Mutex
	stored record.Position
	writes int
	failAt int
	buf    []record.Record
	bufPos record.Position
}

func (s *sink) Open(context.Context, sdk.OpenRequest) error { return nil }
func (s *sink) Checkpoint(context.Context) (record.Position, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return s.w.stored.Clone(), nil
}
func (s *sink) Write(_ context.Context, b record.Batch) error {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	s.w.writes++
	if s.w.failAt > 0 && s.w.writes == s.w.failAt {
		return errors.New("sink lost its connection")
	}
	s.w.stored = b.Position.Clone()
	return nil
}

type starter struct{ plugin func() sdk.Plugin }

func (s starter) Start(context.Context, string, sdk.Kind, bool, *slog.Logger) (*protocol.Conn, error) {
	return protocol.Local(s.plugin())
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

// fixture builds pipelines of plugin "t" (source, buffer and sink) whose state outlives restarts.
type fixture struct {
	n     int64
	w     *world
	block chan struct{}
}

func (f *fixture) starter() starter {
	return starter{func() sdk.Plugin {
		return sdk.Plugin{Spec: sdk.Spec{Name: "t", Version: "0", Summary: "test",
			Source: &sdk.Stage{Summary: "s"},
			Buffer: &sdk.Stage{Summary: "b", Capabilities: sdk.Capabilities{AtomicPosition: true}},
			Sink:   &sdk.Stage{Summary: "k", Capabilities: sdk.Capabilities{AtomicPosition: true}}},
			NewSource: func() sdk.Source { return &source{n: f.n, block: f.block} },
			NewBuffer: func() sdk.Buffer {
				return &buffer{mu: &f.w.mu, entries: &f.w.buf, ckpt: &f.w.bufPos}
			},
			NewSink: func() sdk.Sink { return &sink{w: f.w} }}
	}}
}

func (f *fixture) config(id string, buffered bool) pipeline.Config {
	cfg := pipeline.Config{ID: id, Source: pipeline.Stage{Plugin: "t"}, Sink: pipeline.Stage{Plugin: "t", Atomic: true},
		BatchMaxRecords: 64, Retry: pipeline.Retry{Initial: time.Millisecond, Max: 10 * time.Millisecond}}
	if buffered {
		cfg.Buffer = &pipeline.Stage{Plugin: "t", Atomic: true}
	}
	return cfg
}

func value(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

func TestHostMetricsOfARun(t *testing.T) {
	reg := New(Options{})
	// The sink's first write fails: however the SDK coalesces batches, there is one.
	f := &fixture{n: 1001, w: &world{failAt: 1}}
	cfg := f.config("orders", true)
	steps, err := transforms.Compile([]transforms.Step{{Kind: transforms.Filter, Expr: transforms.Expr{Text: "seq % 2 == 0"}}})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Steps = steps
	cfg.Meter = reg.Meter(cfg.ID)
	p := pipeline.New(cfg, f.starter(), &memStore{}, slog.New(slog.DiscardHandler))
	reg.Track(p)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}

	// The source's records all passed once before the sink's failure and again after it, or only after:
	// at least 1001 were read, and every even one reached the sink.
	if got := value(t, reg.recordsRead.WithLabelValues("orders", "source")); got < 1001 {
		t.Errorf("records read from the source: %v, want at least 1001", got)
	}
	if got := value(t, reg.bytesRead.WithLabelValues("orders", "source")); got < 1001*10 {
		t.Errorf("bytes read from the source: %v", got)
	}
	if got := value(t, reg.filtered.WithLabelValues("orders", "transforms")); got < 500 {
		t.Errorf("filtered: %v, want at least 500", got)
	}
	if got := value(t, reg.recordsWritten.WithLabelValues("orders", "sink")); got < 501 {
		t.Errorf("records the sink wrote: %v, want at least 501", got)
	}
	if got := value(t, reg.restarts.WithLabelValues("orders", "sink", pipeline.CauseError)); got != 1 {
		t.Errorf("restarts by the sink's error: %v, want 1", got)
	}
	if n := testutil.CollectAndCount(reg.batchRecords); n != 2 { // source and buffer
		t.Errorf("%d batch-size series, want 2 (source, buffer)", n)
	}
	text := scrape(t, reg)
	for _, want := range []string{
		`sluice_pipeline_state{pipeline="orders",state="completed"} 1`,
		`sluice_pipeline_state{pipeline="orders",state="running"} 0`,
		`sluice_source_lag_seconds{pipeline="orders"} `,
		`sluice_source_last_event_timestamp_seconds{pipeline="orders"} `,
		`sluice_end_to_end_latency_seconds_bucket{pipeline="orders",le="600"} `,
		`sluice_batch_bytes_count{pipeline="orders",stage="source"} `,
		`sluice_records_written_total{pipeline="orders",stage="buffer"} `,
		"go_goroutines ", "process_cpu_seconds_total ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	// The latency of every batch is about a minute: its records' event times are that old.
	if sum, count := histogram(t, reg, "sluice_end_to_end_latency_seconds"); count == 0 || sum/count < 59 || sum/count > 120 {
		t.Errorf("latency: %v batches, mean %v s; want about 60 s", count, sum/count)
	}
	// The source lag is measured from the last record's event time, 1 s after eventBase.
	if lag := gauge(t, reg, "sluice_source_lag_seconds"); lag < 58 || lag > 120 {
		t.Errorf("lag %v s, want about a minute", lag)
	}
}

func TestLaneMetrics(t *testing.T) {
	reg := New(Options{})
	m, ok := reg.Meter("orders").(pipeline.LaneMeter)
	if !ok {
		t.Fatal("the registry's meter does not count lanes")
	}
	m.LaneWritten(0, 3)
	m.LaneWritten(2, 5)
	m.LaneWritten(2, 1)
	text := scrape(t, reg)
	for _, want := range []string{
		`sluice_lane_records_written_total{lane="0",pipeline="orders"} 3`,
		`sluice_lane_records_written_total{lane="2",pipeline="orders"} 6`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	reg.Forget("orders")
	if text := scrape(t, reg); strings.Contains(text, "sluice_lane_records_written_total{") {
		t.Errorf("Forget left lane series:\n%s", text)
	}
}

func TestPluginMetricsReachTheHost(t *testing.T) {
	reg := New(Options{})
	f := &fixture{n: -1, w: &world{}}
	cfg := f.config("orders", true)
	cfg.Meter = reg.Meter(cfg.ID)
	p := pipeline.New(cfg, f.starter(), &memStore{}, slog.New(slog.DiscardHandler))
	reg.Track(p)
	stop := runUntilDelivering(t, p)
	defer stop()

	text := scrape(t, reg)
	for _, want := range []string{
		"# TYPE sluice_plugin_t_emitted_total counter",
		`sluice_plugin_t_emitted_total{kind="count",pipeline="orders",plugin="t",stage="source"} `,
		`sluice_buffer_fill_ratio{pipeline="orders"} 0.25`,
		`sluice_buffer_entries{pipeline="orders"} `,
		`sluice_pipeline_state{pipeline="orders",state="running"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q:\n%s", want, grep(text, "sluice_"))
		}
	}
	if strings.Contains(text, "sluice_stage_metrics_errors_total") {
		t.Errorf("errors collecting plugin metrics:\n%s", grep(text, "errors"))
	}
}

func TestAFrozenPluginDoesNotHoldAScrape(t *testing.T) {
	reg := New(Options{PluginTimeout: 200 * time.Millisecond})
	f := &fixture{n: -1, w: &world{}, block: make(chan struct{})}
	defer close(f.block)
	cfg := f.config("frozen", false)
	cfg.Meter = reg.Meter(cfg.ID)
	p := pipeline.New(cfg, f.starter(), &memStore{}, slog.New(slog.DiscardHandler))
	reg.Track(p)
	stop := runUntilDelivering(t, p)
	defer stop()

	start := time.Now()
	text := scrape(t, reg)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the scrape took %v", d)
	}
	if !strings.Contains(text, `sluice_stage_metrics_errors_total{pipeline="frozen",plugin="t",stage="source"} 1`) {
		t.Errorf("the frozen source is not counted as an error:\n%s", grep(text, "sluice_"))
	}
	if !strings.Contains(text, `sluice_records_read_total{pipeline="frozen",stage="source"} `) {
		t.Error("the host's own metrics are missing")
	}
	if strings.Contains(text, "sluice_plugin_t_emitted_total") {
		t.Error("metrics of a plugin that did not answer in time")
	}
}

func TestForget(t *testing.T) {
	reg := New(Options{})
	f := &fixture{n: 100, w: &world{}}
	cfg := f.config("gone", false)
	cfg.Meter = reg.Meter(cfg.ID)
	p := pipeline.New(cfg, f.starter(), &memStore{}, slog.New(slog.DiscardHandler))
	reg.Track(p)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(scrape(t, reg), `pipeline="gone"`) {
		t.Fatal("no series of the pipeline before Forget")
	}
	reg.Forget("gone")
	if text := scrape(t, reg); strings.Contains(text, `pipeline="gone"`) {
		t.Fatalf("series left after Forget:\n%s", grep(text, `pipeline="gone"`))
	}
}

// runUntilDelivering runs p until its sink has acknowledged records; the returned func drains it.
func runUntilDelivering(t *testing.T, p *pipeline.Pipeline) func() {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for p.Stats.Delivered.Load() < 100 {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("Run ended: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	return func() {
		p.Drain()
		<-done
		cancel()
	}
}

// scrape gets /metrics from the registry's handler.
func scrape(t *testing.T, reg *Registry) string {
	t.Helper()
	srv := httptest.NewServer(reg.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %v\n%s", resp.StatusCode, err, body)
	}
	return string(body)
}

func grep(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// histogram returns the sum and count of the one series of histogram name.
func histogram(t *testing.T, reg *Registry, name string) (sum, count float64) {
	t.Helper()
	mfs, err := reg.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleSum(), float64(h.GetSampleCount())
		}
	}
	t.Fatalf("no single series of %s", name)
	return 0, 0
}

// gauge returns the value of the one series of gauge name.
func gauge(t *testing.T, reg *Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no single series of %s", name)
	return 0
}

// TestLeaseMetrics: the lease gauges and counters of a host sharing pipelines, and the state gauges taken
// from the statuses it reports (a pipeline held elsewhere is standby).
func TestLeaseMetrics(t *testing.T) {
	reg := New(Options{})
	reg.Statuses(func() []pipeline.Status {
		return []pipeline.Status{{ID: "orders", State: pipeline.Running}, {ID: "audit", State: pipeline.Standby}}
	})
	reg.LeaseHeld("orders", true)
	reg.LeaseHeld("audit", false)
	reg.LeaseLost("audit")
	reg.LeaseTakeover("orders", 10400*time.Millisecond)
	reg.Instances(3)
	text := scrape(t, reg)
	for _, want := range []string{
		`sluice_lease_held{pipeline="orders"} 1`,
		`sluice_lease_held{pipeline="audit"} 0`,
		`sluice_lease_lost_total{pipeline="audit"} 1`,
		`sluice_lease_takeovers_total{pipeline="orders"} 1`,
		`sluice_lease_takeover_unrenewed_seconds_sum{pipeline="orders"} 10.4`,
		`sluice_cluster_instances 3`,
		`sluice_pipeline_state{pipeline="orders",state="running"} 1`,
		`sluice_pipeline_state{pipeline="audit",state="standby"} 1`,
		`sluice_pipeline_state{pipeline="audit",state="running"} 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q:\n%s", want, grep(text, "sluice_"))
		}
	}
	reg.Forget("orders")
	if text := scrape(t, reg); strings.Contains(text, `sluice_lease_held{pipeline="orders"}`) {
		t.Errorf("Forget left the lease gauge of orders:\n%s", grep(text, "lease"))
	}
}
