package metrics

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/sdk"
)

// PluginPrefix starts the name of every metric a plugin reports: sluice_plugin_<plugin>_<name>.
const PluginPrefix = "sluice_plugin_"

// maxPluginSeries bounds the series one stage's plugin may report per scrape; the rest are left out.
const maxPluginSeries = 10000

// hostLabels are the labels the host adds to every plugin metric, first.
var hostLabels = []string{"pipeline", "stage", "plugin"}

// pluginCollector exposes what the plugins of the tracked pipelines report, collected at each scrape. It
// is unchecked (it describes nothing): which metrics plugins have is known only when they answer.
type pluginCollector struct{ r *Registry }

func (c *pluginCollector) Describe(chan<- *prometheus.Desc) {}

// family is one plugin metric as the first stage that reported it described it; series of another type
// or other labels under the same name are left out.
type family struct {
	desc   *prometheus.Desc
	typ    dto.MetricType
	labels []string // the plugin's own label names, sorted
}

func (c *pluginCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.r
	families := map[string]*family{}
	byID := r.collectPlugins()
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		for _, sm := range byID[id] {
			if sm.Err != nil {
				r.pluginErrors.WithLabelValues(id, sm.Role, sm.Plugin).Inc()
				r.log.Debug("a plugin did not report its metrics", "pipeline", id, "stage", sm.Role, "plugin", sm.Plugin, "err", sm.Err)
				continue
			}
			if len(sm.Text) == 0 {
				continue
			}
			c.stage(ch, families, id, sm)
		}
	}
	r.pluginErrors.Collect(ch)
}

// stage converts one stage's report into metrics with the host's names and labels.
func (c *pluginCollector) stage(ch chan<- prometheus.Metric, families map[string]*family, id string, sm pipeline.StageMetrics) {
	r := c.r
	parser := expfmt.NewTextParser(model.LegacyValidation)
	parsed, err := parser.TextToMetricFamilies(bytes.NewReader(sm.Text))
	if err != nil {
		r.pluginErrors.WithLabelValues(id, sm.Role, sm.Plugin).Inc()
		r.warnOnce("parse\x00"+sm.Plugin, "a plugin's metrics are not in the Prometheus text format; leaving them out",
			"plugin", sm.Plugin, "pipeline", id, "stage", sm.Role, "err", err)
		return
	}
	names := make([]string, 0, len(parsed))
	for name := range parsed {
		names = append(names, name)
	}
	slices.Sort(names)
	prefix := PluginPrefix + strings.ReplaceAll(sm.Plugin, "-", "_") + "_"
	series := 0
	for _, name := range names {
		mf := parsed[name]
		full := prefix + name
		for _, m := range mf.GetMetric() {
			if series >= maxPluginSeries {
				r.warnOnce("limit\x00"+sm.Plugin, fmt.Sprintf("a plugin reported more than %d series; leaving the rest out", maxPluginSeries),
					"plugin", sm.Plugin, "pipeline", id, "stage", sm.Role)
				return
			}
			labels, values, err := pluginLabels(m)
			if err != nil {
				r.warnOnce("label\x00"+full, "leaving a plugin metric out", "metric", full, "plugin", sm.Plugin, "err", err)
				continue
			}
			f := families[full]
			if f == nil {
				f = &family{typ: mf.GetType(), labels: labels,
					desc: prometheus.NewDesc(full, mf.GetHelp(), append(slices.Clone(hostLabels), labels...), nil)}
				families[full] = f
			}
			if f.typ != mf.GetType() || !slices.Equal(f.labels, labels) {
				r.warnOnce("clash\x00"+full, "leaving a plugin metric out: another stage reported it with another type or other labels",
					"metric", full, "plugin", sm.Plugin, "pipeline", id, "stage", sm.Role)
				continue
			}
			lvs := append([]string{id, sm.Role, sm.Plugin}, values...)
			out, err := constMetric(f, m, lvs)
			if err != nil {
				r.warnOnce("value\x00"+full, "leaving a plugin metric out", "metric", full, "plugin", sm.Plugin, "err", err)
				continue
			}
			ch <- out
			series++
		}
	}
}

// pluginLabels returns a plugin series' label names, sorted, and their values in that order. The host's
// own labels are refused: the SDK does not let a plugin use them, so another plugin sent them.
func pluginLabels(m *dto.Metric) (names, values []string, err error) {
	pairs := slices.Clone(m.GetLabel())
	slices.SortFunc(pairs, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
	for _, l := range pairs {
		if slices.Contains(sdk.ReservedLabels, l.GetName()) {
			return nil, nil, fmt.Errorf("label %q is the host's own", l.GetName())
		}
		names = append(names, l.GetName())
		values = append(values, l.GetValue())
	}
	return names, values, nil
}

// constMetric is m, of family f, as a metric with label values lvs.
func constMetric(f *family, m *dto.Metric, lvs []string) (prometheus.Metric, error) {
	switch f.typ {
	case dto.MetricType_COUNTER:
		return prometheus.NewConstMetric(f.desc, prometheus.CounterValue, m.GetCounter().GetValue(), lvs...)
	case dto.MetricType_GAUGE:
		return prometheus.NewConstMetric(f.desc, prometheus.GaugeValue, m.GetGauge().GetValue(), lvs...)
	case dto.MetricType_UNTYPED:
		return prometheus.NewConstMetric(f.desc, prometheus.UntypedValue, m.GetUntyped().GetValue(), lvs...)
	case dto.MetricType_HISTOGRAM:
		h := m.GetHistogram()
		buckets := make(map[float64]uint64, len(h.GetBucket()))
		for _, b := range h.GetBucket() {
			if !math.IsInf(b.GetUpperBound(), +1) { // +Inf is the count
				buckets[b.GetUpperBound()] = b.GetCumulativeCount()
			}
		}
		return prometheus.NewConstHistogram(f.desc, h.GetSampleCount(), h.GetSampleSum(), buckets, lvs...)
	case dto.MetricType_SUMMARY:
		s := m.GetSummary()
		quantiles := make(map[float64]float64, len(s.GetQuantile()))
		for _, q := range s.GetQuantile() {
			quantiles[q.GetQuantile()] = q.GetValue()
		}
		return prometheus.NewConstSummary(f.desc, s.GetSampleCount(), s.GetSampleSum(), quantiles, lvs...)
	}
	return nil, fmt.Errorf("metric type %s is not supported", f.typ)
}
