package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/plugins/discard"
	"github.com/sluicehq/sluice/plugins/generate"
	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/runtime/plugin"
	"github.com/sluicehq/sluice/sdk"
)

var (
	benchOnce sync.Once
	benchDir  string
	benchErr  error
)

// benchPlugins builds the generate and discard plugin binaries once.
func benchPlugins(b *testing.B) string {
	benchOnce.Do(func() {
		if benchDir, benchErr = os.MkdirTemp("", "sluice-metrics-bench-"); benchErr != nil {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		for _, name := range []string{"generate", "discard"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(benchDir, name), "./cmd/"+name)
			cmd.Dir = filepath.Join(root, "plugins", name)
			if out, err := cmd.CombinedOutput(); err != nil {
				benchErr = fmt.Errorf("building %s: %v\n%s", name, err, out)
				return
			}
		}
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchDir
}

// BenchmarkPipelineWithMetrics is runtime/pipeline's BenchmarkPipeline (generate → discard, 1M records of
// 200 B, batches of 1024) with this registry's Meter, and a scrape after each run: what metrics cost.
func BenchmarkPipelineWithMetrics(b *testing.B) {
	const records = 1_000_000
	for _, mode := range []struct {
		name      string
		inProcess bool
	}{{"in-process", true}, {"subprocess-mtls", false}} {
		b.Run(mode.name, func(b *testing.B) {
			ctx := context.Background()
			catalog, err := plugin.Discover(ctx, plugin.Options{Dirs: []string{benchPlugins(b)},
				Linked: []func() sdk.Plugin{generate.Plugin, discard.Plugin}})
			if err != nil {
				b.Fatal(err)
			}
			reg := New(Options{})
			cfg := pipeline.Config{ID: "bench",
				Source: pipeline.Stage{Plugin: "generate", InProcess: mode.inProcess,
					Settings: map[string]any{"count": records, "rate": 0, "payload_bytes": 200}},
				Sink:            pipeline.Stage{Plugin: "discard", InProcess: mode.inProcess, Settings: map[string]any{}},
				BatchMaxRecords: 1024,
			}
			cfg.Meter = reg.Meter(cfg.ID)
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p := pipeline.New(cfg, catalog, &memStore{}, slog.New(slog.DiscardHandler))
				reg.Track(p)
				if err := p.Run(ctx); err != nil {
					b.Fatal(err)
				}
				if _, err := reg.Gatherer().Gather(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu := cpuTime() - cpu0
			runtime.ReadMemStats(&ms1)
			total := float64(records) * float64(b.N)
			b.ReportMetric(total/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(cpu.Microseconds())/total, "cpu-µs/record")
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/total, "host-allocs/record")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// cpuTime is the CPU time of this process and its reaped children (the plugins).
func cpuTime() time.Duration {
	var self, children syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(children.Utime) + tv(children.Stime)
}
