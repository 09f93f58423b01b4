package cli_test

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

var (
	testPluginsOnce sync.Once
	testPluginsErr  error
)

// testPlugins builds the misbehave test plugin into binDir/testplugins, once: misbehave, misbehave-v2
// (serves plugin protocol version 2) and misbehave-broken (answers with an invalid spec).
func testPlugins(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(binDir, "testplugins")
	testPluginsOnce.Do(func() {
		for _, b := range []struct{ name, ldflags string }{
			{"misbehave", ""}, {"misbehave-v2", "-X main.protocolVersion=2"}, {"misbehave-broken", "-X main.brokenSpec=true"},
		} {
			cmd := exec.Command("go", "build", "-ldflags", b.ldflags, "-o", filepath.Join(dir, b.name), ".")
			cmd.Dir = filepath.Join(repoRoot(), "runtime", "internal", "testplugin", "misbehave")
			if out, err := cmd.CombinedOutput(); err != nil {
				testPluginsErr = fmt.Errorf("building %s: %v\n%s", b.name, err, out)
				return
			}
		}
	})
	if testPluginsErr != nil {
		t.Fatal(testPluginsErr)
	}
	return dir
}

func symlink(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

func script(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestDiscoverySkipsBadExecutables puts every kind of executable that is not a working plugin into a
// plugins directory: each is skipped with one warning naming the file and why, the plugins beside them
// still work, and a plugin installed as a symlink is found.
func TestDiscoverySkipsBadExecutables(t *testing.T) {
	tp := testPlugins(t)
	extra := t.TempDir()
	symlink(t, filepath.Join(tp, "misbehave"), filepath.Join(extra, "misbehave"))
	symlink(t, filepath.Join(tp, "misbehave-v2"), filepath.Join(extra, "v2"))
	symlink(t, filepath.Join(tp, "misbehave-broken"), filepath.Join(extra, "broken-spec"))
	script(t, filepath.Join(extra, "garbage"), "#!/bin/sh\necho 'hello|from|a|script'\nsleep 30\n")
	script(t, filepath.Join(extra, "exits"), "#!/bin/sh\necho 'exits: missing license file' >&2\nexit 3\n")
	script(t, filepath.Join(extra, "crashes"), "#!/bin/sh\nprintf 'panic: nil map\\n\\ngoroutine 1 [running]:\\nmain.main()\\n\\t/src/crashes/main.go:7 +0x1d\\n' >&2\nexit 2\n")
	script(t, filepath.Join(extra, "hangs"), "#!/bin/sh\nsleep 60\n")

	out, errOut, code := sluice(t, t.TempDir(), "--plugins-dir", extra, "plugins", "list")
	if code != 0 {
		t.Fatalf("plugins list: exit %d\n%s", code, errOut)
	}
	for _, name := range []string{"generate", "file", "misbehave"} {
		if !regexp.MustCompile(`(?m)^` + name + `\s`).MatchString(out) {
			t.Errorf("plugins list does not show %s:\n%s", name, out)
		}
	}
	if !strings.Contains(out, "subprocess "+filepath.Join(extra, "misbehave")) {
		t.Errorf("misbehave is not run from its symlink:\n%s", out)
	}
	for file, reason := range map[string]string{
		"v2":          "speaks plugin protocol version 2; this sluice speaks version 1",
		"broken-spec": `invalid spec: name \"Not A Name\"`,
		"garbage":     "printed something other than the plugin handshake on stdout",
		"exits":       "ended before the plugin handshake: it exited with status 3: exits: missing license file",
		"crashes":     "ended before the plugin handshake: it panicked: nil map (main.main at /src/crashes/main.go:7)",
		"hangs":       "did not complete the plugin handshake within 10s",
	} {
		line := `level=WARN msg="skipping plugin file" path=` + filepath.Join(extra, file) + ` reason="` + reason
		if n := strings.Count(errOut, line); n != 1 {
			t.Errorf("%d warnings %s…, want 1:\n%s", n, line, errOut)
		}
	}
	if n := strings.Count(errOut, "\n"); n != 6 {
		t.Errorf("%d lines on stderr, want the 6 warnings:\n%s", n, errOut)
	}
}

// TestUnknownPluginSaysWhereItLooked: a plugin name that is not found is reported with the directories
// searched and the files skipped, in validate's file:line:col message and in plugins describe.
func TestUnknownPluginSaysWhereItLooked(t *testing.T) {
	extra := t.TempDir()
	script(t, filepath.Join(extra, "nope"), "#!/bin/sh\necho 'I am nope'\n")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.yaml"), "version: 1\npipelines:\n  - id: p\n    source: { plugin: nope }\n    sink: { plugin: discard }\n")
	hint := fmt.Sprintf(`searched %s, %s; skipped: %s (printed "I am nope" on stdout instead of the plugin handshake: not a sluice plugin)`,
		extra, filepath.Join(binDir, "plugins"), filepath.Join(extra, "nope"))

	_, errOut, code := sluice(t, dir, "--plugins-dir", extra, "--log-level", "error", "validate", "p.yaml")
	want := `p.yaml:4:23: unknown plugin "nope"; known plugins: `
	if code != 2 || !strings.HasPrefix(errOut, want) || !strings.Contains(errOut, "; "+hint+"\n1 problem found\n") {
		t.Errorf("validate: exit %d\n%s\nwant %s…; %s", code, errOut, want, hint)
	}
	_, errOut, code = sluice(t, dir, "--plugins-dir", extra, "--log-level", "error", "plugins", "describe", "nope")
	if code != 2 || !strings.Contains(errOut, `unknown plugin "nope" (known: `) || !strings.Contains(errOut, "; "+hint) {
		t.Errorf("describe: exit %d\n%s", code, errOut)
	}
}

// TestValidatePluginWithoutBinary runs a sluice whose plugins directory is empty: the plugins linked into
// it are known, but a stage that does not run them in_process has nothing to start, which validate (and
// run) report as a configuration problem.
func TestValidatePluginWithoutBinary(t *testing.T) {
	bin := t.TempDir()
	if err := os.Mkdir(filepath.Join(bin, "plugins"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(binDir, "sluice"), filepath.Join(bin, "sluice"))
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.yaml"), `version: 1
pipelines:
  - id: p
    source: { plugin: generate, settings: { count: 3 } }
    sink: { plugin: discard, in_process: true }
`)
	for _, cmd := range []string{"validate", "run"} {
		c := exec.Command(filepath.Join(bin, "sluice"), cmd, "p.yaml")
		c.Dir = dir
		c.Env = append(os.Environ(), "SLUICE_PLUGINS_DIR=")
		out, err := c.CombinedOutput()
		want := fmt.Sprintf("p.yaml:4:13: plugin \"generate\" has no binary (searched %s); build it (make plugins), or set in_process: true to run the copy linked into this sluice binary\n1 problem found\n",
			filepath.Join(bin, "plugins"))
		if code := c.ProcessState.ExitCode(); code != 2 || string(out) != want {
			t.Errorf("%s: exit %d (%v)\n%s\nwant exit 2 and\n%s", cmd, code, err, out, want)
		}
	}
	// In-process, the same file is valid.
	writeFile(t, filepath.Join(dir, "p.yaml"), `version: 1
pipelines:
  - id: p
    source: { plugin: generate, settings: { count: 3 }, in_process: true }
    sink: { plugin: discard, in_process: true }
`)
	c := exec.Command(filepath.Join(bin, "sluice"), "validate", "p.yaml")
	c.Dir = dir
	if out, err := c.CombinedOutput(); err != nil {
		t.Errorf("validate in_process: %v\n%s", err, out)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPluginStdoutStaysOffHostStdout: what a sink prints on its stdout while writing is logged as the
// plugin's, never mixed into sluice's stdout; the stdout sink's lines, which are its output, still are.
func TestPluginStdoutStaysOffHostStdout(t *testing.T) {
	extra := t.TempDir()
	symlink(t, filepath.Join(testPlugins(t), "misbehave"), filepath.Join(extra, "misbehave"))
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.yaml"), `version: 1
pipelines:
  - id: noisy
    source: { plugin: generate, settings: { count: 3 } }
    sink: { plugin: misbehave, settings: { write: stdout, path: out.jsonl } }
  - id: printed
    source: { plugin: generate, settings: { count: 2, payload_bytes: 1 } }
    sink: { plugin: stdout }
`)
	out, errOut, code := sluice(t, dir, "--plugins-dir", extra, "run", "p.yaml")
	if code != 0 {
		t.Fatalf("run: exit %d\n%s\n%s", code, out, errOut)
	}
	if strings.Contains(out, "misbehave: a line on stdout") {
		t.Errorf("the misbehave sink's stdout reached sluice's stdout:\n%s", out)
	}
	if !regexp.MustCompile(`level=WARN msg="plugin wrote to stdout" pipeline=noisy plugin=misbehave stage=sink .*line="misbehave: a line on stdout in write"`).MatchString(errOut) {
		t.Errorf("the misbehave sink's stdout is not logged as its own:\n%s", errOut)
	}
	if !strings.HasPrefix(out, "{\"seq\":0}\n{\"seq\":1}\n") {
		t.Errorf("the stdout sink's lines are not on sluice's stdout:\n%s", out)
	}
	if got := len(seqCounts(t, filepath.Join(dir, "out.jsonl"))); got != 3 {
		t.Errorf("the misbehave sink wrote %d records, want 3", got)
	}
}
