package metrics

import (
	"bytes"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/sluicehq/sluice/runtime/pipeline"
)

// reports is a collector of fixed plugin reports, as if the plugins of running pipelines had sent them.
type reports struct {
	c  *pluginCollector
	in []report
}

type report struct {
	pipeline string
	stage    pipeline.StageMetrics
}

func (r reports) Describe(chan<- *prometheus.Desc) {}

func (r reports) Collect(ch chan<- prometheus.Metric) {
	families := map[string]*family{}
	for _, in := range r.in {
		r.c.stage(ch, families, in.pipeline, in.stage)
	}
	r.c.r.pluginErrors.Collect(ch)
}

func convert(t *testing.T, in ...report) string {
	t.Helper()
	var logs bytes.Buffer
	reg := New(Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	pr := prometheus.NewPedanticRegistry()
	pr.MustRegister(reports{c: &pluginCollector{r: reg}, in: in})
	mfs, err := pr.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var out bytes.Buffer
	enc := expfmt.NewEncoder(&out, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return out.String() + "\n--- log\n" + logs.String()
}

func TestPluginMetricTypes(t *testing.T) {
	text := `# HELP commit_seconds Commit time.
# TYPE commit_seconds histogram
commit_seconds_bucket{le="0.1"} 1
commit_seconds_bucket{le="1"} 3
commit_seconds_bucket{le="+Inf"} 4
commit_seconds_sum 7.5
commit_seconds_count 4
# HELP rpc_seconds RPC time.
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} 0.2
rpc_seconds_sum 3
rpc_seconds_count 10
# TYPE things untyped
things{kind="a"} 2
# HELP fill Fill.
# TYPE fill gauge
fill 0.5
`
	got := convert(t, report{"orders", pipeline.StageMetrics{Role: "sink", Plugin: "my-sink", Text: []byte(text)}})
	for _, want := range []string{
		"# TYPE sluice_plugin_my_sink_commit_seconds histogram",
		`sluice_plugin_my_sink_commit_seconds_bucket{pipeline="orders",plugin="my-sink",stage="sink",le="0.1"} 1`,
		`sluice_plugin_my_sink_commit_seconds_bucket{pipeline="orders",plugin="my-sink",stage="sink",le="1"} 3`,
		`sluice_plugin_my_sink_commit_seconds_bucket{pipeline="orders",plugin="my-sink",stage="sink",le="+Inf"} 4`,
		`sluice_plugin_my_sink_commit_seconds_sum{pipeline="orders",plugin="my-sink",stage="sink"} 7.5`,
		"# TYPE sluice_plugin_my_sink_rpc_seconds summary",
		`sluice_plugin_my_sink_rpc_seconds{pipeline="orders",plugin="my-sink",stage="sink",quantile="0.5"} 0.2`,
		`sluice_plugin_my_sink_things{kind="a",pipeline="orders",plugin="my-sink",stage="sink"} 2`,
		`sluice_plugin_my_sink_fill{pipeline="orders",plugin="my-sink",stage="sink"} 0.5`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("lacks %q:\n%s", want, got)
		}
	}
}

func TestPluginMetricsThatCannotBeShown(t *testing.T) {
	got := convert(t,
		report{"a", pipeline.StageMetrics{Role: "source", Plugin: "p", Text: []byte("# TYPE x_total counter\nx_total 1\nhost{pipeline=\"evil\"} 3\n")}},
		// The same plugin in another pipeline reports x_total as a gauge: left out, the first one stays.
		report{"b", pipeline.StageMetrics{Role: "source", Plugin: "p", Text: []byte("# TYPE x_total gauge\nx_total 2\n")}},
		// Other labels under the same name: left out.
		report{"c", pipeline.StageMetrics{Role: "source", Plugin: "p", Text: []byte("# TYPE x_total counter\nx_total{k=\"v\"} 4\n")}},
		// Not the text format at all.
		report{"d", pipeline.StageMetrics{Role: "sink", Plugin: "q", Text: []byte("{\"json\": true}\n")}},
	)
	for _, want := range []string{
		`sluice_plugin_p_x_total{pipeline="a",plugin="p",stage="source"} 1`,
		`sluice_stage_metrics_errors_total{pipeline="d",plugin="q",stage="sink"} 1`,
		`label \"pipeline\" is the host's own`,
		"another stage reported it with another type or other labels",
		"not in the Prometheus text format",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("lacks %q:\n%s", want, got)
		}
	}
	shown, _, _ := strings.Cut(got, "\n--- log\n")
	for _, bad := range []string{`pipeline="b"`, `pipeline="c"`, "sluice_plugin_p_host", `"evil"`} {
		if strings.Contains(shown, bad) {
			t.Errorf("shows %q:\n%s", bad, shown)
		}
	}
}

func TestPluginSeriesAreBounded(t *testing.T) {
	var text strings.Builder
	text.WriteString("# TYPE n gauge\n")
	for i := range maxPluginSeries + 10 {
		text.WriteString("n{i=\"")
		text.WriteString(strconv.Itoa(i))
		text.WriteString("\"} 1\n")
	}
	got := convert(t, report{"a", pipeline.StageMetrics{Role: "source", Plugin: "p", Text: []byte(text.String())}})
	if n := strings.Count(got, "sluice_plugin_p_n{"); n != maxPluginSeries {
		t.Errorf("%d series shown, want %d", n, maxPluginSeries)
	}
	if !strings.Contains(got, "leaving the rest out") {
		t.Error("no warning about the series left out")
	}
}
