package cli_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkStartup measures how long sluice takes from its exec to its "pipeline started" log line, for a
// one-record generate → discard pipeline whose stages run in-process or as subprocesses, with the plugin
// spec cache empty (cold) or filled by a previous run (warm). ms/start is that time; ns/op is the whole
// run, exit included. The plugins directory is the one `make build` lays out (every first-party plugin).
func BenchmarkStartup(b *testing.B) {
	for _, inProcess := range []bool{true, false} {
		for _, warm := range []bool{false, true} {
			name := fmt.Sprintf("in_process=%t/cache=%s", inProcess, map[bool]string{false: "cold", true: "warm"}[warm])
			b.Run(name, func(b *testing.B) {
				dir := b.TempDir()
				cfg := filepath.Join(dir, "p.yaml")
				text := fmt.Sprintf(`version: 1
pipelines:
  - id: startup
    source: { plugin: generate, settings: { count: 1 }, in_process: %t }
    sink: { plugin: discard, in_process: %[1]t }
`, inProcess)
				if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
					b.Fatal(err)
				}
				cache := filepath.Join(dir, "cache")
				if warm {
					startup(b, dir, cfg, cache)
				}
				var total time.Duration
				for b.Loop() {
					b.StopTimer()
					if !warm {
						if err := os.RemoveAll(cache); err != nil {
							b.Fatal(err)
						}
					}
					if err := os.RemoveAll(filepath.Join(dir, "data")); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					total += startup(b, dir, cfg, cache)
				}
				b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/start")
			})
		}
	}
}

// startup runs sluice on cfg with its user cache in cache and returns the time from its exec to its
// "pipeline started" log line; it waits for the run to end.
func startup(tb testing.TB, dir, cfg, cache string) time.Duration {
	tb.Helper()
	cmd := exec.Command(filepath.Join(binDir, "sluice"), "--log-format", "json", "run", "--data-dir", filepath.Join(dir, "data"), cfg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+cache)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	var took time.Duration
	var lines []string
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if took == 0 && strings.Contains(sc.Text(), `"msg":"pipeline started"`) {
			took = time.Since(start)
		}
		lines = append(lines, sc.Text())
	}
	_, _ = io.Copy(io.Discard, stderr)
	if err := cmd.Wait(); err != nil || took == 0 {
		tb.Fatalf("sluice run: %v; no \"pipeline started\" line in:\n%s", err, strings.Join(lines, "\n"))
	}
	return took
}
