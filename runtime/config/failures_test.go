package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/pipeline"
)

func TestFailureKeys(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.yaml")
	content := `version: 1
pipelines:
  - id: tuned
    source: {plugin: generate}
    sink: {plugin: discard}
    retry: {initial: 1s, max: 1m, give_up_after: 1h}
    open_timeout: 30s
    stall_timeout: 10m
  - id: forever
    source: {plugin: generate}
    sink: {plugin: discard}
    retry: forever
  - id: never
    source: {plugin: generate}
    sink: {plugin: discard}
    retry: {max: 5s, give_up_after: never}
  - id: defaults
    source: {plugin: generate}
    sink: {plugin: discard}
`
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := testLoader().Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		retry       pipeline.Retry
		open, stall time.Duration
	}{
		{pipeline.Retry{Initial: time.Second, Max: time.Minute, GiveUpAfter: time.Hour}, 30 * time.Second, 10 * time.Minute},
		{pipeline.Retry{Initial: pipeline.DefaultRetryInitial, Max: pipeline.DefaultRetryMax, GiveUpAfter: pipeline.DefaultGiveUpAfter, Forever: true},
			pipeline.DefaultOpenTimeout, pipeline.DefaultStallTimeout},
		{pipeline.Retry{Initial: pipeline.DefaultRetryInitial, Max: 5 * time.Second, GiveUpAfter: pipeline.DefaultGiveUpAfter, Forever: true},
			pipeline.DefaultOpenTimeout, pipeline.DefaultStallTimeout},
		{defaultRetry, pipeline.DefaultOpenTimeout, pipeline.DefaultStallTimeout},
	}
	for i, w := range want {
		p := f.Pipelines[i]
		if p.Retry != w.retry || p.OpenTimeout != w.open || p.StallTimeout != w.stall {
			t.Errorf("pipeline %s: retry %+v open %v stall %v; want %+v %v %v", p.ID, p.Retry, p.OpenTimeout, p.StallTimeout, w.retry, w.open, w.stall)
		}
	}
}
