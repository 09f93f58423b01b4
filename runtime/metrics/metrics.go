// Package metrics is sluice's Prometheus registry: the host's own metrics per pipeline and stage (records
// and bytes, filtered records, dead letters, redeliveries, batch sizes, end-to-end latency, source lag,
// buffer fill, restarts by cause, pipeline state), the metrics plugins report about their stages through
// the SDK, and Go's runtime and process metrics. Handler serves them all, for /metrics.
//
// Wiring, for the command that runs pipelines:
//
//	reg := metrics.New(metrics.Options{Logger: logger})
//	cfg.Meter = reg.Meter(cfg.ID) // per pipeline, before pipeline.New
//	p := pipeline.New(cfg, catalog, store, logger)
//	reg.Track(p)                  // then Run it; reg.Forget(cfg.ID) when a reload removes it
//	mux.Handle("/metrics", reg.Handler())
//
// The README's "Metrics" section lists every metric.
package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/runtime/pipeline"
)

// DefaultPluginTimeout bounds how long a scrape waits for each plugin's metrics: a frozen plugin's are
// left out of that scrape, the others are not held up.
const DefaultPluginTimeout = time.Second

// Options configure a Registry.
type Options struct {
	// PluginTimeout bounds how long a scrape waits for each plugin (default DefaultPluginTimeout). Plugins
	// are asked all at once, so a scrape takes at most about this long.
	PluginTimeout time.Duration
	// Logger receives a warning for plugin metrics that cannot be shown (invalid, or clashing with
	// another plugin's), once per metric; nil discards them.
	Logger *slog.Logger
}

// Buckets of the histograms.
var (
	// batchRecordBuckets: records per batch, 1 to 16384.
	batchRecordBuckets = prometheus.ExponentialBuckets(1, 4, 8)
	// batchByteBuckets: bytes per batch, 256 B to 64 MiB.
	batchByteBuckets = prometheus.ExponentialBuckets(256, 4, 10)
	// latencyBuckets: end-to-end latency, 5 ms to 10 min.
	latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
)

// Registry holds every metric sluice exposes. Create it with New; it is safe for concurrent use.
type Registry struct {
	reg     *prometheus.Registry
	timeout time.Duration
	log     *slog.Logger

	recordsRead, bytesRead       *prometheus.CounterVec
	recordsWritten, bytesWritten *prometheus.CounterVec
	laneWritten                  *prometheus.CounterVec
	filtered, deadLetters        *prometheus.CounterVec
	redelivered, restarts        *prometheus.CounterVec
	batchRecords, batchBytes     *prometheus.HistogramVec
	latency                      *prometheus.HistogramVec
	pluginErrors                 *prometheus.CounterVec
	leaseHeld                    *prometheus.GaugeVec
	leaseLost, takeovers         *prometheus.CounterVec
	takeoverGap                  *prometheus.HistogramVec
	instances                    prometheus.Gauge
	vecs                         []*prometheus.MetricVec // every vec above, to forget a pipeline

	mu        sync.Mutex
	pipelines map[string]*pipeline.Pipeline
	statuses  func() []pipeline.Status // when set, what the state gauges show (see Statuses)
	warned    map[string]bool          // plugin metrics already warned about
}

// New returns a registry with the host's metrics and Go's runtime and process metrics.
func New(opts Options) *Registry {
	if opts.PluginTimeout <= 0 {
		opts.PluginTimeout = DefaultPluginTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Registry{reg: prometheus.NewRegistry(), timeout: opts.PluginTimeout, log: opts.Logger,
		pipelines: map[string]*pipeline.Pipeline{}, warned: map[string]bool{}}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		r.reg.MustRegister(v)
		r.vecs = append(r.vecs, v.MetricVec)
		return v
	}
	histogram := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
		r.reg.MustRegister(v)
		r.vecs = append(r.vecs, v.MetricVec)
		return v
	}
	r.recordsRead = counter("sluice_records_read_total",
		"Records the host received from a stage (source or buffer), before transform steps.", "pipeline", "stage")
	r.bytesRead = counter("sluice_bytes_read_total",
		"Bytes of the records the host received from a stage (source or buffer), in the record wire encoding.", "pipeline", "stage")
	r.recordsWritten = counter("sluice_records_written_total",
		"Records a stage (buffer or sink) acknowledged as durable; records a sink rejected are not counted.", "pipeline", "stage")
	r.bytesWritten = counter("sluice_bytes_written_total",
		"Bytes of the batches a stage (buffer or sink) acknowledged as durable, in the record wire encoding.", "pipeline", "stage")
	r.laneWritten = counter("sluice_lane_records_written_total",
		"Records the sink of one lane of a pipeline with ordered: false acknowledged as durable (by lane, 0 to lanes-1).", "pipeline", "lane")
	r.filtered = counter("sluice_records_filtered_total",
		"Records the filter steps dropped, by step list (transforms or sink_transforms).", "pipeline", "steps")
	r.deadLetters = counter("sluice_dead_letters_total",
		"Records written to the dead-letter sink, by where they failed (source, transforms, sink_transforms, sink).", "pipeline", "origin")
	r.redelivered = counter("sluice_records_redelivered_total",
		"Records sent to a sink without atomic positions and not acknowledged before a failure: delivered again after the restart.", "pipeline")
	r.restarts = counter("sluice_pipeline_restarts_total",
		"Restarts after transient failures, by the stage at fault and the cause (crash, stall, unresponsive, open_timeout, error).", "pipeline", "stage", "cause")
	r.batchRecords = histogram("sluice_batch_records",
		"Records per batch the host received from a stage (source or buffer).", batchRecordBuckets, "pipeline", "stage")
	r.batchBytes = histogram("sluice_batch_bytes",
		"Bytes per batch the host received from a stage (source or buffer).", batchByteBuckets, "pipeline", "stage")
	r.latency = histogram("sluice_end_to_end_latency_seconds",
		"Time from the latest event time among a batch's records to the sink's acknowledgement, per batch; batches without event times are not observed.",
		latencyBuckets, "pipeline")
	// Counted while plugins are asked, during a scrape: the plugin collector exposes it after asking, so
	// that a scrape shows its own failures.
	r.pluginErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_stage_metrics_errors_total",
		Help: "Scrapes in which a stage's plugin did not report its metrics in time, or failed to."}, []string{"pipeline", "stage", "plugin"})
	r.vecs = append(r.vecs, r.pluginErrors.MetricVec)
	r.leaseHeld = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_lease_held",
		Help: "1 while this instance holds the pipeline's lease (cluster:), 0 otherwise."}, []string{"pipeline"})
	r.reg.MustRegister(r.leaseHeld)
	r.vecs = append(r.vecs, r.leaseHeld.MetricVec)
	r.leaseLost = counter("sluice_lease_lost_total",
		"Times this instance lost the pipeline's lease (could not renew it in time, or found it taken) and stopped the pipeline.", "pipeline")
	r.takeovers = counter("sluice_lease_takeovers_total",
		"Times this instance took the pipeline over from an instance that had not released its lease (it died, froze, or lost Redis).", "pipeline")
	r.takeoverGap = histogram("sluice_lease_takeover_unrenewed_seconds",
		"At each takeover: how long the previous holder's lease had gone without a renewal (Redis clock); the lease TTL plus the time to notice.",
		latencyBuckets, "pipeline")
	r.instances = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_cluster_instances",
		Help: "Live instances sharing the pipelines (cluster:), as this instance last saw them."})
	r.reg.MustRegister(r.instances)
	r.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&statusCollector{r: r}, &pluginCollector{r: r})
	return r
}

// Meter returns the meter to set as the Config.Meter of pipeline id.
func (r *Registry) Meter(id string) pipeline.Meter {
	return &meter{r: r, id: id, latency: r.latency.WithLabelValues(id),
		redelivered: r.redelivered.WithLabelValues(id), stages: map[string]*stageMeter{}}
}

// Track adds p's state, lag, buffer fill and plugin metrics to every scrape, until Forget. A pipeline
// tracked again under the same id replaces the earlier one.
func (r *Registry) Track(p *pipeline.Pipeline) {
	id := p.Status().ID
	r.mu.Lock()
	r.pipelines[id] = p
	r.mu.Unlock()
}

// Forget removes every series of pipeline id (its counters start again from zero if it comes back).
func (r *Registry) Forget(id string) {
	r.mu.Lock()
	delete(r.pipelines, id)
	r.mu.Unlock()
	for _, v := range r.vecs {
		v.DeletePartialMatch(prometheus.Labels{"pipeline": id})
	}
}

// Statuses makes the state, lag and buffer gauges show what statuses returns rather than the tracked
// pipelines' own snapshots: a host sharing pipelines with others (cluster:) reports pipelines it does not
// hold as standby.
func (r *Registry) Statuses(statuses func() []pipeline.Status) {
	r.mu.Lock()
	r.statuses = statuses
	r.mu.Unlock()
}

// LeaseHeld sets whether this instance holds pipeline id's lease.
func (r *Registry) LeaseHeld(id string, held bool) {
	v := 0.0
	if held {
		v = 1
	}
	r.leaseHeld.WithLabelValues(id).Set(v)
}

// LeaseLost counts a lease of pipeline id this instance lost.
func (r *Registry) LeaseLost(id string) { r.leaseLost.WithLabelValues(id).Inc() }

// LeaseTakeover counts a takeover of pipeline id from a holder whose lease went unrenewed for unrenewed.
func (r *Registry) LeaseTakeover(id string, unrenewed time.Duration) {
	r.takeovers.WithLabelValues(id).Inc()
	r.takeoverGap.WithLabelValues(id).Observe(unrenewed.Seconds())
}

// Instances sets how many live instances share the pipelines.
func (r *Registry) Instances(n int) { r.instances.Set(float64(n)) }

// Handler serves the metrics in Prometheus's exposition formats, for /metrics. A plugin that cannot be
// shown is left out of a scrape (and logged); the rest is served.
func (r *Registry) Handler() http.Handler {
	return promhttp.InstrumentMetricHandler(r.reg, promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      errorLog{r.log},
	}))
}

// Gatherer returns the registry, to gather its metrics without HTTP.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// tracked returns the tracked pipelines, by id.
func (r *Registry) tracked() []*pipeline.Pipeline {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.pipelines))
	for id := range r.pipelines {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]*pipeline.Pipeline, len(ids))
	for i, id := range ids {
		out[i] = r.pipelines[id]
	}
	return out
}

// warnOnce logs a problem with a plugin metric the first time it is seen.
func (r *Registry) warnOnce(key, msg string, args ...any) {
	r.mu.Lock()
	seen := r.warned[key]
	r.warned[key] = true
	r.mu.Unlock()
	if !seen {
		r.log.Warn(msg, args...)
	}
}

// errorLog is promhttp's error log: problems serving a scrape.
type errorLog struct{ log *slog.Logger }

func (e errorLog) Println(v ...any) { e.log.Warn("serving metrics: " + fmt.Sprint(v...)) }

// meter is a pipeline's pipeline.Meter.
type meter struct {
	r           *Registry
	id          string
	latency     prometheus.Observer
	redelivered prometheus.Counter

	mu     sync.Mutex
	stages map[string]*stageMeter
}

func (m *meter) Stage(role string) pipeline.StageMeter {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.stages[role]; ok {
		return s
	}
	r := m.r
	s := &stageMeter{}
	// Sources are only read from, sinks only written to, buffers both.
	if role != "sink" && role != "dead-letter sink" {
		s.recordsRead, s.bytesRead = r.recordsRead.WithLabelValues(m.id, role), r.bytesRead.WithLabelValues(m.id, role)
		s.batchRecords, s.batchBytes = r.batchRecords.WithLabelValues(m.id, role), r.batchBytes.WithLabelValues(m.id, role)
	}
	if role != "source" {
		s.recordsWritten, s.bytesWritten = r.recordsWritten.WithLabelValues(m.id, role), r.bytesWritten.WithLabelValues(m.id, role)
	}
	m.stages[role] = s
	return s
}

// LaneWritten counts records the sink of lane lane wrote (pipeline.LaneMeter).
func (m *meter) LaneWritten(lane, n int) {
	m.r.laneWritten.WithLabelValues(m.id, strconv.Itoa(lane)).Add(float64(n))
}

func (m *meter) Filtered(steps string, n int) {
	m.r.filtered.WithLabelValues(m.id, steps).Add(float64(n))
}

func (m *meter) DeadLettered(origin string, n int) {
	m.r.deadLetters.WithLabelValues(m.id, origin).Add(float64(n))
}

func (m *meter) Redelivered(n int) { m.redelivered.Add(float64(n)) }

func (m *meter) Restarted(stage, cause string) {
	m.r.restarts.WithLabelValues(m.id, stage, cause).Inc()
}

func (m *meter) Latency(d time.Duration) { m.latency.Observe(d.Seconds()) }

// stageMeter is one stage's pipeline.StageMeter. Only stages that read (source, buffer) use the read
// side, only stages that write (buffer, sink) the written side.
type stageMeter struct {
	recordsRead, bytesRead, recordsWritten, bytesWritten prometheus.Counter
	batchRecords, batchBytes                             prometheus.Observer
}

func (s *stageMeter) Read(records, bytes int) {
	if s.recordsRead == nil {
		return
	}
	s.recordsRead.Add(float64(records))
	s.bytesRead.Add(float64(bytes))
	s.batchRecords.Observe(float64(records))
	s.batchBytes.Observe(float64(bytes))
}

func (s *stageMeter) Written(records, bytes int) {
	if s.recordsWritten == nil {
		return
	}
	s.recordsWritten.Add(float64(records))
	s.bytesWritten.Add(float64(bytes))
}

// statusCollector exposes what each tracked pipeline's Status says when scraped.
type statusCollector struct{ r *Registry }

var (
	stateDesc = prometheus.NewDesc("sluice_pipeline_state",
		"The pipeline's state: 1 for the state it is in, 0 for the others (starting, running, restarting, completed, stopped, failed, standby).",
		[]string{"pipeline", "state"}, nil)
	lagDesc = prometheus.NewDesc("sluice_source_lag_seconds",
		"Now minus the event time of the last record the source's next stage acknowledged (heartbeats included); absent until a record with an event time was.",
		[]string{"pipeline"}, nil)
	lastEventDesc = prometheus.NewDesc("sluice_source_last_event_timestamp_seconds",
		"The event time of the last record the source's next stage acknowledged, in seconds since the Unix epoch.",
		[]string{"pipeline"}, nil)
	bufferEntriesDesc = prometheus.NewDesc("sluice_buffer_entries",
		"Records the pipeline's buffer holds (appended, not yet acknowledged by the sink), as its plugin last reported.",
		[]string{"pipeline"}, nil)
	bufferBytesDesc = prometheus.NewDesc("sluice_buffer_bytes",
		"Bytes of the records the pipeline's buffer holds, as its plugin last reported.", []string{"pipeline"}, nil)
	bufferFillDesc = prometheus.NewDesc("sluice_buffer_fill_ratio",
		"How full the pipeline's buffer is against its bound, 0 to 1 (the fuller of its bounds); 0 when unbounded.",
		[]string{"pipeline"}, nil)
)

// states are every pipeline state, for the state gauge.
var states = []pipeline.State{pipeline.Starting, pipeline.Running, pipeline.Restarting, pipeline.Completed,
	pipeline.Stopped, pipeline.Failed, pipeline.Standby}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{stateDesc, lagDesc, lastEventDesc, bufferEntriesDesc, bufferBytesDesc, bufferFillDesc} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, st := range c.r.snapshots() {
		for _, s := range states {
			v := 0.0
			if st.State == s {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(stateDesc, prometheus.GaugeValue, v, st.ID, s.String())
		}
		if !st.LastEventTime.IsZero() {
			ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, max(0, now.Sub(st.LastEventTime).Seconds()), st.ID)
			ch <- prometheus.MustNewConstMetric(lastEventDesc, prometheus.GaugeValue,
				float64(st.LastEventTime.UnixNano())/1e9, st.ID)
		}
		if b := st.Buffer; b != nil {
			ch <- prometheus.MustNewConstMetric(bufferEntriesDesc, prometheus.GaugeValue, float64(b.Entries), st.ID)
			ch <- prometheus.MustNewConstMetric(bufferBytesDesc, prometheus.GaugeValue, float64(b.Bytes), st.ID)
			ch <- prometheus.MustNewConstMetric(bufferFillDesc, prometheus.GaugeValue, b.Fraction, st.ID)
		}
	}
}

// snapshots returns what the state gauges show: Statuses' function's answer, else the tracked pipelines'
// snapshots.
func (r *Registry) snapshots() []pipeline.Status {
	r.mu.Lock()
	statuses := r.statuses
	r.mu.Unlock()
	if statuses != nil {
		return statuses()
	}
	ps := r.tracked()
	out := make([]pipeline.Status, len(ps))
	for i, p := range ps {
		out[i] = p.Status()
	}
	return out
}

// collectPlugins asks every tracked pipeline's plugins for their metrics, all at once.
func (r *Registry) collectPlugins() map[string][]pipeline.StageMetrics {
	ps := r.tracked()
	out := make([][]pipeline.StageMetrics, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() { out[i] = p.CollectMetrics(context.Background(), r.timeout) })
	}
	wg.Wait()
	byID := make(map[string][]pipeline.StageMetrics, len(ps))
	for i, p := range ps {
		byID[p.Status().ID] = out[i]
	}
	return byID
}
