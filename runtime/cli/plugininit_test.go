package cli_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// goCache is the user's Go build cache, read before TestMain points XDG_CACHE_HOME (and with it the default
// GOCACHE) at a fresh directory: the out-of-tree builds reuse it rather than compile gRPC afresh.
var goCache = func() string {
	out, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}()

// outOfTree runs a go command in dir, a module outside the repository, without the repository's go.work:
// as an author who is not working in the sluice tree would.
func outOfTree(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if goCache != "" {
		cmd.Env = append(cmd.Env, "GOCACHE="+goCache)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}

// TestPluginInit runs the built `sluice plugin init` for each kind into a directory outside the tree,
// with no --sdk (the binary was built with the checkout recorded, as make build does), then runs the
// written module's tests there (the SDK's acceptance suite) with GOWORK=off, builds the plugin, and runs a
// pipeline through it with sluice.
func TestPluginInit(t *testing.T) {
	for _, tc := range []struct {
		kind, name string
		pipeline   string // a pipeline of the connector file through the plugin; out.jsonl gets 3 lines
	}{
		{"source", "mysource", `{ id: p, source: { plugin: mysource, settings: { records: [{n: 1}, "two", 3] } },
    sink: { plugin: file, settings: { path: out.jsonl } } }`},
		{"sink", "mysink", `{ id: p, source: { plugin: generate, settings: { count: 3 } },
    sink: { plugin: mysink, settings: { path: out.jsonl } } }`},
		{"buffer", "mybuffer", `{ id: p, source: { plugin: generate, settings: { count: 3 } }, buffer: { plugin: mybuffer },
    sink: { plugin: file, settings: { path: out.jsonl } } }`},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			work := t.TempDir()
			out, errOut, code := sluice(t, work, "plugin", "init", tc.name, "--kind", tc.kind)
			if code != 0 {
				t.Fatalf("plugin init: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
			}
			for _, f := range []string{"go.mod", "go.sum", "main.go", "main_test.go", "README.md"} {
				if _, err := os.Stat(filepath.Join(work, tc.name, f)); err != nil {
					t.Errorf("plugin init wrote no %s: %v\nstdout: %s", f, err, out)
				}
			}
			wantReplace := "replace github.com/sluicehq/sluice/sdk => " + filepath.Join(repoRoot(), "sdk")
			if gomod, _ := os.ReadFile(filepath.Join(work, tc.name, "go.mod")); !strings.Contains(string(gomod), wantReplace) {
				t.Fatalf("go.mod does not point at the checkout's SDK (want %q):\n%s", wantReplace, gomod)
			}
			mod := filepath.Join(work, tc.name)
			outOfTree(t, mod, "vet", "./...")
			if got := outOfTree(t, mod, "test", "-count=1", "./..."); !strings.Contains(got, "ok  \texample.com/"+tc.name) {
				t.Fatalf("go test: %s", got)
			}

			plugins := filepath.Join(work, "plugins")
			outOfTree(t, mod, "build", "-o", filepath.Join(plugins, tc.name), ".")
			outFile := filepath.Join(work, "out.jsonl")
			writeFile(t, filepath.Join(work, "p.yaml"), "version: 1\npipelines:\n  - "+strings.ReplaceAll(tc.pipeline, "out.jsonl", outFile)+"\n")
			if out, errOut, code := sluice(t, work, "--plugins-dir", plugins, "run", "--data-dir", filepath.Join(work, "state"), "p.yaml"); code != 0 {
				t.Fatalf("sluice run: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
			}
			if n := countJSONLines(t, outFile); n != 3 {
				t.Fatalf("out.jsonl has %d lines, want 3", n)
			}
		})
	}
}

// countJSONLines counts the lines of path, each of which must be JSON.
func countJSONLines(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if !json.Valid(sc.Bytes()) {
			t.Fatalf("%s:%d: not JSON: %q", path, n+1, sc.Text())
		}
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPluginInitRefuses checks the bad inputs of plugin init: each exits 2 with a message that says what
// is wrong, and writes nothing.
func TestPluginInitRefuses(t *testing.T) {
	work := t.TempDir()
	writeFile(t, filepath.Join(work, "taken", "notes.txt"), "mine\n")
	notSDK := filepath.Join(work, "notsdk")
	writeFile(t, filepath.Join(notSDK, "go.mod"), "module example.com/other\n\ngo 1.26.0\n")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"non-empty dir", []string{"p", "--kind", "sink", "--dir", "taken"}, "taken is not empty (it holds notes.txt)"},
		{"no kind", []string{"p"}, "--kind is required: source, sink or buffer"},
		{"bad kind", []string{"p", "--kind", "transform"}, `kind "transform": want source, sink or buffer`},
		{"bad name", []string{"My Plugin", "--kind", "sink"}, `name "My Plugin": want lower-case letters`},
		{"bad module", []string{"p", "--kind", "sink", "--module", "not a path"}, `module path: malformed module path "not a path"`},
		{"sdk missing", []string{"p", "--kind", "sink", "--sdk", "nowhere"}, "--sdk: SDK directory " + filepath.Join(work, "nowhere") + ": open"},
		{"sdk is another module", []string{"p", "--kind", "sink", "--sdk", notSDK}, "declares module example.com/other, want github.com/sluicehq/sluice/sdk"},
		{"no name", []string{"--kind", "sink"}, "accepts 1 arg(s), received 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := sluice(t, work, append([]string{"plugin", "init"}, tc.args...)...)
			if code != 2 || !strings.Contains(errOut, tc.want) || out != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 and a message containing %q", code, out, errOut, tc.want)
			}
		})
	}
	entries, err := os.ReadDir(work)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("plugin init wrote into %s: %v", work, entries)
	}
	if b, _ := os.ReadFile(filepath.Join(work, "taken", "notes.txt")); string(b) != "mine\n" {
		t.Fatalf("taken/notes.txt was changed: %q", b)
	}
}

// TestOutOfTreeWebhook copies examples/webhook, which is written the way an outside author would write a
// plugin, to a directory outside the tree, points it at the checkout's SDK as its README says (go mod edit
// -replace, go mod tidy), and builds and tests it there without the repository's go.work.
func TestOutOfTreeWebhook(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "webhook")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(repoRoot(), "examples", "webhook"))); err != nil {
		t.Fatal(err)
	}
	outOfTree(t, dir, "mod", "edit", "-replace", "github.com/sluicehq/sluice/sdk="+filepath.Join(repoRoot(), "sdk"))
	outOfTree(t, dir, "mod", "tidy")
	outOfTree(t, dir, "build", "./...")
	if got := outOfTree(t, dir, "test", "-count=1", "./..."); !strings.Contains(got, "ok  \tgithub.com/sluicehq/sluice/examples/webhook\t") {
		t.Fatalf("go test: %s", got)
	}
}
