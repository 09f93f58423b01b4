package pipeline

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
	"github.com/sluicehq/sluice/runtime/plugin"
	"github.com/sluicehq/sluice/sdk"
)

var (
	benchBinOnce sync.Once
	benchBinDir  string
	benchBinErr  error
)

// benchPlugins builds the generate and discard plugin binaries once, for the subprocess benchmarks.
func benchPlugins(b *testing.B) string {
	benchBinOnce.Do(func() {
		benchBinDir, benchBinErr = os.MkdirTemp("", "sluice-bench-")
		if benchBinErr != nil {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		for _, name := range []string{"generate", "discard"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(benchBinDir, name), "./cmd/"+name)
			cmd.Dir = filepath.Join(root, "plugins", name)
			if out, err := cmd.CombinedOutput(); err != nil {
				benchBinErr = fmt.Errorf("building %s: %v\n%s", name, err, out)
				return
			}
		}
	})
	if benchBinErr != nil {
		b.Fatal(benchBinErr)
	}
	return benchBinDir
}

func cpuTime() time.Duration {
	var self, children syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(children.Utime) + tv(children.Stime)
}

// BenchmarkPipeline measures generate → discard: two hops (source → host → sink) of ~200 B records, in
// batches of 1024, with the plugins in-process, as subprocesses over mutual TLS (the default), and as
// subprocesses in plain text. It reports records/s, CPU µs per record (host and plugins together; plugin
// CPU is counted when their processes are reaped) and host allocations per record.
func BenchmarkPipeline(b *testing.B) {
	const records = 1_000_000
	for _, mode := range []struct {
		name      string
		inProcess bool
		plainText bool
	}{
		{"in-process", true, false},
		{"subprocess-mtls", false, false},
		{"subprocess-plaintext", false, true},
	} {
		b.Run(mode.name, func(b *testing.B) {
			dir := benchPlugins(b)
			ctx := context.Background()
			catalog, err := plugin.Discover(ctx, plugin.Options{Dirs: []string{dir},
				Linked: []func() sdk.Plugin{generate.Plugin, discard.Plugin}, PlainText: mode.plainText})
			if err != nil {
				b.Fatal(err)
			}
			cfg := Config{ID: "bench",
				Source: Stage{Plugin: "generate", InProcess: mode.inProcess,
					Settings: map[string]any{"count": records, "rate": 0, "payload_bytes": 200}},
				Sink:            Stage{Plugin: "discard", InProcess: mode.inProcess, Settings: map[string]any{}},
				BatchMaxRecords: 1024,
			}
			runPipelines(b, ctx, cfg, catalog, records, records)
		})
	}
}

// runPipelines runs the pipeline cfg b.N times, checking each run delivers want of its records source
// records, and reports records/s, CPU µs and host allocations per source record.
func runPipelines(b *testing.B, ctx context.Context, cfg Config, catalog Starter, records, want int64) {
	b.Helper()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p := New(cfg, catalog, &memStore{}, slog.New(slog.DiscardHandler))
		if err := p.Run(ctx); err != nil {
			b.Fatal(err)
		}
		if got := p.Stats.Delivered.Load(); got != want {
			b.Fatalf("delivered %d records, want %d", got, want)
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
}
