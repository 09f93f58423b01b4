// Package pythonsink tests the python-sink example plugin: it builds the plugin with build.sh and runs a
// real pipeline through it. The plugin itself is Python (sink.py, wire.py); see README.md.
package pythonsink

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// records is how many records the pipeline moves: enough for many batches.
const records = 20000

// TestPipelineThroughPythonSink builds the plugin (build.sh: a virtual environment with the pinned
// requirements, kept in out/python-sink between runs, and stubs generated from sdk/proto), then runs
// `sluice run` on generate → python-sink, both as subprocesses over mutual TLS, and checks that every
// record arrived once and in order, and that the host logged no warning or error.
func TestPipelineThroughPythonSink(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	here := filepath.Dir(file)
	root := filepath.Join(here, "..", "..")

	build := exec.Command("bash", filepath.Join(here, "build.sh"), filepath.Join(root, "out", "python-sink"))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the Python plugin failed: %v\n%s\nIt needs python3 (3.9 or later) with its venv module (on Debian: apt-get install python3-venv) and access to PyPI.", err, out)
	}
	pluginsDir := filepath.Join(root, "out", "python-sink", "plugins")

	tmp := t.TempDir()
	bin := filepath.Join(tmp, "bin")
	goBuild(t, filepath.Join(root, "runtime"), filepath.Join(bin, "sluice"), "./cmd/sluice")
	goBuild(t, filepath.Join(root, "plugins", "generate"), filepath.Join(bin, "plugins", "generate"), "./cmd/generate")

	output := filepath.Join(tmp, "records.jsonl")
	connector := filepath.Join(tmp, "python.yaml")
	yaml := fmt.Sprintf(`version: 1
pipelines:
  - id: python
    source:
      plugin: generate
      settings: { count: %d, payload_bytes: 32 }
    sink:
      plugin: python-sink
      settings: { path: %q }
`, records, output)
	if err := os.WriteFile(connector, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	run := exec.Command(filepath.Join(bin, "sluice"), "run", "--http", "off", "--data-dir", filepath.Join(tmp, "state"),
		"--plugins-dir", pluginsDir, connector)
	// A cache of its own: the user's spec cache may hold an older build of the launcher's spec.
	run.Env = append(os.Environ(), "XDG_CACHE_HOME="+filepath.Join(tmp, "cache"))
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("sluice run: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			t.Errorf("sluice logged: %s", l)
		}
	}
	if !strings.Contains(string(out), `msg="appending to file"`) {
		t.Errorf("the plugin's log line is not in sluice's log:\n%s", out)
	}

	// A file in a directory that does not exist: the plugin's FAILED_PRECONDITION fails the pipeline at
	// once (no retries), with the plugin's message.
	missing := filepath.Join(tmp, "missing", "records.jsonl")
	if err := os.WriteFile(connector, []byte(strings.Replace(yaml, output, missing, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	run = exec.Command(run.Path, run.Args[1:]...)
	run.Env = append(os.Environ(), "XDG_CACHE_HOME="+filepath.Join(tmp, "cache"))
	out, err = run.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("sluice run with a missing directory: %v, want exit status 1\n%s", err, out)
	}
	if want := "opening: " + missing + ": No such file or directory"; !strings.Contains(string(out), want) {
		t.Errorf("no %q in:\n%s", want, out)
	}
	if strings.Contains(string(out), "restarting from stored positions") {
		t.Errorf("a permanent error was retried:\n%s", out)
	}

	f, err := os.Open(output)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		var rec struct {
			Seq *int `json:"seq"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil || rec.Seq == nil {
			t.Fatalf("line %d: %q is not a generated record (%v)", n+1, sc.Text(), err)
		}
		if *rec.Seq != n {
			t.Fatalf("line %d holds record %d, want %d", n+1, *rec.Seq, n)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n != records {
		t.Fatalf("%d records arrived, want %d", n, records)
	}
}

func goBuild(t *testing.T, dir, out, pkg string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s in %s: %v\n%s", pkg, dir, err, b)
	}
}
