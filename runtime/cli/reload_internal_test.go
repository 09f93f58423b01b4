package cli

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/runtime/config"
)

// TestFingerprintCoversPipeline fails when config.Pipeline or config.Stage gains a field, so that whoever
// adds one decides whether a reload must restart a pipeline when it changes (then add it to
// fingerprint).
func TestFingerprintCoversPipeline(t *testing.T) {
	for _, tc := range []struct {
		typ   reflect.Type
		known []string
	}{
		// Pos and ID say where and which, not what runs; Steps and SinkSteps are compiled from
		// Transforms and SinkTransforms; Verify is read by `sluice verify` only, never by a running pipeline.
		{reflect.TypeFor[config.Pipeline](), []string{"ID", "Pos", "Source", "Buffer", "Sink", "Transforms", "Steps",
			"SinkTransforms", "SinkSteps", "OnError", "DeadLetter", "BatchMaxRecords", "BatchMaxBytes", "MaxInFlightBytes",
			"Retry", "OpenTimeout", "StallTimeout", "Verify", "Ordered", "Lanes"}},
		// Kind follows from where the stage is; Spec is the plugin's, fixed while sluice runs; printed is
		// Settings redacted; where names settings in messages (cluster.redis, never a pipeline's stage);
		// SHA256Pos says where the pin is written. A new pin (SHA256) restarts the stage's pipeline.
		{reflect.TypeFor[config.Stage](), []string{"Kind", "Plugin", "Spec", "Settings", "InProcess", "SHA256", "SHA256Pos", "Pos", "printed", "where"}},
	} {
		var fields []string
		for f := range tc.typ.Fields() {
			fields = append(fields, f.Name)
		}
		if !slices.Equal(fields, tc.known) {
			t.Errorf("%s has fields %v; fingerprint knows %v: decide whether a change of the new field restarts the pipeline on reload", tc.typ, fields, tc.known)
		}
	}
}

// TestFingerprint: what runs changes the fingerprint; where it is written does not.
func TestFingerprint(t *testing.T) {
	base := func() *config.Pipeline {
		return &config.Pipeline{ID: "p", Pos: config.Pos{File: "a.yaml", Line: 3, Col: 5},
			Source:  &config.Stage{Plugin: "generate", Settings: map[string]any{"rate": 2000.0, "count": int64(5)}},
			Sink:    &config.Stage{Plugin: "file", Settings: map[string]any{"path": "out.jsonl"}},
			OnError: config.OnErrorStop, BatchMaxRecords: 1024}
	}
	fp := fingerprint(base())
	moved := base()
	moved.Pos = config.Pos{File: "b.yaml", Line: 30, Col: 1}
	if fingerprint(moved) != fp {
		t.Error("moving a pipeline changes its fingerprint")
	}
	for name, change := range map[string]func(p *config.Pipeline){
		"a setting":       func(p *config.Pipeline) { p.Source.Settings["rate"] = 3000.0 },
		"a nested value":  func(p *config.Pipeline) { p.Sink.Settings["labels"] = map[string]any{"a": "b"} },
		"in_process":      func(p *config.Pipeline) { p.Sink.InProcess = true },
		"the plugin":      func(p *config.Pipeline) { p.Sink.Plugin = "file-atomic" },
		"a pin":           func(p *config.Pipeline) { p.Sink.SHA256 = strings.Repeat("ab", 32) },
		"a buffer":        func(p *config.Pipeline) { p.Buffer = &config.Stage{Plugin: "memory"} },
		"a step":          func(p *config.Pipeline) { p.Transforms = []config.Raw{{Value: map[string]any{"filter": "true"}}} },
		"batching":        func(p *config.Pipeline) { p.BatchMaxRecords = 10 },
		"the retry":       func(p *config.Pipeline) { p.Retry.Forever = true },
		"a watchdog":      func(p *config.Pipeline) { p.StallTimeout = 1 },
		"the dead letter": func(p *config.Pipeline) { p.DeadLetter = &config.Stage{Plugin: "file"} },
	} {
		p := base()
		change(p)
		if fingerprint(p) == fp {
			t.Errorf("changing %s leaves the fingerprint", name)
		}
	}
}
