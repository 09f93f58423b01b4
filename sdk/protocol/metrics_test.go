package protocol

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/internal/transport"
	"github.com/sluicehq/sluice/sdk/proto/sluicev1"
	"github.com/sluicehq/sluice/sdk/record"
)

// timedSource emits three records with event times 10 s apart and counts them in a metric of its own.
type timedSource struct {
	sdk.UnimplementedSource
	base  time.Time
	done  bool
	count *sdk.Counter
	block chan struct{} // when set, the GaugeFunc waits on it: a frozen plugin
}

func (s *timedSource) Open(_ context.Context, req sdk.OpenRequest) error {
	s.count = req.Metrics.Counter("records_emitted_total", "Records emitted.", sdk.Label{Name: "kind", Value: "test"})
	req.Metrics.GaugeFunc("age_seconds", "How old.", func() (float64, bool) {
		if s.block != nil {
			<-s.block
		}
		return 42, true
	})
	return nil
}

func (s *timedSource) Read(context.Context) ([]record.Record, error) {
	if s.done {
		return nil, sdk.ErrDone
	}
	s.done = true
	recs := []record.Record{
		{Position: record.Position("1"), Op: record.OpInsert, Time: s.base},
		{Position: record.Position("2"), Op: record.OpInsert, Time: s.base.Add(20 * time.Second)},
		{Position: record.Position("3"), Op: record.OpHeartbeat, Time: s.base.Add(10 * time.Second)},
	}
	s.count.Add(float64(len(recs)))
	return recs, nil
}

type timeSink struct {
	sdk.UnimplementedSink
	times chan []time.Time
}

func (s *timeSink) Open(context.Context, sdk.OpenRequest) error { return nil }
func (s *timeSink) Write(_ context.Context, b record.Batch) error {
	var ts []time.Time
	for _, r := range b.Records {
		ts = append(ts, r.Time)
	}
	s.times <- ts
	return nil
}

type fillBuffer struct {
	sdk.UnimplementedBuffer
}

func (b *fillBuffer) Open(_ context.Context, req sdk.OpenRequest) error {
	req.Metrics.BufferFill(func() sdk.Fill { return sdk.Fill{Entries: 5, Bytes: 500, Fraction: 0.5} })
	return nil
}

func TestEventTimeAndMetricsOverGRPC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	base := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	src, sink := &timedSource{base: base}, &timeSink{times: make(chan []time.Time, 1)}
	p := sdk.Plugin{Spec: sdk.Spec{Name: "t", Version: "0", Summary: "test",
		Source: &sdk.Stage{Summary: "s"}, Sink: &sdk.Stage{Summary: "k"}},
		NewSource: func() sdk.Source { return src }, NewSink: func() sdk.Sink { return sink }}
	sc, err := Local(p)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Kill()
	kc, err := Local(p)
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Kill()
	if err := sc.Source().Open(ctx, OpenRequest{}); err != nil {
		t.Fatal(err)
	}
	rs, err := sc.Source().Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	// The batch says its latest event time without being decoded.
	if want := base.Add(20 * time.Second); !b.EventTime.Equal(want) {
		t.Fatalf("batch event time %v, want %v", b.EventTime, want)
	}
	m, err := sc.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`records_emitted_total{kind="test"} 3`, "age_seconds 42"} {
		if !strings.Contains(string(m.Text), want) {
			t.Errorf("metrics lack %q:\n%s", want, m.Text)
		}
	}
	if m.Fill != nil {
		t.Errorf("a source reported a fill: %+v", m.Fill)
	}

	// Each record's own time reaches the sink.
	if err := kc.Sink().Open(ctx, OpenRequest{}); err != nil {
		t.Fatal(err)
	}
	ws, err := kc.Sink().Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Send(b); err != nil {
		t.Fatal(err)
	}
	got := <-sink.times
	want := []time.Time{base, base.Add(20 * time.Second), base.Add(10 * time.Second)}
	for i := range want {
		if i >= len(got) || !got[i].Equal(want[i]) {
			t.Fatalf("sink saw times %v, want %v", got, want)
		}
	}
	// A sink that registered nothing reports an empty text.
	if m, err := kc.Metrics(ctx); err != nil || len(m.Text) != 0 {
		t.Fatalf("sink metrics %q, %v", m.Text, err)
	}
}

func TestBufferFillOverGRPC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Local(sdk.Plugin{Spec: sdk.Spec{Name: "b", Version: "0", Summary: "test", Buffer: &sdk.Stage{Summary: "b"}},
		NewBuffer: func() sdk.Buffer { return &fillBuffer{} }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	if err := c.Buffer().Open(ctx, OpenRequest{}); err != nil {
		t.Fatal(err)
	}
	m, err := c.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Fill == nil || *m.Fill != (sdk.Fill{Entries: 5, Bytes: 500, Fraction: 0.5}) {
		t.Fatalf("fill %+v", m.Fill)
	}
}

func TestMetricsOfAFrozenPluginEndAtTheDeadline(t *testing.T) {
	src := &timedSource{block: make(chan struct{})}
	defer close(src.block)
	c, err := Local(sdk.Plugin{Spec: sdk.Spec{Name: "t", Version: "0", Summary: "test", Source: &sdk.Stage{Summary: "s"}},
		NewSource: func() sdk.Source { return src }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	if err := c.Source().Open(context.Background(), OpenRequest{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Metrics(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Metrics returned after %v", d)
	}
}

type panicSource struct{ sdk.UnimplementedSource }

func (panicSource) Open(_ context.Context, req sdk.OpenRequest) error {
	req.Metrics.GaugeFunc("boom", "Panics.", func() (float64, bool) { panic("bad gauge") })
	return nil
}

func TestMetricsPanicIsAnErrorNotACrash(t *testing.T) {
	ctx := context.Background()
	c, err := Local(sdk.Plugin{Spec: sdk.Spec{Name: "t", Version: "0", Summary: "test", Source: &sdk.Stage{Summary: "s"}},
		NewSource: func() sdk.Source { return panicSource{} }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	if err := c.Source().Open(ctx, OpenRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Metrics(ctx); err == nil || !strings.Contains(err.Error(), "bad gauge") {
		t.Fatalf("err = %v, want the panic", err)
	}
	if _, err := c.Spec(ctx); err != nil {
		t.Fatalf("the plugin stopped serving after the panic: %v", err)
	}
}

// oldPlugin is the Plugin service of a plugin built before the Metrics call existed.
type oldPlugin struct {
	sluicev1.UnimplementedPluginServer
}

func TestMetricsOfAPluginWithoutTheCall(t *testing.T) {
	lis := transport.ListenPipe()
	srv := grpc.NewServer()
	sluicev1.RegisterPluginServer(srv, oldPlugin{})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	cc, err := grpc.NewClient("passthrough:///old", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	m, err := (&Conn{cc: cc}).Metrics(context.Background())
	if err != nil || m.Text != nil || m.Fill != nil {
		t.Fatalf("Metrics() = %+v, %v; want none and no error", m, err)
	}
}
