package sdk

import (
	"fmt"
	"strings"
	"testing"
)

func TestMetricsText(t *testing.T) {
	m := NewMetrics()
	c := m.Counter("events_skipped_total", "Events skipped.")
	c.Inc()
	c.Add(2)
	m.Counter("bytes_total", "Bytes written.", Label{"topic", "a"}).Add(10)
	m.Counter("bytes_total", "Bytes written.", Label{"topic", "b"}).Add(20)
	g := m.Gauge("connections", "Open connections.")
	g.Set(4)
	g.Add(-1)
	h := m.Histogram("commit_seconds", "Commit time.", []float64{0.1, 1})
	h.Observe(0.05)
	h.Observe(0.5)
	known := false
	m.GaugeFunc("token_age_seconds", "Age of the token.", func() (float64, bool) { return 7, known })
	m.BufferFill(func() Fill { return Fill{Entries: 3, Bytes: 300, Fraction: 0.25} })

	text, fill, err := m.Text()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# HELP events_skipped_total Events skipped.\n# TYPE events_skipped_total counter\nevents_skipped_total 3\n",
		`bytes_total{topic="a"} 10`, `bytes_total{topic="b"} 20`,
		"# TYPE connections gauge\nconnections 3\n",
		"# TYPE commit_seconds histogram\n", `commit_seconds_bucket{le="0.1"} 1`, `commit_seconds_bucket{le="1"} 2`,
		"commit_seconds_count 2",
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(string(text), "token_age_seconds ") {
		t.Errorf("a GaugeFunc without a value was collected:\n%s", text)
	}
	if fill == nil || *fill != (Fill{Entries: 3, Bytes: 300, Fraction: 0.25}) {
		t.Errorf("fill = %+v", fill)
	}
	known = true
	if text, _, _ = m.Text(); !strings.Contains(string(text), "token_age_seconds 7\n") {
		t.Errorf("GaugeFunc with a value not collected:\n%s", text)
	}
	if c.Value() != 3 || g.Value() != 3 {
		t.Errorf("values: counter %v, gauge %v", c.Value(), g.Value())
	}
}

func TestMetricsRegisterAgainReturnsTheSame(t *testing.T) {
	m := NewMetrics()
	a := m.Counter("x_total", "X.", Label{"k", "1"}, Label{"j", "2"})
	b := m.Counter("x_total", "X.", Label{"j", "2"}, Label{"k", "1"}) // label order does not matter
	if a != b {
		t.Fatal("registering the same counter again returned another one")
	}
	a.Inc()
	if b.Value() != 1 {
		t.Fatalf("value %v", b.Value())
	}
	if m.Counter("x_total", "X.", Label{"k", "2"}, Label{"j", "2"}) == a {
		t.Fatal("other label values returned the same counter")
	}
}

func TestMetricsMisuse(t *testing.T) {
	for _, tt := range []struct {
		name string
		do   func(m *Metrics)
		want string
	}{
		{"bad name", func(m *Metrics) { m.Counter("9lives", "h") }, `metric name "9lives" is not valid`},
		{"dash", func(m *Metrics) { m.Gauge("a-b", "h") }, `metric name "a-b" is not valid`},
		{"no help", func(m *Metrics) { m.Counter("a_total", " ") }, `metric "a_total" has no help text`},
		{"reserved label", func(m *Metrics) { m.Counter("a_total", "h", Label{"pipeline", "x"}) }, `label "pipeline" is reserved`},
		{"bad label", func(m *Metrics) { m.Counter("a_total", "h", Label{"__x", "x"}) }, `label name "__x" is not valid`},
		{"label twice", func(m *Metrics) { m.Counter("a_total", "h", Label{"x", "1"}, Label{"x", "2"}) }, `label "x" given twice`},
		{"other kind", func(m *Metrics) { m.Counter("a", "h"); m.Gauge("a", "h") }, `metric "a" is a counter, registered again as a gauge`},
		{"other kind, other labels", func(m *Metrics) { m.Counter("a", "h"); m.Histogram("a", "h", nil, Label{"k", "v"}) }, `metric "a" is a counter, registered again as a histogram`},
		{"other labels", func(m *Metrics) { m.Counter("a", "h", Label{"k", "v"}); m.Counter("a", "h") }, `metric "a" has labels [k], registered again with []`},
		{"other help", func(m *Metrics) { m.Counter("a", "h", Label{"k", "1"}); m.Counter("a", "g", Label{"k", "2"}) }, `metric "a" has help "h", registered again with "g"`},
		{"bad buckets", func(m *Metrics) { m.Histogram("a", "h", []float64{2, 1}) }, `metric "a"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatal("no panic")
				}
				if msg := fmt.Sprint(r); !strings.Contains(msg, tt.want) {
					t.Fatalf("panic %q, want it to contain %q", msg, tt.want)
				}
			}()
			tt.do(NewMetrics())
		})
	}
}

func TestNilMetricsCountButCollectNothing(t *testing.T) {
	var m *Metrics
	c := m.Counter("a_total", "A.")
	c.Add(2)
	m.Gauge("g", "G.").Set(1)
	m.Histogram("h_seconds", "H.", nil).Observe(1)
	m.GaugeFunc("f", "F.", func() (float64, bool) { return 1, true })
	m.BufferFill(func() Fill { return Fill{} })
	if c.Value() != 2 {
		t.Fatalf("value %v", c.Value())
	}
	if text, fill, err := m.Text(); text != nil || fill != nil || err != nil {
		t.Fatalf("Text() = %q, %v, %v", text, fill, err)
	}
	// Misuse still panics, so that a plugin's tests catch it.
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for an invalid name")
		}
	}()
	m.Counter("no good", "h")
}
