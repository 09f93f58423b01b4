package metrics

import (
	"context"
	"log/slog"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/runtime/plugin"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// holdSink accepts nothing until released: it keeps the pipeline, and so its source's plugin, running.
type holdSink struct {
	sdk.UnimplementedSink
	writing chan struct{} // closed at the first Write
	release chan struct{}
	once    *sync.Once
}

func (s *holdSink) Open(context.Context, sdk.OpenRequest) error { return nil }
func (s *holdSink) Write(ctx context.Context, _ record.Batch) error {
	s.once.Do(func() { close(s.writing) })
	select {
	case <-s.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestMetricsOfARealPluginProcess runs the mongodb plugin binary (replaying captured events, one of them a
// split event over 16 MB that oversize: skip skips) as a subprocess over gRPC with mutual TLS, and scrapes
// the metrics it reports through the SDK, with the host's labels, and the host's lag and latency from the
// events' times.
func TestMetricsOfARealPluginProcess(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "mongodb"), "./cmd/mongodb")
	build.Dir = filepath.Join(root, "plugins", "mongodb")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the mongodb plugin: %v\n%s", err, out)
	}
	hold := &holdSink{writing: make(chan struct{}), release: make(chan struct{}), once: &sync.Once{}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	catalog, err := plugin.Discover(ctx, plugin.Options{Dirs: []string{dir}, Linked: []func() sdk.Plugin{func() sdk.Plugin {
		return sdk.Plugin{Spec: sdk.Spec{Name: "hold", Version: "0", Summary: "test", Sink: &sdk.Stage{Summary: "holds"}},
			NewSink: func() sdk.Sink { return hold }}
	}}})
	if err != nil {
		t.Fatal(err)
	}
	reg := New(Options{})
	cfg := pipeline.Config{ID: "replay",
		Source: pipeline.Stage{Plugin: "mongodb", Settings: map[string]any{
			"replay_file": filepath.Join(root, "plugins", "mongodb", "testdata", "events.jsonl"), "oversize": "skip"}},
		Sink: pipeline.Stage{Plugin: "hold", InProcess: true}}
	cfg.Meter = reg.Meter(cfg.ID)
	p := pipeline.New(cfg, catalog, &memStore{}, slog.New(slog.DiscardHandler))
	reg.Track(p)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-hold.writing:
	case err := <-done:
		t.Fatalf("Run ended: %v", err)
	}

	text := scrape(t, reg)
	for _, want := range []string{
		"# TYPE sluice_plugin_mongodb_oversize_events_skipped_total counter",
		`sluice_plugin_mongodb_oversize_events_skipped_total{pipeline="replay",plugin="mongodb",stage="source"} 1`,
		`sluice_plugin_mongodb_resume_token_age_seconds{pipeline="replay",plugin="mongodb",stage="source"} `,
		`sluice_pipeline_state{pipeline="replay",state="running"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q:\n%s", want, grep(text, "sluice_"))
		}
	}
	if pid := p.Status().Stages[0].Pid; pid == 0 {
		t.Error("the source does not run as a subprocess")
	}

	close(hold.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The last event in the file happened at 2023-12-07T10:45:52Z; the host measured from it.
	if got := gauge(t, reg, "sluice_source_last_event_timestamp_seconds"); got != 1701945952 {
		t.Errorf("last event timestamp %v, want 1701945952", got)
	}
	if _, count := histogram(t, reg, "sluice_end_to_end_latency_seconds"); count == 0 {
		t.Error("no latency observed")
	}
}
