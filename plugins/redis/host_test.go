package redis_test

// Tests that run the real host (runtime/cmd/sluice) with the real plugin binaries — generate → redis
// buffer → file-atomic sink — against a real redis-server, and crash things mid-run.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/sdk/sdktest"
	"github.com/sluicehq/sluice/services"
)

var (
	hostOnce sync.Once
	hostDir  string // sluice and plugins/, laid out as `make build` does
	hostErr  error
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// hostBinaries builds sluice and the plugins these tests use, once per test binary.
func hostBinaries(t *testing.T) string {
	t.Helper()
	hostOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sluice-redis-host-")
		if err != nil {
			hostErr = err
			return
		}
		root := repoRoot()
		for _, s := range [][3]string{
			{"runtime", "sluice", "./cmd/sluice"},
			{"plugins/generate", "plugins/generate", "./cmd/generate"},
			{"plugins/redis", "plugins/redis", "./cmd/redis"},
			{"plugins/file", "plugins/file", "./cmd/file"},
			{"plugins/file", "plugins/file-atomic", "./cmd/file-atomic"},
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, s[1]), s[2])
			cmd.Dir = filepath.Join(root, s[0])
			if out, err := cmd.CombinedOutput(); err != nil {
				hostErr = fmt.Errorf("building %s: %v\n%s", s[2], err, out)
				return
			}
		}
		hostDir = dir
	})
	if hostErr != nil {
		t.Fatal(hostErr)
	}
	return hostDir
}

const hostConfig = `version: 1
pipelines:
  - id: crash
    source: { plugin: generate, settings: { count: %d, rate: %d, payload_bytes: 100 } }
    buffer: { plugin: redis, settings: { addr: "%s", key: "%s", retry_timeout: 30s } }
    sink:   { plugin: %s, settings: { path: out.jsonl, sync: false } }
    batch_max_records: 256
`

// run is one sluice process running a config in dir.
type run struct {
	cmd            *exec.Cmd
	stdout, stderr sdktest.Output
}

func startSluice(t *testing.T, dir string, args ...string) *run {
	t.Helper()
	r := &run{cmd: exec.Command(filepath.Join(hostBinaries(t), "sluice"), args...)}
	r.cmd.Dir = dir
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			_ = r.cmd.Process.Kill()
			_ = r.cmd.Wait()
		}
	})
	return r
}

// wait waits for sluice to exit (at most 2 minutes) and fails the test unless it exited 0.
func (r *run) wait(t *testing.T) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("sluice: %v\n%s\n%s", err, r.stdout.String(), r.stderr.String())
		}
	case <-time.After(2 * time.Minute):
		_ = r.cmd.Process.Kill()
		<-done
		t.Fatalf("sluice still running after 2 minutes\n%s\n%s", r.stdout.String(), r.stderr.String())
	}
}

// crashSetup writes a config for count records at rate per second into a new directory.
func crashSetup(t *testing.T, srv *services.Redis, count, rate int) (dir, cfg string) {
	t.Helper()
	dir = t.TempDir()
	cfg = filepath.Join(dir, "crash.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, hostConfig, count, rate, srv.Addr, freshKey(), crashSink), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(hostBinaries(t), "sluice"), "validate", cfg).CombinedOutput()
	if err != nil || (crashSink == "file-atomic" && !strings.Contains(string(out), "exactly-once")) {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	return dir, cfg
}

// checkExactlyOnce checks that out.jsonl in dir holds every seq in [0,count) exactly once.
func checkExactlyOnce(t *testing.T, dir string, count int) {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "out.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	counts := make([]int, count)
	sc := bufio.NewScanner(f)
	lines := 0
	for sc.Scan() {
		lines++
		var v struct {
			Seq *int `json:"seq"`
		}
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil || v.Seq == nil || *v.Seq < 0 || *v.Seq >= count {
			t.Fatalf("line %d: not a generate payload of this run: %q", lines, sc.Text())
		}
		counts[*v.Seq]++
	}
	for seq, n := range counts {
		if n != 1 {
			t.Fatalf("seq %d written %d times (%d lines in all)", seq, n, lines)
		}
	}
}

// waitForLines waits until dir/out.jsonl holds at least n lines.
func waitForLines(t *testing.T, r *run, dir string, n int) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(filepath.Join(dir, "out.jsonl")); err == nil && bytes.Count(data, []byte("\n")) >= n {
			return
		}
		if r.cmd.ProcessState != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("out.jsonl did not reach %d lines\n%s\n%s", n, r.stdout.String(), r.stderr.String())
}

// childRunning returns the pid of pid's child process running the named plugin binary.
func childRunning(t *testing.T, pid int, plugin string) int {
	t.Helper()
	want := filepath.Join(hostBinaries(t), "plugins", plugin)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			child, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
			if err != nil {
				continue
			}
			fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
			if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
				if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", child)); exe == want {
					return child
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s plugin process under pid %d", plugin, pid)
	return 0
}

// crashSink is the sink plugin of the crash tests: one that stores positions atomically.
var crashSink = "file-atomic"

// The crash tests run count records at a bounded rate, so that the crash lands mid-run however fast the
// machine is; a slower machine only makes them take longer.
const (
	crashCount = 60000
	crashRate  = 15000
	crashAt    = 8000 // lines in the sink's file when the crash happens
)

// TestCrashBufferPlugin SIGKILLs the redis buffer's plugin process mid-run: the host restarts the pipeline
// from the positions the buffer and the sink stored, and every record arrives exactly once.
func TestCrashBufferPlugin(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	dir, cfg := crashSetup(t, srv, crashCount, crashRate)
	r := startSluice(t, dir, "run", "--data-dir", filepath.Join(dir, "state"), cfg)
	waitForLines(t, r, dir, crashAt)
	if err := syscall.Kill(childRunning(t, r.cmd.Process.Pid, "redis"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r.wait(t)
	t.Logf("summary: %s", r.stdout.String())
	if !strings.Contains(r.stdout.String(), "restart") {
		t.Fatalf("the summary reports no restart:\n%s", r.stdout.String())
	}
	checkExactlyOnce(t, dir, crashCount)
}

// TestCrashHost SIGKILLs sluice mid-run (its plugins die with it); a second run completes the job, and
// every record arrives exactly once.
func TestCrashHost(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	dir, cfg := crashSetup(t, srv, crashCount, crashRate)
	r := startSluice(t, dir, "run", "--data-dir", filepath.Join(dir, "state"), cfg)
	waitForLines(t, r, dir, crashAt)
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	time.Sleep(500 * time.Millisecond) // the plugins' parent-death signal
	data, _ := os.ReadFile(filepath.Join(dir, "out.jsonl"))
	if n := bytes.Count(data, []byte("\n")); n >= crashCount {
		t.Fatalf("the killed run wrote all %d records; the test wants it killed mid-run", n)
	}
	r2 := startSluice(t, dir, "run", "--data-dir", filepath.Join(dir, "state"), cfg)
	r2.wait(t)
	t.Logf("summary of the second run: %s", r2.stdout.String())
	checkExactlyOnce(t, dir, crashCount)
}

// TestCrashRedis SIGKILLs redis-server mid-run and starts it again (AOF appendfsync always): the buffer
// retries until it is back, and every record arrives exactly once.
func TestCrashRedis(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	dir, cfg := crashSetup(t, srv, crashCount, crashRate)
	r := startSluice(t, dir, "run", "--data-dir", filepath.Join(dir, "state"), cfg)
	waitForLines(t, r, dir, crashAt)
	if err := srv.Crash(); err != nil {
		t.Fatal(err)
	}
	waitForLines(t, r, dir, 2*crashAt)
	if err := srv.Crash(); err != nil {
		t.Fatal(err)
	}
	r.wait(t)
	t.Logf("summary: %s", r.stdout.String())
	checkExactlyOnce(t, dir, crashCount)
	if !strings.Contains(r.stderr.String(), "retrying") {
		t.Logf("no retry was logged (the pipeline may have restarted instead):\n%s", r.stderr.String())
	}
	// Everything delivered was acknowledged and trimmed.
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer client.Close()
	keys, _ := client.Keys(context.Background(), "test:*").Result()
	for _, k := range keys {
		if !strings.HasSuffix(k, ":meta") {
			if n, _ := client.XLen(context.Background(), k).Result(); n != 0 {
				t.Errorf("stream %s still holds %d entries after the run", k, n)
			}
		}
	}
}

const backpressureConfig = `version: 1
pipelines:
  - id: burst
    source: { plugin: generate, settings: { count: 0, payload_bytes: 1000 } }
    buffer: { plugin: redis, settings: { addr: "%s", key: "%s", max_entries: %d } }
    sink:   { plugin: file, settings: { path: out.fifo, sync: false } }
`

// rss returns the resident set size of process pid in bytes.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// TestBackpressureHostMemory runs an endless fast source into the buffer and a sink that a reader drains
// slowly (a named pipe read at about 400 KB/s): the stream fills to max_entries and stays there, the
// buffer warns, and the host's memory stays flat instead of holding the burst.
func TestBackpressureHostMemory(t *testing.T) {
	const maxEntries = 10000
	srv := services.StartRedis(t, services.RedisOptions{})
	dir := t.TempDir()
	key := freshKey()
	cfg := filepath.Join(dir, "burst.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, backpressureConfig, srv.Addr, key, maxEntries), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "out.fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	r := startSluice(t, dir, "run", "--data-dir", filepath.Join(dir, "state"), cfg)
	stop := make(chan struct{})
	var drained sync.WaitGroup
	drained.Add(1)
	go func() { // the slow reader
		defer drained.Done()
		f, err := os.Open(filepath.Join(dir, "out.fifo"))
		if err != nil {
			return
		}
		defer f.Close()
		buf := make([]byte, 4096)
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if _, err := f.Read(buf); err != nil {
				return
			}
		}
	}()
	defer func() {
		_ = r.cmd.Process.Kill()
		close(stop)
		drained.Wait()
		t.Logf("stopped after %v", time.Since(begin))
	}()

	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer client.Close()
	pid := r.cmd.Process.Pid
	deadline := time.Now().Add(90 * time.Second)
	for {
		n := heldRecords(t, client, key)
		if n >= maxEntries*9/10 {
			break
		}
		if time.Now().After(deadline) || r.cmd.ProcessState != nil {
			t.Fatalf("the buffer holds %d records, never reached 90%% of %d\n%s", n, maxEntries, r.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("buffer 90%% full after %v", time.Since(begin))
	full := rss(t, pid)
	time.Sleep(3 * time.Second) // the host's in-flight batches settle (max_in_flight_bytes)
	settled := rss(t, pid)
	peakRSS, peakLen := settled, int64(0)
	for range 30 { // 6 s
		time.Sleep(200 * time.Millisecond)
		peakRSS = max(peakRSS, rss(t, pid))
		peakLen = max(peakLen, heldRecords(t, client, key))
	}
	t.Logf("host RSS: %.1f MiB when the stream was 90%% full, %.1f MiB 3s later, peak %.1f MiB over the next 6s; buffer peak %d records (max_entries %d)",
		float64(full)/(1<<20), float64(settled)/(1<<20), float64(peakRSS)/(1<<20), peakLen, maxEntries)
	if peakLen > maxEntries {
		t.Errorf("the buffer grew to %d records, above max_entries %d", peakLen, maxEntries)
	}
	if grew := peakRSS - settled; grew > 8<<20 {
		t.Errorf("host RSS grew by %.1f MiB while the buffer stayed full", float64(grew)/(1<<20))
	}
	if !strings.Contains(r.stderr.String(), "buffer full") {
		t.Errorf("the buffer logged no warning while full:\n%s", r.stderr.String())
	}
}
