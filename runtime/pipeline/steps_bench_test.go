package pipeline

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/plugins/discard"
	"github.com/sluicehq/sluice/plugins/generate"
	"github.com/sluicehq/sluice/runtime/plugin"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/transforms"
)

// BenchmarkPipelineW1 is the W1 workload: generate → transforms (a filter keeping half the records, a set of
// two fields) → discard, 1M records of 200 B, with the plugins in-process (so that a CPU profile of the
// benchmark shows host and plugins together) and as subprocesses over mutual TLS. It reports source
// records/s, CPU µs per source record (host and plugins) and host allocations per source record.
func BenchmarkPipelineW1(b *testing.B) {
	const records = 1_000_000
	steps, err := transforms.Compile([]transforms.Step{
		{Kind: transforms.Filter, Expr: transforms.Expr{Text: "seq % 2 == 0"}},
		{Kind: transforms.Set, Fields: []transforms.Field{
			{Path: "processed", Expr: transforms.Expr{Text: "true"}},
			{Path: "doubled", Expr: transforms.Expr{Text: "seq * 2"}}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []struct {
		name      string
		inProcess bool
	}{{"in-process", true}, {"subprocess-mtls", false}} {
		b.Run(mode.name, func(b *testing.B) {
			var dirs []string
			if !mode.inProcess {
				dirs = []string{benchPlugins(b)}
			}
			ctx := context.Background()
			catalog, err := plugin.Discover(ctx, plugin.Options{Dirs: dirs,
				Linked: []func() sdk.Plugin{generate.Plugin, discard.Plugin}})
			if err != nil {
				b.Fatal(err)
			}
			cfg := Config{ID: "bench",
				Source: Stage{Plugin: "generate", InProcess: mode.inProcess,
					Settings: map[string]any{"count": records, "rate": 0, "payload_bytes": 200}},
				Steps:           steps,
				Sink:            Stage{Plugin: "discard", InProcess: mode.inProcess, Settings: map[string]any{}},
				BatchMaxRecords: 1024,
			}
			runPipelines(b, ctx, cfg, catalog, records, records/2)
		})
	}
}
