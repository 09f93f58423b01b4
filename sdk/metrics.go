package sdk

import (
	"bytes"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// Metrics is where a stage registers its own metrics: counters, gauges and histograms that it updates as it
// works. A stage gets one in OpenRequest.Metrics; register in Open and keep what the methods return. The
// host asks for the values when its /metrics endpoint is scraped and shows each metric as
// sluice_plugin_<plugin>_<name> (the plugin's name with "-" as "_"), with the labels pipeline, stage
// ("source", "buffer", "sink", "dead-letter sink") and plugin added:
//
//	skipped := req.Metrics.Counter("oversize_events_skipped_total", "Change events over 16 MB skipped (oversize: skip).")
//	…
//	skipped.Inc() // sluice_plugin_mongodb_oversize_events_skipped_total{pipeline="orders",stage="source",plugin="mongodb"} 1
//
// Follow Prometheus's naming conventions: a name of [a-zA-Z_][a-zA-Z0-9_]*, base units (seconds, bytes) in
// the name, counters ending in _total. Labels (Label) tell series of one name apart; a name always has the
// same label names, and label values should come from a small set (a topic, never a record key).
// Registering a name and label values again returns the metric registered first. A name registered as
// another kind or with other label names, an invalid name or label, a label named pipeline, stage or
// plugin, or a help text that differs from the first one's are programming errors: the method panics and
// says which metric and why.
//
// Updating a metric is a few atomic operations and never allocates: count per batch or per record as is
// convenient. A nil *Metrics works too: its metrics count but are never collected, for tests that call a
// stage's Open directly. Metrics is safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	mu      sync.Mutex
	series  map[string]any    // name and label values → *Counter, *Gauge, *Histogram or *gaugeFunc
	schemas map[string]schema // name → what it was first registered as
	fill    func() Fill
}

// Label is a label of a metric series: Name="topic", Value="orders".
type Label struct {
	Name, Value string
}

// Fill is how full a buffer is.
type Fill struct {
	// Entries and Bytes are the records and bytes the buffer holds: appended, and not yet acknowledged by
	// the sink.
	Entries, Bytes int64
	// Fraction is the fill against the buffer's bound, 0 to 1: the fuller of its bounds when it has several
	// (max_entries, max_bytes); 0 when it has none.
	Fraction float64
}

type kind int

const (
	kindCounter kind = iota
	kindGauge
	kindHistogram
)

func (k kind) String() string { return [...]string{"counter", "gauge", "histogram"}[k] }

type schema struct {
	kind   kind
	labels []string // sorted
	help   string
}

// NewMetrics returns an empty set of metrics. The SDK gives each stage its own; plugin tests use this to
// check what a stage reports, with Text.
func NewMetrics() *Metrics {
	return &Metrics{reg: prometheus.NewPedanticRegistry(), series: map[string]any{}, schemas: map[string]schema{}}
}

// Counter is a value that only goes up: events, records, bytes. Its name should end in _total.
type Counter struct{ c prometheus.Counter }

// Inc adds 1.
func (c *Counter) Inc() { c.c.Inc() }

// Add adds v, which must not be negative (it panics otherwise: a counter never goes down).
func (c *Counter) Add(v float64) { c.c.Add(v) }

// Value returns the current value.
func (c *Counter) Value() float64 { return valueOf(c.c) }

// Gauge is a value that goes up and down: a fill level, a number of connections.
type Gauge struct{ g prometheus.Gauge }

// Set sets the gauge to v.
func (g *Gauge) Set(v float64) { g.g.Set(v) }

// Add adds v (which may be negative).
func (g *Gauge) Add(v float64) { g.g.Add(v) }

// Value returns the current value.
func (g *Gauge) Value() float64 { return valueOf(g.g) }

// Histogram counts observations (durations, sizes) into buckets.
type Histogram struct{ h prometheus.Histogram }

// Observe records one observation.
func (h *Histogram) Observe(v float64) { h.h.Observe(v) }

// ObserveDuration records d in seconds, the base unit a histogram named …_seconds expects.
func (h *Histogram) ObserveDuration(d time.Duration) { h.h.Observe(d.Seconds()) }

// DefaultDurationBuckets are buckets for durations from a millisecond to a minute, in seconds.
var DefaultDurationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// Counter returns the counter name with labels, registering it on first use.
func (m *Metrics) Counter(name, help string, labels ...Label) *Counter {
	return m.register(name, help, kindCounter, labels, func(constLabels prometheus.Labels) (any, prometheus.Collector) {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: constLabels})
		return &Counter{c}, c
	}).(*Counter)
}

// Gauge returns the gauge name with labels, registering it on first use.
func (m *Metrics) Gauge(name, help string, labels ...Label) *Gauge {
	return m.register(name, help, kindGauge, labels, func(constLabels prometheus.Labels) (any, prometheus.Collector) {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: constLabels})
		return &Gauge{g}, g
	}).(*Gauge)
}

// GaugeFunc registers a gauge whose value f computes when the host collects metrics, for values that change
// with time alone, like the age of something. f returns the value and whether there is one: with false the
// series is left out of that collection. f is called from another goroutine than the stage's methods, and
// must be quick and safe for that. Registering the same name and labels again keeps the first f.
func (m *Metrics) GaugeFunc(name, help string, f func() (float64, bool), labels ...Label) {
	m.register(name, help, kindGauge, labels, func(constLabels prometheus.Labels) (any, prometheus.Collector) {
		g := &gaugeFunc{desc: prometheus.NewDesc(name, help, nil, constLabels), f: f}
		return g, g
	})
}

// Histogram returns the histogram name with labels and the given bucket upper bounds (increasing; nil:
// DefaultDurationBuckets), registering it on first use.
func (m *Metrics) Histogram(name, help string, buckets []float64, labels ...Label) *Histogram {
	if buckets == nil {
		buckets = DefaultDurationBuckets
	}
	for i := 1; i < len(buckets); i++ {
		if !(buckets[i] > buckets[i-1]) {
			panic(fmt.Errorf("sdk: metric %q: bucket bounds must increase, got %v", name, buckets))
		}
	}
	return m.register(name, help, kindHistogram, labels, func(constLabels prometheus.Labels) (any, prometheus.Collector) {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, ConstLabels: constLabels, Buckets: buckets})
		return &Histogram{h}, h
	}).(*Histogram)
}

// BufferFill registers how a buffer tells the host how full it is: f is called when the host collects
// metrics (every few seconds while the pipeline runs) and its answer becomes the host's
// sluice_buffer_entries, sluice_buffer_bytes and sluice_buffer_fill_ratio and the fill the pipeline's
// status shows. Only buffers use it; a later call replaces f. f is called from another goroutine than the
// stage's methods, and must be quick and safe for that.
func (m *Metrics) BufferFill(f func() Fill) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.fill = f
	m.mu.Unlock()
}

// Text returns the metrics in the Prometheus text exposition format (version 0.0.4), as the host receives
// them, and the buffer's fill when BufferFill was called.
func (m *Metrics) Text() ([]byte, *Fill, error) {
	if m == nil {
		return nil, nil, nil
	}
	m.mu.Lock()
	fillFn := m.fill
	m.mu.Unlock()
	families, err := m.reg.Gather()
	if err != nil {
		return nil, nil, fmt.Errorf("sdk: gathering metrics: %w", err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return nil, nil, fmt.Errorf("sdk: writing metric %s: %w", f.GetName(), err)
		}
	}
	var fill *Fill
	if fillFn != nil {
		f := fillFn()
		fill = &f
	}
	return buf.Bytes(), fill, nil
}

var (
	metricNameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	labelNameRE  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// ReservedLabels are the label names the host adds to every plugin metric; a plugin cannot use them.
var ReservedLabels = []string{"pipeline", "stage", "plugin"}

// register returns the series name/labels, creating it with create when it is new.
func (m *Metrics) register(name, help string, k kind, labels []Label, create func(prometheus.Labels) (any, prometheus.Collector)) any {
	if err := checkMetric(name, help, labels); err != nil {
		panic(err)
	}
	constLabels := make(prometheus.Labels, len(labels))
	names := make([]string, 0, len(labels))
	for _, l := range labels {
		constLabels[l.Name] = l.Value
		names = append(names, l.Name)
	}
	slices.Sort(names)
	if m == nil {
		v, _ := create(constLabels)
		return v
	}
	key := seriesKey(name, labels)
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.series[key]; ok {
		if s := m.schemas[name]; s.kind != k {
			panic(fmt.Errorf("sdk: metric %q is a %s, registered again as a %s", name, s.kind, k))
		}
		return v
	}
	if s, ok := m.schemas[name]; ok {
		switch {
		case s.kind != k:
			panic(fmt.Errorf("sdk: metric %q is a %s, registered again as a %s", name, s.kind, k))
		case !slices.Equal(s.labels, names):
			panic(fmt.Errorf("sdk: metric %q has labels %v, registered again with %v", name, s.labels, names))
		case s.help != help:
			panic(fmt.Errorf("sdk: metric %q has help %q, registered again with %q", name, s.help, help))
		}
	}
	v, c := create(constLabels)
	if err := m.reg.Register(c); err != nil {
		panic(fmt.Errorf("sdk: metric %q: %w", name, err))
	}
	m.series[key] = v
	m.schemas[name] = schema{kind: k, labels: names, help: help}
	return v
}

func checkMetric(name, help string, labels []Label) error {
	if !metricNameRE.MatchString(name) {
		return fmt.Errorf("sdk: metric name %q is not valid: want letters, digits and _, not starting with a digit", name)
	}
	if strings.TrimSpace(help) == "" {
		return fmt.Errorf("sdk: metric %q has no help text: say what it counts, and in which unit", name)
	}
	seen := map[string]bool{}
	for _, l := range labels {
		switch {
		case !labelNameRE.MatchString(l.Name) || strings.HasPrefix(l.Name, "__"):
			return fmt.Errorf("sdk: metric %q: label name %q is not valid: want letters, digits and _, not starting with a digit or __", name, l.Name)
		case slices.Contains(ReservedLabels, l.Name):
			return fmt.Errorf("sdk: metric %q: label %q is reserved: the host adds pipeline, stage and plugin itself", name, l.Name)
		case seen[l.Name]:
			return fmt.Errorf("sdk: metric %q: label %q given twice", name, l.Name)
		}
		seen[l.Name] = true
	}
	return nil
}

// seriesKey identifies a series by its name and label values, whatever the order of the labels.
func seriesKey(name string, labels []Label) string {
	sorted := slices.Clone(labels)
	slices.SortFunc(sorted, func(a, b Label) int { return strings.Compare(a.Name, b.Name) })
	var b strings.Builder
	b.WriteString(name)
	for _, l := range sorted {
		b.WriteByte(0)
		b.WriteString(l.Name)
		b.WriteByte(0)
		b.WriteString(l.Value)
	}
	return b.String()
}

// gaugeFunc is a gauge computed at collection, left out when its func says there is no value.
type gaugeFunc struct {
	desc *prometheus.Desc
	f    func() (float64, bool)
}

func (g *gaugeFunc) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g *gaugeFunc) Collect(ch chan<- prometheus.Metric) {
	if v, ok := g.f(); ok {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v)
	}
}

// valueOf reads a counter's or gauge's value.
func valueOf(m prometheus.Metric) float64 {
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		return math.NaN()
	}
	switch {
	case out.Counter != nil:
		return out.Counter.GetValue()
	case out.Gauge != nil:
		return out.Gauge.GetValue()
	}
	return math.NaN()
}
