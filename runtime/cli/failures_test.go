package cli_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startSluice starts `sluice run` on the file at cfg, in dir, with the test plugins available.
func startSluice(t *testing.T, dir, cfg string, args ...string) (*exec.Cmd, *strings.Builder, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "sluice"), append([]string{"run", "--plugins-dir", testPluginDir(), cfg}, args...)...)
	cmd.Dir = dir
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, &stdout, &stderr
}

// waitExit waits at most d for cmd and returns its exit code; it fails the test if cmd is still running.
func waitExit(t *testing.T, cmd *exec.Cmd, d time.Duration, stdout, stderr *strings.Builder) (int, time.Duration) {
	t.Helper()
	begun := time.Now()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, time.Since(begun)
	case <-time.After(d):
		_ = cmd.Process.Kill()
		t.Fatalf("sluice still running %s later\nstdout:\n%s\nstderr:\n%s", d, stdout, stderr)
	}
	return 0, 0
}

// TestStalledSinkRestarts SIGSTOPs the sink plugin mid-run: the stall watchdog reports it (stage, pid,
// how long, how much is pending) and restarts the pipeline, and every record arrives.
func TestStalledSinkRestarts(t *testing.T) {
	dir := t.TempDir()
	const count = 60000
	cfg := filepath.Join(dir, "p.yaml")
	writeFile(t, cfg, fmt.Sprintf(`version: 1
pipelines:
  - id: frozen
    source: { plugin: generate, settings: { count: %d, rate: 20000 } }
    sink:   { plugin: file, settings: { path: out.jsonl } }
    stall_timeout: 2s
`, count))
	cmd, stdout, stderr := startSluice(t, dir, cfg)
	waitForLines(t, filepath.Join(dir, "out.jsonl"), 10000)
	sink := childRunning(t, cmd.Process.Pid, "file")
	if err := syscall.Kill(sink, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	code, _ := waitExit(t, cmd, 60*time.Second, stdout, stderr)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	logs := stderr.String()
	stall := regexp.MustCompile(`stage stalled; restarting the pipeline" pipeline=frozen stage="sink file \(pid (\d+)\)" pending_records=\d+ pending_bytes=\d+ for=\d+s stall_timeout=2s`).FindStringSubmatch(logs)
	if stall == nil || stall[1] != fmt.Sprint(sink) {
		t.Fatalf("no stall report naming the stopped sink (pid %d):\n%s", sink, logs)
	}
	dups := checkSeqs(t, seqCounts(t, filepath.Join(dir, "out.jsonl")), count)
	m := regexp.MustCompile(`pipeline frozen: done — .*, 1 restarts(?:, (\d+) records redelivered)?`).FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("summary:\n%s", stdout)
	}
	if redelivered := atoi(m[1]); dups > redelivered {
		t.Fatalf("%d duplicates, %d reported redelivered", dups, redelivered)
	}
}

func atoi(s string) int {
	var n int
	_, _ = fmt.Sscan(s, &n) // "" (the summary reports no redeliveries) leaves 0
	return n
}

// TestStopsWhateverPluginsDo: SIGTERM stops sluice within the drain timeout plus a few seconds when its
// sink is frozen (SIGSTOP) and when its plugins ignore SIGTERM and block in Close.
func TestStopsWhateverPluginsDo(t *testing.T) {
	for _, tt := range []struct {
		name   string
		sink   string
		freeze bool
	}{
		{"frozen sink", `{ plugin: file, settings: { path: out.jsonl } }`, true},
		{"sink blocking in Write and Close, ignoring SIGTERM", `{ plugin: misbehave, settings: { path: out.jsonl, write: block, after: 5000, close: block, ignore_sigterm: true } }`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "p.yaml")
			writeFile(t, cfg, fmt.Sprintf(`version: 1
pipelines:
  - id: stuck
    source: { plugin: generate, settings: { rate: 20000 } }
    sink:   %s
`, tt.sink))
			cmd, stdout, stderr := startSluice(t, dir, cfg, "--drain-timeout", "2s")
			waitForLines(t, filepath.Join(dir, "out.jsonl"), 3000)
			if tt.freeze {
				if err := syscall.Kill(childRunning(t, cmd.Process.Pid, "file"), syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(500 * time.Millisecond)
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			// drain 2s + close 5s + kill 3s, and some slack for a loaded machine.
			code, took := waitExit(t, cmd, 20*time.Second, stdout, stderr)
			t.Logf("stopped in %s, exit %d", took.Round(time.Millisecond), code)
			if !strings.Contains(stderr.String(), "drain timed out; stopping at once") {
				t.Errorf("the drain did not time out as expected:\n%s", stderr)
			}
			if !strings.Contains(stdout.String(), "pipeline stuck: stopped — ") {
				t.Errorf("summary:\n%s", stdout)
			}
			deadline := time.Now().Add(5 * time.Second)
			for len(pluginProcesses()) > 0 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if left := pluginProcesses(); len(left) > 0 {
				t.Fatalf("plugin processes %v outlived sluice", left)
			}
		})
	}
}

// TestFailuresTellTheTruth runs pipelines whose sink fails in each way and checks the exit code, the
// summary and how long it took: permanent failures stop at once, transient ones are retried and give up
// when nothing progresses, and one that heals completes.
func TestFailuresTellTheTruth(t *testing.T) {
	for _, tt := range []struct {
		name     string
		settings string
		extra    string
		code     int
		summary  string // a regexp the summary must match
		restarts bool
	}{
		{"permanent at open", `open: permanent`, ``, 1,
			`pipeline p: failed: sink misbehave \(pid \d+\): opening: misbehave: open failed for good\n  0 records read`, false},
		{"invalid settings at open", `open: invalid`, ``, 1,
			`pipeline p: failed: sink misbehave \(pid \d+\): opening: invalid settings: misbehave: open refuses these settings`, false},
		{"permanent at write", `write: permanent, after: 3000`, ``, 1,
			`pipeline p: failed: sink misbehave \(pid \d+\): .*misbehave: write failed for good`, false},
		{"transient forever gives up", `open: error`, `retry: { initial: 100ms, max: 200ms, give_up_after: 2s }`, 1,
			`pipeline p: failed: gave up after \d+ attempts over \ds with no record delivered .*misbehave: open failed \(transient\)`, true},
		{"panic at open is explained", `open: panic`, `retry: { initial: 100ms, max: 200ms, give_up_after: 2s }`, 1,
			`pipeline p: failed: gave up after \d+ attempts .*: sink misbehave \(pid \d+\) panicked: misbehave: panic in open \(main\.\(\*config\)\.act at \S*main\.go:\d+\)`, true},
		{"exit at write is explained", `write: exit`, `retry: { initial: 100ms, max: 200ms, give_up_after: 2s }`, 1,
			`pipeline p: failed: gave up after \d+ attempts .*: sink misbehave \(pid \d+\) exited with status 7: misbehave: exiting with status 7 in write`, true},
		{"blocked open times out", `open: block`, `open_timeout: 1s
    retry: { initial: 100ms, max: 200ms, give_up_after: 2s }`, 1,
			`pipeline p: failed: gave up after \d+ attempts .*: sink misbehave \(pid \d+\) did not finish Open within open_timeout \(1s\)`, true},
		{"transient once heals", `write: error, after: 3000, once_marker: marker`, ``, 0,
			`pipeline p: done — \d+ records read \(\d+/s\), 10000 delivered \(\d+/s\) in .*, at-least-once, 1 restarts`, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "p.yaml")
			writeFile(t, cfg, fmt.Sprintf(`version: 1
pipelines:
  - id: p
    source: { plugin: generate, settings: { count: 10000 } }
    sink:   { plugin: misbehave, settings: { path: out.jsonl, %s } }
    %s
`, tt.settings, tt.extra))
			cmd, stdout, stderr := startSluice(t, dir, cfg)
			code, took := waitExit(t, cmd, 60*time.Second, stdout, stderr)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\n%s\n%s", code, tt.code, stdout, stderr)
			}
			if !regexp.MustCompile(tt.summary).MatchString(stdout.String()) {
				t.Fatalf("summary does not match %q:\n%s\nstderr:\n%s", tt.summary, stdout, stderr)
			}
			if restarted := strings.Contains(stderr.String(), "restarting from stored positions"); restarted != tt.restarts {
				t.Errorf("restarted: %v, want %v\n%s", restarted, tt.restarts, stderr)
			}
			if strings.Contains(stdout.String()+stderr.String(), "rpc error") {
				t.Errorf("transport noise in what the user sees:\n%s\n%s", stdout, stderr)
			}
			t.Logf("took %s", took.Round(time.Millisecond))
		})
	}
}
