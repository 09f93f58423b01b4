package cli_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// binDir holds sluice and plugins/ built for these tests by TestMain, exactly as `make build` lays them out.
var binDir string

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-cli-test-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	// Every sluice the tests run caches plugin specs here, not in the user's cache.
	os.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	// TestCorpus's cases mostly wait (on timeouts, retries, servers), so unless -test.parallel says
	// otherwise, run at least 4 at a time rather than GOMAXPROCS.
	_ = flag.Set("test.parallel", strconv.Itoa(max(4, runtime.GOMAXPROCS(0))))
	code := func() int {
		defer os.RemoveAll(dir)
		if err := build(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

func build(dir string) error {
	root := repoRoot()
	// sluice is built as make build builds it: with the checkout recorded, where plugin init finds the SDK.
	steps := [][]string{{filepath.Join(root, "runtime"), filepath.Join(dir, "sluice"), "./cmd/sluice",
		"-ldflags=-X github.com/sluicehq/sluice/runtime/cli.SourceDir=" + root}}
	plugins, _ := filepath.Glob(filepath.Join(root, "plugins", "*", "cmd", "*"))
	for _, p := range plugins {
		name := filepath.Base(p)
		steps = append(steps, []string{filepath.Dir(filepath.Dir(p)), filepath.Join(dir, "plugins", name), "./cmd/" + name})
	}
	// The test plugin that fails on purpose goes into a directory of its own: tests that want it pass
	// --plugins-dir testPluginDir().
	steps = append(steps, []string{filepath.Join(root, "runtime"), filepath.Join(testPluginDir(), "misbehave"), "./internal/testplugin/misbehave"})
	for _, s := range steps {
		cmd := exec.Command("go", append([]string{"build", "-o", s[1]}, append(s[3:], s[2])...)...)
		cmd.Dir = s[0]
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %v\n%s", s[2], err, out)
		}
	}
	return nil
}

// testPluginDir holds plugins built only for tests (misbehave).
func testPluginDir() string { return filepath.Join(binDir, "testplugins") }

// sluice runs the built binary in dir and returns stdout, stderr and the exit code.
func sluice(t *testing.T, dir string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "sluice"), args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// seqCounts reads a JSON Lines file of {"seq":N,...} payloads and counts each seq.
func seqCounts(t *testing.T, path string) map[int]int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	counts := map[int]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		var v struct {
			Seq *int `json:"seq"`
		}
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil || v.Seq == nil {
			t.Fatalf("%s:%d: not a generate payload: %q (%v)", path, line, sc.Text(), err)
		}
		counts[*v.Seq]++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return counts
}

// checkSeqs checks that every seq in [0,n) is present and returns the number of duplicates.
func checkSeqs(t *testing.T, counts map[int]int, n int) int {
	t.Helper()
	dups := 0
	for i := 0; i < n; i++ {
		c := counts[i]
		if c == 0 {
			t.Fatalf("seq %d missing", i)
		}
		dups += c - 1
	}
	if len(counts) != n {
		t.Fatalf("%d distinct seqs, want %d", len(counts), n)
	}
	return dups
}

// children returns the pids of processes whose parent is pid.
func children(pid int) []int {
	var out []int
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
		// Fields after the command name, which is in parentheses and may contain spaces.
		rest := string(stat[bytes.LastIndexByte(stat, ')')+2:])
		fields := strings.Fields(rest)
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// pluginProcesses returns the pids of running processes started from this test's plugin binaries.
func pluginProcesses() []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && strings.HasPrefix(exe, filepath.Join(binDir, "plugins")+"/") {
			if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && !bytes.Contains(stat, []byte(") Z ")) {
				out = append(out, pid)
			}
		}
	}
	return out
}

// childRunning returns the pid of pid's child process running the named plugin binary, waiting for it.
func childRunning(t *testing.T, pid int, plugin string) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, c := range children(pid) {
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", c)); exe == filepath.Join(binDir, "plugins", plugin) {
				return c
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s plugin process under pid %d", plugin, pid)
	return 0
}
