package cli_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk/sdktest"
)

func digestOf(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// copyPlugin copies the test plugin misbehave into a directory of its own and returns its path.
func copyPlugin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	copyFile(t, filepath.Join(testPlugins(t), "misbehave"), filepath.Join(dir, "misbehave"))
	return filepath.Join(dir, "misbehave")
}

// replace puts a different build of the same program at path, as an installer does: a new file renamed
// over the old one (the bytes appended do not change what it runs).
func replace(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".new", append(data, "a different build"...), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// TestPinRefusedAtLoadAndRestart pins a stage's plugin with sha256: validate accepts the binary it names,
// and once the binary is replaced refuses it, naming where the pin is, both digests and the path. A run
// started before the replacement fails for good at the next restart of the plugin, with the same message.
func TestPinRefusedAtLoadAndRestart(t *testing.T) {
	bin := copyPlugin(t)
	pinned := digestOf(t, bin)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.yaml")
	writeFile(t, cfg, `version: 1
pipelines:
  - id: pinned
    source: { plugin: generate, settings: { rate: 2000 }, in_process: true }
    sink:
      plugin: misbehave
      sha256: `+pinned+`
      settings: { path: out.jsonl }
`)
	plugins := filepath.Dir(bin)
	if _, errOut, code := sluice(t, dir, "--plugins-dir", plugins, "validate", "p.yaml"); code != 0 {
		t.Fatalf("validate with the pinned binary: exit %d\n%s", code, errOut)
	}

	cmd := exec.Command(filepath.Join(binDir, "sluice"), "--plugins-dir", plugins, "run", "p.yaml")
	cmd.Dir = dir
	stdout, stderr := &sdktest.Output{}, &sdktest.Output{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	waitForLines(t, filepath.Join(dir, "out.jsonl"), 100)
	sink := 0
	for _, c := range children(cmd.Process.Pid) {
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", c)); exe == bin {
			sink = c
		}
	}
	if sink == 0 {
		t.Fatalf("no sink process running %s", bin)
	}
	replace(t, bin)
	replaced := digestOf(t, bin)
	if err := syscall.Kill(sink, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	code, _ := waitExit(t, cmd, 30*time.Second, &strings.Builder{}, &strings.Builder{})

	msg := fmt.Sprintf(`p.yaml:7:15: plugin "misbehave": binary %s has sha256 %s, but %s is pinned; if the new binary is trusted, write its digest here`, bin, replaced, pinned)
	if code != 1 || !strings.Contains(stdout.String(), "pipeline pinned: failed: starting sink \"misbehave\": "+msg+"\n") {
		t.Errorf("run: exit %d, want 1 and the pipeline failed with\n%s\nstdout:\n%s\nstderr:\n%s", code, msg, stdout, stderr)
	}
	if n := strings.Count(stderr.String(), "pipeline failed; restarting"); n != 1 {
		t.Errorf("%d restarts logged, want the one after the kill (the pin failure is permanent):\n%s", n, stderr)
	}

	_, errOut, code := sluice(t, dir, "--plugins-dir", plugins, "validate", "p.yaml")
	if want := msg + "\n1 problem found\n"; code != 2 || errOut != want {
		t.Errorf("validate with the replaced binary: exit %d\n%s\nwant exit 2 and\n%s", code, errOut, want)
	}
}

// TestPluginsLock: lock pins the binaries of the stages that run one, in sluice.lock beside each file;
// validate then accepts them, refuses a stage whose plugin the lock misses and a binary whose digest
// changed; lock again adds and updates lines and keeps the others; a broken lock file is not overwritten.
func TestPluginsLock(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.yaml"), `version: 1
pipelines:
  - id: a
    source: { plugin: generate, settings: { count: 5 } }
    sink: { plugin: file, settings: { path: out.jsonl } }
  - id: b
    source: { plugin: generate, settings: { count: 5 }, in_process: true }
    buffer: { plugin: memory, in_process: true }
    sink: { plugin: discard }
`)
	writeFile(t, filepath.Join(dir, "sub", "q.yaml"), `version: 1
pipelines:
  - id: q
    source: { plugin: generate, settings: { count: 5 }, in_process: true }
    sink: { plugin: stdout }
`)
	writeFile(t, filepath.Join(dir, "only-in-process", "r.yaml"), `version: 1
pipelines:
  - id: r
    source: { plugin: generate, in_process: true }
    sink: { plugin: discard, in_process: true }
`)
	plugins := filepath.Join(binDir, "plugins")
	sum := func(name string) string { return digestOf(t, filepath.Join(plugins, name)) }
	out, errOut, code := sluice(t, dir, "plugins", "lock", "p.yaml", "sub/q.yaml", "only-in-process/r.yaml")
	want := fmt.Sprintf(`sluice.lock: added discard sha256:%s (%s/discard)
sluice.lock: added file sha256:%s (%s/file)
sluice.lock: added generate sha256:%s (%s/generate)
sub/sluice.lock: added stdout sha256:%s (%s/stdout)
only-in-process/sluice.lock: not written: no stage of the files there runs a plugin binary without a sha256 of its own
`, sum("discard"), plugins, sum("file"), plugins, sum("generate"), plugins, sum("stdout"), plugins)
	if code != 0 || out != want {
		t.Fatalf("plugins lock: exit %d\n%s%s\nwant:\n%s", code, out, errOut, want)
	}
	lockText := func(path string) string {
		data, err := os.ReadFile(filepath.Join(dir, path))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	header := "# sluice.lock: the plugin binaries the connector files in this directory may run, by SHA-256.\n" +
		"# Written by \"sluice plugins lock FILE...\"; checked by \"sluice validate\", \"run\" and \"test\". Commit it.\n"
	if got, want := lockText("sluice.lock"), header+"discard sha256:"+sum("discard")+"\nfile sha256:"+sum("file")+"\ngenerate sha256:"+sum("generate")+"\n"; got != want {
		t.Errorf("sluice.lock:\n%s\nwant:\n%s", got, want)
	}
	if got, want := lockText("sub/sluice.lock"), header+"stdout sha256:"+sum("stdout")+"\n"; got != want {
		t.Errorf("sub/sluice.lock:\n%s\nwant:\n%s", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "only-in-process", "sluice.lock")); !os.IsNotExist(err) {
		t.Errorf("a lock file was written for in-process stages only: %v", err)
	}
	if _, errOut, code := sluice(t, dir, "validate", "p.yaml", "sub/q.yaml"); code != 0 {
		t.Fatalf("validate after lock: exit %d\n%s", code, errOut)
	}
	if out, errOut, code := sluice(t, dir, "run", "--data-dir", "state", "p.yaml"); code != 0 {
		t.Fatalf("run after lock: exit %d\n%s%s", code, out, errOut)
	}

	// Locking again changes nothing, and does not rewrite the file.
	before, _ := os.Stat(filepath.Join(dir, "sluice.lock"))
	out, _, code = sluice(t, dir, "plugins", "lock", "p.yaml")
	if code != 0 || strings.Count(out, ": unchanged ") != 3 {
		t.Errorf("lock again: exit %d\n%s", code, out)
	}
	if after, _ := os.Stat(filepath.Join(dir, "sluice.lock")); !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("lock rewrote an unchanged lock file")
	}

	// A plugin the lock does not pin is refused where the stage is written.
	text, _ := os.ReadFile(filepath.Join(dir, "p.yaml"))
	writeFile(t, filepath.Join(dir, "p.yaml"), string(text)+`  - id: c
    source: { plugin: generate, settings: { count: 5 } }
    sink: { plugin: stdout }
`)
	_, errOut, code = sluice(t, dir, "validate", "p.yaml")
	if want := `p.yaml:12:11: plugin "stdout" is not pinned in sluice.lock, which must pin every plugin binary the connector files beside it run: run "sluice plugins lock p.yaml", or give the stage a sha256` + "\n1 problem found\n"; code != 2 || errOut != want {
		t.Errorf("validate with an unpinned plugin: exit %d\n%s\nwant:\n%s", code, errOut, want)
	}
	// A line for a plugin no file uses is kept; the new plugin is added.
	if err := os.WriteFile(filepath.Join(dir, "sluice.lock"), []byte(lockText("sluice.lock")+"kafka sha256:"+strings.Repeat("ab", 32)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, code = sluice(t, dir, "plugins", "lock", "p.yaml")
	if code != 0 || !strings.Contains(out, "sluice.lock: added stdout sha256:"+sum("stdout")) {
		t.Errorf("lock with a new plugin: exit %d\n%s", code, out)
	}
	if got := lockText("sluice.lock"); !strings.Contains(got, "\nkafka sha256:"+strings.Repeat("ab", 32)+"\n") || !strings.Contains(got, "\nstdout sha256:") {
		t.Errorf("sluice.lock after adding stdout:\n%s", got)
	}

	// A digest that is not the binary's: validate and run refuse it where the lock file pins it.
	wrong := strings.Repeat("0", 64)
	if err := os.WriteFile(filepath.Join(dir, "sluice.lock"), []byte(strings.Replace(lockText("sluice.lock"), sum("generate"), wrong, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	line := 0
	for i, l := range strings.Split(lockText("sluice.lock"), "\n") {
		if strings.HasPrefix(l, "generate ") {
			line = i + 1
		}
	}
	msg := fmt.Sprintf(`sluice.lock:%d:10: plugin "generate": binary %s/generate has sha256 %s, but %s is pinned; if the new binary is trusted, run "sluice plugins lock" on the connector files again`,
		line, plugins, sum("generate"), wrong)
	for _, args := range [][]string{{"validate", "p.yaml"}, {"run", "--data-dir", "state", "p.yaml"}} {
		_, errOut, code = sluice(t, dir, args...)
		if code != 2 || errOut != msg+"\n1 problem found\n" {
			t.Errorf("%v with a wrong digest: exit %d\n%s\nwant:\n%s", args, code, errOut, msg)
		}
	}
	out, _, code = sluice(t, dir, "plugins", "lock", "p.yaml")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("sluice.lock: changed generate sha256:%s (%s/generate), was sha256:%s\n", sum("generate"), plugins, wrong)) {
		t.Errorf("lock over a wrong digest: exit %d\n%s", code, out)
	}

	// A lock file sluice cannot read is reported, and lock leaves it alone.
	broken := "generate sha256:xyz\n"
	if err := os.WriteFile(filepath.Join(dir, "sluice.lock"), []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"validate", "p.yaml"}, {"plugins", "lock", "p.yaml"}} {
		_, errOut, code = sluice(t, dir, args...)
		if code != 2 || !strings.HasPrefix(errOut, `sluice.lock:1:10: plugin "generate": want sha256: and 64 lower-case hex digits, got "sha256:xyz"`+"\n") {
			t.Errorf("%v with a broken lock file: exit %d\n%s", args, code, errOut)
		}
	}
	if lockText("sluice.lock") != broken {
		t.Errorf("lock overwrote a lock file it could not read")
	}
}

// TestDiscoveryRefusesUntrusted: a plugin binary another user could replace is skipped with a warning,
// and a file using it is told why the plugin is not there.
func TestDiscoveryRefusesUntrusted(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.yaml"), "version: 1\npipelines:\n  - id: p\n    source: { plugin: generate }\n    sink: { plugin: misbehave, settings: { path: out } }\n")
	for _, c := range []struct {
		name   string
		spoil  func(bin string)
		reason string
	}{
		{"group-writable", func(bin string) { chmod(t, bin, 0o775) }, "is writable by its group (mode 0775)"},
		{"world-writable directory", func(bin string) { chmod(t, filepath.Dir(bin), 0o777) },
			"is in directory {dir}, which is writable by everyone (mode 0777)"},
		{"owned by another user", func(bin string) {
			if err := os.Chown(bin, 4242, 4242); err != nil {
				t.Fatalf("chown (the test needs to run as root): %v", err)
			}
		}, "is owned by uid 4242, not by the user running sluice (uid {uid}) or root"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bin := copyPlugin(t)
			c.spoil(bin)
			reason := strings.NewReplacer("{uid}", fmt.Sprint(os.Geteuid()), "{dir}", filepath.Dir(bin)).Replace(c.reason) +
				"; anyone who can write it can replace the plugin"
			_, errOut, code := sluice(t, dir, "--plugins-dir", filepath.Dir(bin), "validate", "p.yaml")
			warning := fmt.Sprintf(`level=WARN msg="skipping plugin file" path=%s reason=%q`, bin, reason)
			problem := `p.yaml:5:21: unknown plugin "misbehave"`
			skipped := fmt.Sprintf("skipped: %s (%s)\n1 problem found\n", bin, reason)
			if code != 2 || !strings.Contains(errOut, warning+"\n") || !strings.Contains(errOut, problem) || !strings.HasSuffix(errOut, skipped) {
				t.Errorf("validate: exit %d\n%s\nwant the warning %s\nand %s…%s", code, errOut, warning, problem, skipped)
			}
		})
	}
}

// wrapperPlugin writes a plugins directory holding a script that counts its starts in a file and runs
// misbehave; it returns the directory and a function reading the count.
func wrapperPlugin(t *testing.T) (string, func() int) {
	t.Helper()
	dir, ran := t.TempDir(), filepath.Join(t.TempDir(), "ran")
	script(t, filepath.Join(dir, "mb"), fmt.Sprintf("#!/bin/sh\necho x >> %s\nexec %s \"$@\"\n", ran, filepath.Join(testPlugins(t), "misbehave")))
	return dir, func() int {
		data, _ := os.ReadFile(ran)
		return strings.Count(string(data), "x")
	}
}

// TestSpecCacheSpares: with the spec cached (in $XDG_CACHE_HOME/sluice/plugin-specs), plugins list and
// validate do not start a plugin binary again until it changes; a corrupt entry is rewritten; sluice
// processes filling the cache at once all work and leave it whole.
func TestSpecCacheSpares(t *testing.T) {
	plugins, starts := wrapperPlugin(t)
	cache := t.TempDir()
	env := append(os.Environ(), "XDG_CACHE_HOME="+cache)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(binDir, "sluice"), append([]string{"--plugins-dir", plugins}, args...)...)
		cmd.Env, cmd.Dir = env, t.TempDir()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sluice %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	list := run("plugins", "list")
	if !strings.Contains(list, "subprocess "+filepath.Join(plugins, "mb")) || starts() != 1 {
		t.Fatalf("first plugins list: %d starts\n%s", starts(), list)
	}
	entries, err := filepath.Glob(filepath.Join(cache, "sluice", "plugin-specs", "*.json"))
	if err != nil || len(entries) != 10 { // the 9 first-party plugins and mb
		t.Fatalf("cache entries %v, %v; want 10", entries, err)
	}
	if again := run("plugins", "list"); again != list || starts() != 1 {
		t.Errorf("second plugins list: %d starts\n%s", starts(), again)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.yaml"), "version: 1\npipelines:\n  - id: p\n    source: { plugin: generate }\n    sink: { plugin: misbehave, settings: { path: out } }\n")
	run("validate", filepath.Join(dir, "p.yaml"))
	if starts() != 1 {
		t.Errorf("validate started the cached plugin: %d starts", starts())
	}

	// Changed: probed again.
	data, _ := os.ReadFile(filepath.Join(plugins, "mb"))
	script(t, filepath.Join(plugins, "mb"), string(data)+"# changed\n")
	run("plugins", "list")
	if starts() != 2 {
		t.Errorf("a changed binary was not started again: %d starts", starts())
	}
	// Corrupt entries: ignored and rewritten.
	for _, e := range entries {
		if err := os.WriteFile(e, []byte("{garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := run("plugins", "list"); got != list || starts() != 3 {
		t.Errorf("with corrupt entries: %d starts\n%s", starts(), got)
	}
	for _, e := range entries {
		var v map[string]any
		if data, _ := os.ReadFile(e); json.Unmarshal(data, &v) != nil {
			t.Errorf("entry %s was not rewritten: %s", e, data)
		}
	}

	// Several processes filling an empty cache at once.
	cache = t.TempDir()
	env = append(os.Environ(), "XDG_CACHE_HOME="+cache)
	var wg sync.WaitGroup
	outs := make([]string, 4)
	for i := range outs {
		wg.Go(func() { outs[i] = run("plugins", "list") })
	}
	wg.Wait()
	for i, o := range outs {
		if o != list {
			t.Errorf("concurrent plugins list %d:\n%s\nwant:\n%s", i, o, list)
		}
	}
	files, _ := os.ReadDir(filepath.Join(cache, "sluice", "plugin-specs"))
	if len(files) != 10 {
		t.Errorf("%d files in the cache after concurrent runs, want 10 entries", len(files))
	}
	for _, f := range files {
		var v struct {
			Spec struct{ Name string } `json:"spec"`
		}
		if data, _ := os.ReadFile(filepath.Join(cache, "sluice", "plugin-specs", f.Name())); json.Unmarshal(data, &v) != nil || v.Spec.Name == "" {
			t.Errorf("entry %s: %s", f.Name(), data)
		}
	}
}

// TestKilledHostSocketsRemoved SIGKILLs sluice while its plugins run: their sockets stay behind in the
// host's socket directory, and the next sluice removes that directory — but not the directory of a sluice
// still running, nor sockets it cannot prove are sluice's.
func TestKilledHostSocketsRemoved(t *testing.T) {
	tmp := t.TempDir()
	base := filepath.Join(tmp, fmt.Sprintf("sluice-%d", os.Geteuid()))
	foreign := filepath.Join(tmp, "plugin123456")
	writeFile(t, foreign, "another program's") // go-plugin's default place: never touched
	env := append(os.Environ(), "TMPDIR="+tmp)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.yaml"), `version: 1
pipelines:
  - id: p
    source: { plugin: generate, settings: { rate: 100 } }
    sink: { plugin: discard }
`)
	start := func() (*exec.Cmd, *sdktest.Output) {
		cmd := exec.Command(filepath.Join(binDir, "sluice"), "run", "--data-dir", t.TempDir(), "p.yaml")
		cmd.Dir, cmd.Env = dir, env
		out := &sdktest.Output{}
		cmd.Stderr = out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(out.String(), `msg="pipeline started"`) {
			if time.Now().After(deadline) {
				t.Fatalf("no pipeline started:\n%s", out)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return cmd, out
	}
	hostDirs := func() map[string][]string {
		dirs := map[string][]string{}
		entries, _ := os.ReadDir(base)
		for _, e := range entries {
			files, _ := filepath.Glob(filepath.Join(base, e.Name(), "plugin*"))
			dirs[e.Name()] = files
		}
		return dirs
	}

	killed, _ := start()
	dead := hostDirs()
	if len(dead) != 1 {
		t.Fatalf("socket directories %v, want the running host's", dead)
	}
	for _, socks := range dead {
		if len(socks) != 2 {
			t.Fatalf("sockets %v, want the source's and the sink's", socks)
		}
	}
	if err := killed.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = killed.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for len(pluginProcesses()) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := hostDirs(); len(got) != 1 || !equalDirs(got, dead) {
		t.Fatalf("after SIGKILL: %v, want the sockets left behind: %v", got, dead)
	}

	alive, aliveLog := start()
	running := hostDirs()
	for name := range dead {
		if _, ok := running[name]; ok {
			t.Errorf("the killed host's directory %s is still there after the next sluice started: %v", name, running)
		}
	}
	if len(running) != 1 {
		t.Errorf("socket directories %v, want the running host's only", running)
	}
	// A third sluice leaves the running one's directory alone.
	cmd := exec.Command(filepath.Join(binDir, "sluice"), "plugins", "list")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("plugins list: %v\n%s", err, out)
	}
	if got := hostDirs(); !equalDirs(got, running) {
		t.Errorf("plugins list changed the running host's socket directory: %v, was %v", got, running)
	}
	if err := alive.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := alive.Wait(); err != nil {
		t.Fatalf("stopped run: %v\n%s", err, aliveLog)
	}
	if got := hostDirs(); len(got) != 0 {
		t.Errorf("socket directories after a clean stop: %v, want none", got)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("a file that is not sluice's was removed: %v", err)
	}
}

func equalDirs(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if strings.Join(v, ",") != strings.Join(b[k], ",") {
			return false
		}
	}
	return true
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
