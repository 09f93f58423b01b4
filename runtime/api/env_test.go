package api

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/plugins/discard"
	"github.com/sluicehq/sluice/plugins/file"
	"github.com/sluicehq/sluice/plugins/generate"
	"github.com/sluicehq/sluice/plugins/memory"
	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/runtime/state"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
)

// The tests run real pipelines of the first-party plugins over the real protocol, in-process.

type localStarter map[string]func() sdk.Plugin

func (l localStarter) Start(_ context.Context, name string, _ sdk.Kind, _ bool, _ *slog.Logger) (*protocol.Conn, error) {
	p, ok := l[name]
	if !ok {
		return nil, fmt.Errorf("no plugin %q in the test", name)
	}
	return protocol.Local(p())
}

var plugins = localStarter{"generate": generate.Plugin, "memory": memory.Plugin, "discard": discard.Plugin, "file": file.Plugin}

// running is a set of pipelines running until the test ends.
type running struct {
	mu  sync.Mutex
	all []*pipeline.Pipeline
}

func (r *running) statuses() []pipeline.Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]pipeline.Status, len(r.all))
	for i, p := range r.all {
		out[i] = p.Status()
	}
	return out
}

// start runs the pipelines of cfgs until the test ends.
func start(t *testing.T, cfgs ...pipeline.Config) *running {
	t.Helper()
	store, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{}
	var wg sync.WaitGroup
	for _, cfg := range cfgs {
		cfg.Retry = pipeline.Retry{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond}
		p := pipeline.New(cfg, plugins, store, slog.New(slog.DiscardHandler))
		r.all = append(r.all, p)
		wg.Go(func() { _ = p.Run(ctx) })
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		store.Close()
	})
	return r
}

// ordersConfig is a pipeline that runs until stopped: generate at rate records/s → memory → discard.
func ordersConfig(rate float64) pipeline.Config {
	return pipeline.Config{ID: "orders",
		Source: pipeline.Stage{Plugin: "generate", Settings: map[string]any{"rate": rate, "payload_bytes": 120}},
		Buffer: &pipeline.Stage{Plugin: "memory", Atomic: true},
		Sink:   pipeline.Stage{Plugin: "discard", Atomic: true}, BatchMaxRecords: 128}
}

// brokenConfig is a pipeline whose file sink cannot open its path (it runs through a regular file): it
// fails for good.
func brokenConfig(t *testing.T) pipeline.Config {
	notDir := filepath.Join(t.TempDir(), "audit")
	if err := os.WriteFile(notDir, []byte("a file, not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return pipeline.Config{ID: "audit",
		Source: pipeline.Stage{Plugin: "generate", Settings: map[string]any{"count": 1000}},
		Sink:   pipeline.Stage{Plugin: "file", Settings: map[string]any{"path": filepath.Join(notDir, "audit.jsonl")}}}
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// find returns the status of pipeline id.
func find(sts []pipeline.Status, id string) pipeline.Status {
	for _, st := range sts {
		if st.ID == id {
			return st
		}
	}
	return pipeline.Status{}
}
