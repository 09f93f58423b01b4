package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/sdk/record"
)

func get(t *testing.T, h http.Handler, path string) (int, http.Header, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Header(), rec.Body.String()
}

func list(t *testing.T, h http.Handler) List {
	t.Helper()
	code, hdr, body := get(t, h, "/api/pipelines")
	if code != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/pipelines: %d %s\n%s", code, hdr.Get("Content-Type"), body)
	}
	var l List
	if err := json.Unmarshal([]byte(body), &l); err != nil {
		t.Fatalf("GET /api/pipelines: %v\n%s", err, body)
	}
	return l
}

func byID(l List, id string) *Pipeline {
	for i := range l.Pipelines {
		if l.Pipelines[i].ID == id {
			return &l.Pipelines[i]
		}
	}
	return nil
}

// TestPipelinesOfRealRuns reads /api/pipelines while one pipeline runs and another has failed.
func TestPipelinesOfRealRuns(t *testing.T) {
	r := start(t, ordersConfig(2000), brokenConfig(t))
	srv := New(Options{Pipelines: r.statuses})
	waitFor(t, 10*time.Second, "orders running with records delivered and audit failed", func() bool {
		sts := r.statuses()
		o, a := find(sts, "orders"), find(sts, "audit")
		return o.State == pipeline.Running && o.Delivered > 0 && o.Buffer != nil && a.State == pipeline.Failed
	})
	first := list(t, srv)
	time.Sleep(600 * time.Millisecond)
	l := list(t, srv)
	if l.RateWindowSeconds != RateWindow.Seconds() || time.Since(l.Time) > time.Minute {
		t.Errorf("time %v, rate window %v", l.Time, l.RateWindowSeconds)
	}

	o := byID(l, "orders")
	if o == nil || len(l.Pipelines) != 2 {
		t.Fatalf("pipelines %+v, want orders and audit", l.Pipelines)
	}
	if o.State != "running" || o.Guarantee != "exactly-once" || o.Since == nil || o.Started == nil || o.LastError != nil {
		t.Errorf("orders: state %s, guarantee %s, since %v, started %v, last error %v", o.State, o.Guarantee, o.Since, o.Started, o.LastError)
	}
	var stages []string
	for _, s := range o.Stages {
		if s.Pid != nil {
			t.Errorf("stage %s %s has pid %d; it runs in-process", s.Role, s.Plugin, *s.Pid)
		}
		stages = append(stages, s.Role+" "+s.Plugin)
	}
	if got := strings.Join(stages, ", "); got != "source generate, buffer memory, sink discard" {
		t.Errorf("orders stages: %s", got)
	}
	for _, k := range []string{"source", "buffer"} {
		if p := o.Positions[k]; !strings.HasPrefix(p, "0x") || len(p) != 18 {
			t.Errorf("orders %s position %q, want 0x and 8 bytes of hex", k, p)
		}
	}
	if o.Delivered <= byID(first, "orders").Delivered || o.Read < o.Delivered {
		t.Errorf("orders counters did not move: read %d, delivered %d (before: %d)", o.Read, o.Delivered, byID(first, "orders").Delivered)
	}
	// The generate source paces itself at 2000/s; on a loaded machine it falls behind, never ahead.
	if o.DeliveredPerSecond == nil || *o.DeliveredPerSecond <= 0 || *o.DeliveredPerSecond > 2600 ||
		o.ReadPerSecond == nil || *o.ReadPerSecond <= 0 {
		t.Errorf("orders rates: read %v, delivered %v; want (0, 2600]", deref(o.ReadPerSecond), deref(o.DeliveredPerSecond))
	}
	// The generate source reports no event times and no snapshot: unknown, not zero.
	if o.LagSeconds != nil || o.LastEventTime != nil || o.Snapshot != nil {
		t.Errorf("orders: lag %v, last event %v, snapshot %+v; want null", deref(o.LagSeconds), o.LastEventTime, o.Snapshot)
	}
	// The memory buffer reports its fill: a few records at most, behind a sink that keeps up.
	if o.Buffer == nil || o.Buffer.Entries < 0 || o.Buffer.Entries > 2000 || o.Buffer.Bytes < 0 || (o.Buffer.Entries == 0) != (o.Buffer.Bytes == 0) {
		t.Errorf("orders: buffer %+v, want the memory buffer's fill", o.Buffer)
	}

	a := byID(l, "audit")
	if a.State != "failed" || a.Guarantee != "at-least-once" || a.LastError == nil ||
		!strings.Contains(*a.LastError, "sink file") || !strings.Contains(*a.LastError, "not a directory") {
		t.Errorf("audit: state %s, guarantee %s, last error %v", a.State, a.Guarantee, deref(a.LastError))
	}
	if len(a.Stages) != 0 || len(a.Positions) != 0 || a.Delivered != 0 || a.Started != nil {
		t.Errorf("audit: stages %+v, positions %v, delivered %d, started %v", a.Stages, a.Positions, a.Delivered, a.Started)
	}
	// The JSON keeps unknown values as null, and every key is there.
	_, _, body := get(t, srv, "/api/pipelines")
	for _, k := range []string{`"lag_seconds": null`, `"buffer": null`, `"last_error": null`, `"pid": null`, `"snapshot": null`} {
		if !strings.Contains(body, k) {
			t.Errorf("body lacks %s:\n%s", k, body)
		}
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestReadyz(t *testing.T) {
	st := func(id string, s pipeline.State, err string) pipeline.Status {
		return pipeline.Status{ID: id, State: s, LastError: err}
	}
	for _, tt := range []struct {
		name string
		sts  []pipeline.Status
		code int
		body string
	}{
		{"no pipelines", nil, 200, "ready\n"},
		{"running and completed", []pipeline.Status{st("a", pipeline.Running, ""), st("b", pipeline.Completed, "")}, 200, "ready\n"},
		{"standby", []pipeline.Status{st("a", pipeline.Running, ""), st("b", pipeline.Standby, "")}, 200, "ready\n"},
		{"starting", []pipeline.Status{st("a", pipeline.Running, ""), st("b", pipeline.Starting, "")}, 503,
			"not ready\npipeline b: starting\n"},
		{"restarting and stopped", []pipeline.Status{st("a", pipeline.Restarting, "sink kafka (pid 7): connection refused"),
			st("b", pipeline.Stopped, "")}, 503,
			"not ready\npipeline a: restarting: sink kafka (pid 7): connection refused\npipeline b: stopped\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := New(Options{Pipelines: func() []pipeline.Status { return tt.sts }})
			code, _, body := get(t, srv, "/readyz")
			if code != tt.code || body != tt.body {
				t.Errorf("GET /readyz = %d %q, want %d %q", code, body, tt.code, tt.body)
			}
		})
	}
}

// TestReadyzOfRealRuns: ready once the pipeline runs, not ready when one fails.
func TestReadyzOfRealRuns(t *testing.T) {
	r := start(t, ordersConfig(500))
	srv := New(Options{Pipelines: r.statuses})
	waitFor(t, 10*time.Second, "/readyz to answer 200", func() bool {
		code, _, _ := get(t, srv, "/readyz")
		return code == http.StatusOK
	})
	r2 := start(t, brokenConfig(t))
	both := func() []pipeline.Status { return append(r.statuses(), r2.statuses()...) }
	srv = New(Options{Pipelines: both})
	waitFor(t, 10*time.Second, "audit to fail", func() bool { return find(both(), "audit").State == pipeline.Failed })
	code, _, body := get(t, srv, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "pipeline audit: failed: sink file") {
		t.Errorf("GET /readyz = %d %q", code, body)
	}
}

func TestHealthzAndMetrics(t *testing.T) {
	none := func() []pipeline.Status { return nil }
	srv := New(Options{Pipelines: none})
	if code, _, body := get(t, srv, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("GET /healthz = %d %q", code, body)
	}
	if code, _, body := get(t, srv, "/metrics"); code != 404 || !strings.Contains(body, "no metrics") {
		t.Errorf("GET /metrics without a handler = %d %q", code, body)
	}
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "# HELP sluice_test a test\nsluice_test 1\n")
	})
	srv = New(Options{Pipelines: none, Metrics: metrics})
	if code, _, body := get(t, srv, "/metrics"); code != 200 || body != "# HELP sluice_test a test\nsluice_test 1\n" {
		t.Errorf("GET /metrics = %d %q", code, body)
	}
	if code, _, _ := get(t, srv, "/nothing"); code != 404 {
		t.Errorf("GET /nothing = %d, want 404", code)
	}
}

func TestPageFiles(t *testing.T) {
	srv := New(Options{Pipelines: func() []pipeline.Status { return nil }})
	for path, want := range map[string]string{"/": "text/html", "/status.js": "text/javascript", "/status.css": "text/css"} {
		code, hdr, body := get(t, srv, path)
		if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), want) || len(body) < 100 {
			t.Errorf("GET %s = %d %s (%d bytes)", path, code, hdr.Get("Content-Type"), len(body))
		}
		if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "http") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
	// Nothing the page loads comes from elsewhere.
	for _, path := range []string{"/", "/status.js", "/status.css"} {
		_, _, body := get(t, srv, path)
		if strings.Contains(body, "http://") || strings.Contains(body, "https://") || strings.Contains(body, "//cdn") {
			t.Errorf("%s refers to another site", path)
		}
	}
}

// TestServe serves on a real socket: loopback hosts only, and it stops with its context.
func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Options{Pipelines: func() []pipeline.Status { return nil }, SampleEvery: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	url := "http://" + ln.Addr().String()
	for _, tt := range []struct {
		host string
		code int
	}{{"", 200}, {"localhost:7584", 200}, {"[::1]:7584", 200}, {"LOCALHOST", 200}, {"evil.example:7584", 403}, {"10.0.0.1", 403}} {
		req, _ := http.NewRequest(http.MethodGet, url+"/healthz", nil)
		if tt.host != "" {
			req.Host = tt.host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.code {
			t.Errorf("Host %q: %d %s, want %d", tt.host, resp.StatusCode, body, tt.code)
		}
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context was cancelled")
	}
	if _, err := http.Get(url + "/healthz"); err == nil {
		t.Error("still serving after Serve returned")
	}
}

func TestServeFailsWithItsListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	err = New(Options{Pipelines: func() []pipeline.Status { return nil }}).Serve(context.Background(), ln)
	if err == nil || !errors.Is(err, net.ErrClosed) || !strings.Contains(err.Error(), "serving HTTP on 127.0.0.1:") {
		t.Errorf("Serve on a closed listener: %v", err)
	}
}

func TestSamplerRates(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	st := func(read, delivered int64) []pipeline.Status {
		return []pipeline.Status{{ID: "p", State: pipeline.Running, Read: read, Delivered: delivered}}
	}
	var s Sampler
	v := s.Observe(t0, st(0, 0))
	if v[0].ReadPerSecond != nil || v[0].DeliveredPerSecond != nil {
		t.Fatalf("first observation has rates %v %v", *v[0].ReadPerSecond, *v[0].DeliveredPerSecond)
	}
	if v = s.Observe(t0.Add(100*time.Millisecond), st(500, 400)); v[0].ReadPerSecond != nil {
		t.Errorf("a rate over 100ms: %v", *v[0].ReadPerSecond)
	}
	v = s.Observe(t0.Add(time.Second), st(1000, 900))
	if *v[0].ReadPerSecond != 1000 || *v[0].DeliveredPerSecond != 900 {
		t.Errorf("after 1s: read %v/s delivered %v/s, want 1000 and 900", *v[0].ReadPerSecond, *v[0].DeliveredPerSecond)
	}
	// Samples older than the window are dropped: the rate is over the last RateWindow only.
	for i := 2; i <= 10; i++ {
		v = s.Observe(t0.Add(time.Duration(i)*time.Second), st(1000+int64(i-1)*100, 900))
	}
	if got := *v[0].ReadPerSecond; got != 100 {
		t.Errorf("read rate after slowing to 100/s for 9s = %v", got)
	}
	if got := *v[0].DeliveredPerSecond; got != 0 {
		t.Errorf("delivered rate after stopping = %v", got)
	}
	// A new instance with the same id starts over.
	if v = s.Observe(t0.Add(11*time.Second), st(10, 10)); v[0].ReadPerSecond != nil {
		t.Errorf("rate across a counter reset: %v", *v[0].ReadPerSecond)
	}
	// A pipeline that disappears is forgotten.
	s.Observe(t0.Add(12*time.Second), nil)
	if len(s.hist) != 0 {
		t.Errorf("history kept for %d pipelines after they were gone", len(s.hist))
	}
}

func TestViewLagBufferSnapshot(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	st := pipeline.Status{ID: "p", State: pipeline.Running, LastEventTime: now.Add(-2500 * time.Millisecond),
		Buffer:   &pipeline.BufferFill{Entries: 10, Bytes: 2048, Fraction: 0.25},
		Snapshot: &pipeline.SnapshotProgress{Copied: 40, Estimated: 100},
		Stages:   []pipeline.StageStatus{{Role: "source", Plugin: "mongodb", Pid: 4242}}}
	v := view(now, st)
	if v.LagSeconds == nil || *v.LagSeconds != 2.5 || !v.LastEventTime.Equal(st.LastEventTime) {
		t.Errorf("lag %v, last event %v", deref(v.LagSeconds), v.LastEventTime)
	}
	if v.Buffer == nil || v.Buffer.Entries != 10 || v.Buffer.Bytes != 2048 || *v.Buffer.Fraction != 0.25 {
		t.Errorf("buffer %+v", v.Buffer)
	}
	if v.Snapshot == nil || v.Snapshot.Copied != 40 || *v.Snapshot.Estimated != 100 {
		t.Errorf("snapshot %+v", v.Snapshot)
	}
	if *v.Stages[0].Pid != 4242 {
		t.Errorf("pid %v", v.Stages[0].Pid)
	}
	// Unbounded buffer, no estimate: null, not 0. A finished pipeline has no lag.
	st.State, st.Buffer.Fraction, st.Snapshot.Estimated = pipeline.Completed, 0, 0
	v = view(now, st)
	if v.LagSeconds != nil || v.Buffer.Fraction != nil || v.Snapshot.Estimated != nil {
		t.Errorf("lag %v, fraction %v, estimated %v; want null", deref(v.LagSeconds), deref(v.Buffer.Fraction), deref(v.Snapshot.Estimated))
	}
}

// TestLease: /api/pipelines says which instance holds each pipeline's lease, since when and with which
// token, whether it is the instance answering, and which instances are live; without cluster: the lease
// and the instances are null.
func TestLease(t *testing.T) {
	since := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	sts := []pipeline.Status{
		{ID: "orders", State: pipeline.Running, Lease: &pipeline.LeaseStatus{Instance: "etl-1", Since: since, Token: 1764504000123, Here: true}},
		{ID: "audit", State: pipeline.Standby, Lease: &pipeline.LeaseStatus{Instance: "etl-2", Since: since, Token: 17}},
		{ID: "billing", State: pipeline.Standby, Lease: &pipeline.LeaseStatus{}},
	}
	srv := New(Options{Pipelines: func() []pipeline.Status { return sts }, Instance: "etl-1",
		Instances: func() []string { return []string{"etl-1", "etl-2"} }})
	code, _, body := get(t, srv, "/api/pipelines")
	if code != 200 {
		t.Fatalf("GET /api/pipelines = %d %s", code, body)
	}
	var l struct {
		Instance  string            `json:"instance"`
		Instances []string          `json:"instances"`
		Pipelines []json.RawMessage `json:"pipelines"`
	}
	if err := json.Unmarshal([]byte(body), &l); err != nil {
		t.Fatal(err)
	}
	if l.Instance != "etl-1" || strings.Join(l.Instances, ",") != "etl-1,etl-2" {
		t.Errorf("instance %q, instances %v", l.Instance, l.Instances)
	}
	for i, want := range []string{
		`"lease":{"instance":"etl-1","since":"2026-11-30T12:00:00Z","token":1764504000123,"here":true}`,
		`"lease":{"instance":"etl-2","since":"2026-11-30T12:00:00Z","token":17,"here":false}`,
		`"lease":{"instance":null,"since":null,"token":null,"here":false}`,
	} {
		var compact bytes.Buffer
		if err := json.Compact(&compact, l.Pipelines[i]); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(compact.String(), want) {
			t.Errorf("pipeline %d: %s\nwant %s", i, compact.String(), want)
		}
	}
	srv = New(Options{Pipelines: func() []pipeline.Status { return sts[:1:1] }})
	sts[0].Lease = nil
	_, _, body = get(t, srv, "/api/pipelines")
	if !strings.Contains(body, `"instances": null`) || !strings.Contains(body, `"lease": null`) {
		t.Errorf("without cluster:\n%s", body)
	}
}

func TestRenderPosition(t *testing.T) {
	for _, tt := range []struct {
		pos  record.Position
		want string
	}{
		{nil, "none"},
		{record.Position{0, 0, 0, 0, 0, 0, 3, 0xe7}, "0x00000000000003e7"},
		{record.Position("1700000000000-0"), "1700000000000-0"},
		{record.Position("ab\ncd"), "0x61620a6364"},
		{record.Position{0xff, 0xfe}, "0xfffe"},
	} {
		if got := RenderPosition(tt.pos); got != tt.want {
			t.Errorf("RenderPosition(%x) = %q, want %q", []byte(tt.pos), got, tt.want)
		}
	}
}

// A position the plugin rendered is shown as it rendered it; the others as RenderPosition does.
func TestViewUsesPluginRendering(t *testing.T) {
	st := pipeline.Status{ID: "p", Positions: map[string]record.Position{
		"source": {0, 0, 0, 0, 0, 0, 3, 0xe7}, "buffer": record.Position("1700000000000-0")},
		PositionTexts: map[string]string{"source": "2026-11-30T12:00:00Z #3 (resume token 82…)"}}
	got := view(time.Now(), st).Positions
	want := map[string]string{"source": "2026-11-30T12:00:00Z #3 (resume token 82…)", "buffer": "1700000000000-0"}
	if !maps.Equal(got, want) {
		t.Fatalf("positions %v, want %v", got, want)
	}
}
