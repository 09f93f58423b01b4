package cli_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// outputMu guards the output of processes started by startLockedSluice, which tests read while they run.
var outputMu sync.Mutex

type lockedWriter struct{ b *strings.Builder }

func (w lockedWriter) Write(p []byte) (int, error) {
	outputMu.Lock()
	defer outputMu.Unlock()
	return w.b.Write(p)
}

// startLockedSluice is startSluice for tests that read the output while sluice runs (with syncString).
func startLockedSluice(t *testing.T, dir, cfg string, args ...string) (*exec.Cmd, *strings.Builder, *strings.Builder) {
	t.Helper()
	return startLocked(t, dir, append([]string{"run", "--plugins-dir", testPluginDir(), cfg}, args...)...)
}

// startLocked starts bin/sluice with args in dir, its output read while it runs (with syncString); the
// process is killed when the test ends.
func startLocked(t *testing.T, dir string, args ...string) (*exec.Cmd, *strings.Builder, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "sluice"), args...)
	cmd.Dir = dir
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = lockedWriter{&stdout}, lockedWriter{&stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, &stdout, &stderr
}

// waitLog waits until the output matches re and returns the match.
func waitLog(t *testing.T, out *strings.Builder, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := rx.FindStringSubmatch(syncString(out)); m != nil {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no log line matches %s:\n%s", re, syncString(out))
	return nil
}

// syncString reads a strings.Builder that exec is writing to. exec.Cmd copies the child's output from a
// goroutine, so reading while it runs needs the process's output to be a locked writer.
func syncString(b *strings.Builder) string {
	outputMu.Lock()
	defer outputMu.Unlock()
	return b.String()
}

// servingURL matches the line sluice logs when it serves HTTP and captures the address.
var servingURL = regexp.MustCompile(`serving the status page and HTTP API" url=http://(127\.0\.0\.1:\d+)/`)

// servingAddr returns the address a sluice's log says it serves HTTP on, or "" before it says so.
func servingAddr(log string) string {
	if m := servingURL.FindStringSubmatch(log); m != nil {
		return m[1]
	}
	return ""
}

// growing reports whether the file at path gets longer within a second.
func growing(t *testing.T, path string) bool {
	t.Helper()
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := size()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if size() > before {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

const reloadBefore = `version: 1
pipelines:
  - id: keep
    source: { plugin: generate, settings: { rate: 2000 } }
    sink:   { plugin: file, settings: { path: keep.jsonl } }
  - id: change
    source: { plugin: generate, in_process: true, settings: { rate: "${file:rate.txt}" } }
    sink:   { plugin: file, in_process: true, settings: { path: change.jsonl } }
  - id: remove
    source: { plugin: generate, in_process: true, settings: { rate: 2000 } }
    sink:   { plugin: file, in_process: true, settings: { path: remove.jsonl } }
`

// The same file after an edit: keep is written differently but resolves the same; change is written the
// same but the file it reads its rate from changed; remove is gone and add is new.
const reloadAfter = `# edited
version: 1
pipelines:
  - id: add
    source: { plugin: generate, in_process: true, settings: { rate: 2000 } }
    sink:   { plugin: file, in_process: true, settings: { path: add.jsonl } }
  - id: change
    source: { plugin: generate, in_process: true, settings: { rate: "${file:rate.txt}" } }
    sink:   { plugin: file, in_process: true, settings: { path: change.jsonl } }
  - id: keep
    sink:
      settings:
        path: keep.jsonl
        format: payload      # the default, written out
      plugin: file
    source:
      plugin: generate
      settings: { rate: 2000.0 }
    retry: { initial: 500ms }  # the default
`

// TestReload runs `sluice run` and reloads it with SIGHUP: an added pipeline starts, a removed one
// drains and stops, one whose resolved configuration changed (here through a ${file:…} it reads) drains
// and continues from its stored position with no record lost or repeated, and one that only reads
// differently keeps its plugin processes. A file that no longer validates is rejected with its
// problems, and everything keeps running; the exit code stays 0.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.yaml")
	writeFile(t, cfg, reloadBefore)
	writeFile(t, filepath.Join(dir, "rate.txt"), "2000\n")
	cmd, stdout, stderr := startLockedSluice(t, dir, cfg)
	for _, id := range []string{"keep", "change", "remove"} {
		waitForLines(t, filepath.Join(dir, id+".jsonl"), 1000)
	}
	// keep is the only pipeline run by subprocesses: these are its plugins.
	keepPids := []int{childRunning(t, cmd.Process.Pid, "generate"), childRunning(t, cmd.Process.Pid, "file")}

	writeFile(t, cfg, reloadAfter)
	writeFile(t, filepath.Join(dir, "rate.txt"), "3000\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, stderr, `msg="reloaded the connector files" trigger=SIGHUP added=add removed=remove changed=change unchanged=1`)
	waitLog(t, stderr, `msg="pipeline stopped: a reload removed it" pipeline=remove summary="\d+ records read, \d+ delivered in [^"]+"`)
	waitLog(t, stderr, `msg="pipeline stopped: a reload changed it" pipeline=change`)
	waitForLines(t, filepath.Join(dir, "add.jsonl"), 1000)
	if growing(t, filepath.Join(dir, "remove.jsonl")) {
		t.Error("the removed pipeline still writes")
	}
	for _, id := range []string{"keep", "change", "add"} {
		if !growing(t, filepath.Join(dir, id+".jsonl")) {
			t.Errorf("pipeline %s stopped writing after the reload", id)
		}
	}
	if now := []int{childRunning(t, cmd.Process.Pid, "generate"), childRunning(t, cmd.Process.Pid, "file")}; !slices.Equal(now, keepPids) {
		t.Errorf("keep's plugins are %v, were %v: an unchanged pipeline was restarted", now, keepPids)
	}

	// A broken file: rejected, nothing changes.
	writeFile(t, cfg, strings.Replace(reloadAfter, "  - id: add", "  - id: add\n    sinc: {}", 1))
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, stderr, `msg="reload rejected" problem="`+regexp.QuoteMeta(cfg)+`:5:5: unknown key \\"sinc\\" in pipeline \\"add\\" \(did you mean \\"sink\\"\?\)"`)
	waitLog(t, stderr, `msg="reload rejected: the running pipelines keep running unchanged" trigger=SIGHUP err="1 problem found"`)
	for _, id := range []string{"keep", "change", "add"} {
		if !growing(t, filepath.Join(dir, id+".jsonl")) {
			t.Errorf("pipeline %s stopped writing after a rejected reload", id)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, _ := waitExit(t, cmd, 60*time.Second, stdout, stderr)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, syncString(stdout), syncString(stderr))
	}
	summary := syncString(stdout)
	for _, want := range []string{
		`pipeline keep: stopped — \d+ records read .*, at-least-once → keep.jsonl\n`,
		`pipeline change: stopped — \d+ records read .*, at-least-once, restarted once by reload → change.jsonl\n`,
		`pipeline remove: stopped \(removed by reload\) — \d+ records read .* → remove.jsonl\n`,
		`pipeline add: stopped — \d+ records read .* → add.jsonl\n`,
	} {
		if !regexp.MustCompile(want).MatchString(summary) {
			t.Errorf("summary does not match %s:\n%s", want, summary)
		}
	}
	// Drained and resumed after its stored position: every record once, none lost.
	for _, id := range []string{"change", "keep", "remove", "add"} {
		counts := seqCounts(t, filepath.Join(dir, id+".jsonl"))
		if dups := checkSeqs(t, counts, len(counts)); dups != 0 {
			t.Errorf("pipeline %s: %d duplicates", id, dups)
		}
	}
}

// TestReloadWatch: with --watch, editing the file is a reload; a broken edit is reported once, not at
// every look, and the exit code stays 0.
func TestReloadWatch(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.yaml")
	one := `version: 1
pipelines:
  - id: one
    source: { plugin: generate, in_process: true, settings: { rate: 1000 } }
    sink:   { plugin: file, in_process: true, settings: { path: one.jsonl } }
`
	writeFile(t, cfg, one)
	cmd, stdout, stderr := startLockedSluice(t, dir, cfg, "--watch")
	waitForLines(t, filepath.Join(dir, "one.jsonl"), 500)
	// Written the way editors do: a new file renamed over the old one.
	two := one + strings.ReplaceAll(one[strings.Index(one, "  - id"):], "one", "two")
	writeFile(t, cfg+".tmp", two)
	if err := os.Rename(cfg+".tmp", cfg); err != nil {
		t.Fatal(err)
	}
	waitLog(t, stderr, `msg="reloaded the connector files" trigger="a connector file changed" added=two removed="" changed="" unchanged=1`)
	waitForLines(t, filepath.Join(dir, "two.jsonl"), 500)

	writeFile(t, cfg, "version: 1\npipelines: [\n")
	waitLog(t, stderr, `msg="reload rejected: the running pipelines keep running unchanged"`)
	time.Sleep(3 * time.Second)
	if n := strings.Count(syncString(stderr), "reload rejected:"); n != 1 {
		t.Errorf("the broken file was reported %d times:\n%s", n, syncString(stderr))
	}
	if !growing(t, filepath.Join(dir, "two.jsonl")) {
		t.Error("pipeline two stopped after a rejected reload")
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	code, _ := waitExit(t, cmd, 60*time.Second, stdout, stderr)
	if code != 0 || !strings.Contains(syncString(stdout), "pipeline two: stopped — ") {
		t.Fatalf("exit %d\n%s\n%s", code, syncString(stdout), syncString(stderr))
	}
}

// TestReloadFailedPipeline: a pipeline that failed for good, fixed in the file, runs again after a
// reload, and the exit code follows the run that ended last.
func TestReloadFailedPipeline(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.yaml")
	file := `version: 1
pipelines:
  - id: p
    source: { plugin: generate, settings: { rate: 2000 } }
    sink:   { plugin: misbehave, settings: { path: out.jsonl, open: %s } }
  - id: other
    source: { plugin: generate, in_process: true, settings: { rate: 100 } }
    sink:   { plugin: discard, in_process: true }
`
	writeFile(t, cfg, fmt.Sprintf(file, "permanent"))
	cmd, stdout, stderr := startLockedSluice(t, dir, cfg)
	waitLog(t, stderr, `msg="pipeline failed" pipeline=p`)
	writeFile(t, cfg, fmt.Sprintf(file, `""`))
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, stderr, `msg="reloaded the connector files" trigger=SIGHUP added="" removed="" changed=p unchanged=1`)
	waitForLines(t, filepath.Join(dir, "out.jsonl"), 1000)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, _ := waitExit(t, cmd, 60*time.Second, stdout, stderr)
	if code != 0 || !regexp.MustCompile(`pipeline p: stopped — .*, restarted once by reload`).MatchString(syncString(stdout)) {
		t.Fatalf("exit %d\n%s\n%s", code, syncString(stdout), syncString(stderr))
	}
}
