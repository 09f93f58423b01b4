package cli_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestVersion(t *testing.T) {
	out, _, code := sluice(t, t.TempDir(), "version")
	if code != 0 || !strings.HasPrefix(out, "sluice ") || !strings.Contains(out, "plugin protocol v1") {
		t.Fatalf("version: exit %d, %q", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"run"}, {"validate"}, {"plugins", "describe"}, {"version", "extra"}, {"run", "--no-such-flag", "x.yaml"}, {"no-such-command"}} {
		_, errOut, code := sluice(t, t.TempDir(), args...)
		if code != 2 || errOut == "" {
			t.Errorf("sluice %v: exit %d, stderr %q; want exit 2 and a message", args, code, errOut)
		}
	}
}

func TestPlugins(t *testing.T) {
	out, errOut, code := sluice(t, t.TempDir(), "plugins", "list")
	if code != 0 {
		t.Fatalf("plugins list: exit %d\n%s", code, errOut)
	}
	for _, name := range []string{"generate", "file", "file-atomic", "stdout", "discard", "memory", "mongodb", "redis", "kafka"} {
		if !regexp.MustCompile(`(?m)^` + name + `\s`).MatchString(out) {
			t.Errorf("plugins list does not show %s:\n%s", name, out)
		}
	}
	out, _, code = sluice(t, t.TempDir(), "plugins", "describe", "generate")
	for _, want := range []string{"source:", "count", "rate", "payload_bytes"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("describe generate: exit %d, missing %q:\n%s", code, want, out)
		}
	}
	_, errOut, code = sluice(t, t.TempDir(), "plugins", "describe", "nope")
	if code != 2 || !strings.Contains(errOut, `unknown plugin "nope"`) {
		t.Errorf("describe nope: exit %d, %q", code, errOut)
	}
}

func TestPluginDirFromEnvAndFlag(t *testing.T) {
	// A plugins directory holding a copy of a plugin under another file name: plugins are identified by
	// their spec, so the copy is the same plugin and is refused as a duplicate.
	extra := t.TempDir()
	data, err := os.ReadFile(filepath.Join(binDir, "plugins", "discard"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(extra, "renamed"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := sluice(t, t.TempDir(), "--plugins-dir", extra, "plugins", "list")
	if code != 1 || !strings.Contains(errOut, `plugin "discard" is provided twice`) {
		t.Fatalf("duplicate plugin: exit %d, %q", code, errOut)
	}
}

func TestSameDirTwice(t *testing.T) {
	// The default directory named again by flag and by environment is searched once, not reported as
	// providing every plugin twice.
	cmd := exec.Command(filepath.Join(binDir, "sluice"), "--plugins-dir", filepath.Join(binDir, "plugins"), "plugins", "list")
	cmd.Env = append(os.Environ(), "SLUICE_PLUGINS_DIR="+filepath.Join(binDir, "plugins")+"/")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "generate") {
		t.Fatalf("plugins list: %v\n%s", err, out)
	}
}

// TestConfigsValidate validates every connector file shipped in configs/ and runs its inline tests.
func TestConfigsValidate(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(repoRoot(), "configs", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no connector files in configs/")
	}
	// The servers the demo files name come from the environment (make demo sets them).
	t.Setenv("MONGO_URI", "mongodb://127.0.0.1:27017")
	t.Setenv("REDIS_ADDR", "127.0.0.1:6379")
	t.Setenv("KAFKA_BROKERS", "127.0.0.1:9092")
	for _, f := range files {
		out, errOut, code := sluice(t, t.TempDir(), "validate", f)
		if code != 0 {
			t.Errorf("%s: exit %d\n%s", f, code, errOut)
		}
		if !strings.Contains(out, "pipeline ") {
			t.Errorf("%s: validate printed no pipeline: %q", f, out)
		}
		if out, errOut, code := sluice(t, t.TempDir(), "test", f); code != 0 {
			t.Errorf("%s: sluice test: exit %d\n%s%s", f, code, out, errOut)
		}
	}
	// The demo chain is exactly-once end to end.
	out, _, _ := sluice(t, t.TempDir(), "validate", filepath.Join(repoRoot(), "configs", "mongo-to-kafka.yaml"))
	if !strings.Contains(out, "mongodb → 4 steps → redis → kafka (exactly-once)") {
		t.Errorf("mongo-to-kafka.yaml: %q", out)
	}
}

// TestValidateGolden runs `sluice validate` on broken files and compares what it prints with golden files.
var knownPlugins = regexp.MustCompile(`known plugins: [a-z0-9_, -]+`)

func TestValidateGolden(t *testing.T) {
	dir := filepath.Join("testdata", "invalid")
	files, _ := filepath.Glob(filepath.Join(dir, "*.*"))
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, ".golden") {
			continue
		}
		n++
		t.Run(filepath.Base(f), func(t *testing.T) {
			abs, _ := filepath.Abs(dir)
			_, errOut, code := sluice(t, abs, "validate", filepath.Base(f))
			// The list of installed plugins changes as plugins are added; the goldens do not list them. The
			// plugins directory searched is where the test built sluice.
			errOut = knownPlugins.ReplaceAllString(errOut, "known plugins: …")
			errOut = strings.ReplaceAll(errOut, binDir, "$BIN")
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			golden := f + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(errOut), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if errOut != string(want) {
				t.Errorf("stderr differs from %s\n got:\n%s\nwant:\n%s", golden, errOut, want)
			}
		})
	}
	if n < 12 {
		t.Fatalf("only %d broken files; the suite wants at least a dozen", n)
	}
}

func TestRunQuickstart(t *testing.T) {
	dir := t.TempDir()
	out, errOut, code := sluice(t, dir, "run", filepath.Join(repoRoot(), "configs", "quickstart.yaml"))
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	counts := seqCounts(t, filepath.Join(dir, "out", "quickstart", "orders.jsonl"))
	if dups := checkSeqs(t, counts, 100000); dups != 0 {
		t.Fatalf("%d duplicates in a run without failures", dups)
	}
	if !strings.Contains(out, "100000 records read") || !strings.Contains(out, "100000 delivered") {
		t.Errorf("summary does not report the records: %q", out)
	}
	// The quickstart's transform steps ran: a shard was added and the padding dropped.
	first, err := os.ReadFile(filepath.Join(dir, "out", "quickstart", "orders.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if line, _, _ := strings.Cut(string(first), "\n"); line != `{"seq":0,"shard":0}` {
		t.Errorf("first line %q, want the transformed record", line)
	}
	// Running again resumes after the stored position: nothing more is written.
	if out, errOut, code := sluice(t, dir, "run", filepath.Join(repoRoot(), "configs", "quickstart.yaml")); code != 0 {
		t.Fatalf("second run: exit %d\n%s\n%s", code, out, errOut)
	}
	if got := len(seqCounts(t, filepath.Join(dir, "out", "quickstart", "orders.jsonl"))); got != 100000 {
		t.Fatalf("after a second run the file holds %d seqs", got)
	}
	// After a reset the pipeline starts over: every seq is written a second time.
	if out, errOut, code := sluice(t, dir, "reset", "quickstart"); code != 0 || !strings.Contains(out, "stored positions deleted") {
		t.Fatalf("reset: exit %d\n%s\n%s", code, out, errOut)
	}
	if _, errOut, code := sluice(t, dir, "run", filepath.Join(repoRoot(), "configs", "quickstart.yaml")); code != 0 {
		t.Fatalf("run after reset: exit %d\n%s", code, errOut)
	}
	for seq, n := range seqCounts(t, filepath.Join(dir, "out", "quickstart", "orders.jsonl")) {
		if n != 2 {
			t.Fatalf("after a reset and a run, seq %d is written %d times, want 2", seq, n)
		}
	}
}

const crashConfig = `version: 1
pipelines:
  - id: crash
    source: { plugin: generate, settings: { count: %d, rate: %d, payload_bytes: 100 } }
    sink:   { plugin: file, settings: { path: out.jsonl } }
    batch_max_records: 256
`

func writeCrashConfig(t *testing.T, dir string, count, rate int) string {
	t.Helper()
	path := filepath.Join(dir, "crash.yaml")
	writeFile(t, path, fmt.Sprintf(crashConfig, count, rate))
	return path
}

// TestKillSinkPlugin kills the sink's process mid-run: the host restarts the pipeline, every record
// arrives, and duplicates stay within what the host reports as redelivered.
func TestKillSinkPlugin(t *testing.T) {
	dir := t.TempDir()
	const count = 150000
	cfg := writeCrashConfig(t, dir, count, 50000)
	cmd := exec.Command(filepath.Join(binDir, "sluice"), "run", cfg)
	cmd.Dir = dir
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until records flow, so that the process found is the running sink (discovery starts each plugin
	// briefly to read its spec).
	waitForLines(t, filepath.Join(dir, "out.jsonl"), 20000)
	sink := childRunning(t, cmd.Process.Pid, "file")
	if err := syscall.Kill(sink, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sluice: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	dups := checkSeqs(t, seqCounts(t, filepath.Join(dir, "out.jsonl")), count)
	m := regexp.MustCompile(`(\d+) restarts(?:, (\d+) records redelivered)?`).FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("summary reports no restart:\n%s\n%s", stdout.String(), stderr.String())
	}
	redelivered, _ := strconv.Atoi(m[2])
	if dups > redelivered {
		t.Fatalf("%d duplicates, but only %d reported as redelivered:\n%s", dups, redelivered, stdout.String())
	}
	t.Logf("%d duplicates, %d reported redelivered", dups, redelivered)
}

// TestKillHost SIGKILLs sluice mid-run: its plugins die with it, and a second run completes the job and
// reports as redelivered at least the duplicates the crash caused (from the in-flight count the killed
// process left in the data directory).
func TestKillHost(t *testing.T) {
	dir := t.TempDir()
	const count = 150000
	cfg := writeCrashConfig(t, dir, count, 50000)
	cmd := exec.Command(filepath.Join(binDir, "sluice"), "run", cfg)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitForLines(t, filepath.Join(dir, "out.jsonl"), 20000)
	childRunning(t, cmd.Process.Pid, "file")
	childRunning(t, cmd.Process.Pid, "generate")
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for len(pluginProcesses()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if left := pluginProcesses(); len(left) > 0 {
		t.Fatalf("plugin processes %v outlived the host by 5s", left)
	}
	before := len(seqCounts(t, filepath.Join(dir, "out.jsonl")))
	if before == 0 || before >= count {
		t.Fatalf("the killed run wrote %d records; the test wants it killed mid-run", before)
	}
	out, errOut, code := sluice(t, dir, "run", cfg)
	if code != 0 {
		t.Fatalf("second run: exit %d\n%s\n%s", code, out, errOut)
	}
	dups := checkSeqs(t, seqCounts(t, filepath.Join(dir, "out.jsonl")), count)
	redelivered := 0
	if m := regexp.MustCompile(`(\d+) records redelivered`).FindStringSubmatch(out); m != nil {
		redelivered, _ = strconv.Atoi(m[1])
	}
	if dups > redelivered {
		t.Fatalf("%d duplicates, but the second run reported %d redelivered:\n%s\n%s", dups, redelivered, out, errOut)
	}
	t.Logf("killed after %d records; %d duplicates after the restart, %d reported redelivered", before, dups, redelivered)
}

// waitForLines waits until the file at path holds at least n newlines.
func waitForLines(t *testing.T, path string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(path); err == nil && strings.Count(string(data), "\n") >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not reach %d lines", path, n)
}

// TestPluginDocsCurrent checks that docs/plugins/*.md match what the plugins' specs generate (make docs).
func TestPluginDocsCurrent(t *testing.T) {
	for _, name := range []string{"generate", "file", "file-atomic", "stdout", "discard", "memory", "mongodb", "redis", "kafka"} {
		out, errOut, code := sluice(t, t.TempDir(), "plugins", "describe", "--markdown", name)
		if code != 0 {
			t.Fatalf("describe --markdown %s: exit %d\n%s", name, code, errOut)
		}
		path := filepath.Join(repoRoot(), "docs", "plugins", name+".md")
		if *update {
			writeFile(t, path, out)
		}
		want, err := os.ReadFile(path)
		if err != nil || string(want) != out {
			t.Errorf("%s is not current (run make docs): %v", path, err)
		}
	}
}

// TestSignalDrains sends SIGTERM to a running sluice: it drains (every record read is delivered and its
// position stored), exits 0, and a second run continues exactly where the first stopped.
func TestSignalDrains(t *testing.T) {
	dir := t.TempDir()
	cfg := writeCrashConfig(t, dir, 0, 20000) // endless
	cmd := exec.Command(filepath.Join(binDir, "sluice"), "run", cfg)
	cmd.Dir = dir
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitForLines(t, filepath.Join(dir, "out.jsonl"), 5000)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sluice after SIGTERM: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "pipeline crash: stopped — ") {
		t.Fatalf("summary after a drain: %q", stdout.String())
	}
	first := len(seqCounts(t, filepath.Join(dir, "out.jsonl")))
	if dups := checkSeqs(t, seqCounts(t, filepath.Join(dir, "out.jsonl")), first); dups != 0 {
		t.Fatalf("%d duplicates after a drain", dups)
	}
	// The second run starts after the stored position: stop it once it has written more.
	cmd = exec.Command(filepath.Join(binDir, "sluice"), "run", cfg)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitForLines(t, filepath.Join(dir, "out.jsonl"), first+2000)
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("second run after SIGINT: %v", err)
	}
	counts := seqCounts(t, filepath.Join(dir, "out.jsonl"))
	if dups := checkSeqs(t, counts, len(counts)); dups != 0 {
		t.Fatalf("%d duplicates across a drained restart", dups)
	}
}

// TestPipelinesIsolated runs a pipeline whose sink rejects its settings at open (a file the file-atomic
// sink did not write: validate cannot know) beside a healthy one: the bad one fails, the other completes,
// and the exit code is 1. With fail_fast the healthy one is stopped too.
func TestPipelinesIsolated(t *testing.T) {
	const file = `version: 1
fail_fast: %v
pipelines:
  - id: bad
    source: { plugin: generate, settings: { count: 10 } }
    sink:   { plugin: file-atomic, settings: { path: taken.jsonl } }
  - id: good
    source: { plugin: generate, settings: { count: 20000, rate: %d } }
    sink:   { plugin: file, settings: { path: good.jsonl } }
`
	for _, tt := range []struct {
		failFast bool
		rate     int
		want     string
	}{
		{false, 0, "pipeline good: done — 20000 records read"},
		{true, 1000, "pipeline good: stopped — "},
	} {
		t.Run(fmt.Sprint("fail_fast=", tt.failFast), func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "p.yaml"), fmt.Sprintf(file, tt.failFast, tt.rate))
			writeFile(t, filepath.Join(dir, "taken.jsonl"), "written by someone else\n")
			out, errOut, code := sluice(t, dir, "run", "p.yaml")
			if code != 1 || !strings.Contains(out, "pipeline bad: failed: ") || !strings.Contains(out, tt.want) {
				t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
			}
			if !strings.Contains(errOut, "it was not written by the file-atomic sink") {
				t.Errorf("the failure's reason is not logged:\n%s", errOut)
			}
			n := len(seqCounts(t, filepath.Join(dir, "good.jsonl")))
			if tt.failFast && n >= 20000 {
				t.Errorf("fail_fast: the healthy pipeline ran to the end (%d records)", n)
			}
			if !tt.failFast && n != 20000 {
				t.Errorf("the healthy pipeline delivered %d records, want 20000", n)
			}
		})
	}
}

// TestLargeRecords sends 16 MiB records (a MongoDB document at its size limit, plus envelope) through
// subprocess plugins over TLS, each larger than batch_max_bytes, so each travels alone.
func TestLargeRecords(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "big.yaml"), `version: 1
pipelines:
  - id: big
    source: { plugin: generate, settings: { count: 3, payload_bytes: 16777216 } }
    sink:   { plugin: file, settings: { path: big.jsonl } }
`)
	out, errOut, code := sluice(t, dir, "run", "big.yaml")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	data, err := os.ReadFile(filepath.Join(dir, "big.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3", len(lines))
	}
	for i, l := range lines {
		if len(l) != 16777216 || !strings.HasPrefix(l, fmt.Sprintf(`{"seq":%d,`, i)) {
			t.Fatalf("line %d: %d bytes starting %q", i, len(l), l[:min(len(l), 20)])
		}
	}
	// A limit below the record's size fails clearly instead of hanging.
	writeFile(t, filepath.Join(dir, "big.yaml"), `version: 1
pipelines:
  - id: small-limit
    source: { plugin: generate, settings: { count: 1, payload_bytes: 2097152 } }
    sink:   { plugin: discard }
`)
	cmd := exec.Command(filepath.Join(binDir, "sluice"), "--max-message-bytes", "1048576", "run", "big.yaml")
	cmd.Dir = dir
	outb, _ := cmd.CombinedOutput()
	if !strings.Contains(string(outb), "larger than max") && !strings.Contains(string(outb), "ResourceExhausted") {
		t.Fatalf("a record over --max-message-bytes did not report the limit:\n%.2000s", outb)
	}
}

const testsConfig = `version: 1
pipelines:
  - id: orders
    source: { plugin: generate }
    transforms:
      - filter: 'operationType in ["insert", "update"] && fullDocument.total > 100'
      - set: { "fullDocument.total_cents": 'int(fullDocument.total * 100)' }
      - drop: [fullDocument.card]
      - route: '"shop." + ns.coll'
      - key: 'string(documentKey._id)'
    sink: { plugin: discard }
tests:
  - name: big orders pass, small are dropped
    input:
      - { operationType: insert, ns: { coll: orders }, documentKey: { _id: { $oid: 64f1a2b3c4d5e6f708192a3b } }, fullDocument: { total: 150, card: "4111" } }
      - { operationType: insert, ns: { coll: orders }, documentKey: { _id: 2 }, fullDocument: { total: 5 } }
    expect:
      - payload: { operationType: insert, ns: { coll: orders }, documentKey: { _id: { $oid: 64f1a2b3c4d5e6f708192a3b } }, fullDocument: { total: 150, total_cents: 15000 } }
        key: 64f1a2b3c4d5e6f708192a3b
        meta: { sluice.route: shop.orders }
  - name: a wrong expectation
    input:
      - { operationType: update, ns: { coll: orders }, documentKey: { _id: 7 }, fullDocument: { total: 200.5 } }
    expect:
      - { operationType: update, ns: { coll: orders }, documentKey: { _id: 7 }, fullDocument: { total: 200.5, total_cents: 20050.0 } }
      - { operationType: update }
`

// TestTestCommand runs inline tests: a passing one, a failing one with a readable diff, and --run.
func TestTestCommand(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "orders.yaml"), []byte(testsConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := sluice(t, dir, "test", "orders.yaml")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"PASS  orders.yaml: big orders pass, small are dropped",
		"FAIL  orders.yaml:21:5: a wrong expectation (pipeline orders)",
		"want 2 records, got 1",
		"record 1: fullDocument.total_cents: want 20050 (float), got 20050 (int)",
		"record 2: missing",
		"1 of 2 tests failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, _, code = sluice(t, dir, "test", "--run", "big orders", "orders.yaml")
	if code != 0 || !strings.Contains(out, "all 1 tests passed") {
		t.Fatalf("--run: exit %d\n%s", code, out)
	}
	// The quickstart's own tests pass.
	out, errOut, code = sluice(t, dir, "test", filepath.Join(repoRoot(), "configs", "quickstart.yaml"))
	if code != 0 {
		t.Fatalf("quickstart tests: exit %d\n%s\n%s", code, out, errOut)
	}
}
