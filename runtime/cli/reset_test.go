package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestResetUnknownPipeline runs a pipeline so that the host stores its position, then resets pipelines
// that have stored positions (exit 0) and pipelines that do not (exit 2, naming them and listing those
// that do, deleting nothing).
func TestResetUnknownPipeline(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.yaml"), `version: 1
pipelines:
  - id: orders
    source: { plugin: generate, settings: { count: 100 } }
    sink:   { plugin: file, settings: { path: orders.jsonl } }
  - id: audit
    source: { plugin: generate, settings: { count: 10 } }
    sink:   { plugin: discard }
`)
	if out, errOut, code := sluice(t, dir, "run", "p.yaml"); code != 0 {
		t.Fatalf("run: exit %d\n%s\n%s", code, out, errOut)
	}

	out, errOut, code := sluice(t, dir, "reset", "ordres")
	want := "reset: no stored positions for pipeline ordres in data dir .sluice; nothing was deleted. Pipelines with stored positions there: audit, orders ("
	if code != 2 || !strings.HasPrefix(errOut, want) || out != "" {
		t.Fatalf("reset ordres: exit %d, stdout %q, stderr %q; want exit 2 and %q…", code, out, errOut, want)
	}
	// One unknown id among known ones: nothing is deleted.
	_, errOut, code = sluice(t, dir, "reset", "orders", "nope", "gone")
	if code != 2 || !strings.Contains(errOut, "no stored positions for pipelines nope, gone in data dir .sluice") {
		t.Fatalf("reset orders nope gone: exit %d, %q", code, errOut)
	}
	out, errOut, code = sluice(t, dir, "reset", "orders")
	if code != 0 || out != "pipeline orders: stored positions deleted\n" {
		t.Fatalf("reset orders: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// Deleted: now unknown, and the list shows what is left.
	_, errOut, code = sluice(t, dir, "reset", "orders")
	if code != 2 || !strings.Contains(errOut, "Pipelines with stored positions there: audit (") {
		t.Fatalf("second reset orders: exit %d, %q", code, errOut)
	}
	if _, _, code = sluice(t, dir, "reset", "--data-dir", filepath.Join(dir, ".sluice"), "audit"); code != 0 {
		t.Fatalf("reset audit with --data-dir: exit %d", code)
	}
	_, errOut, code = sluice(t, dir, "reset", "audit")
	if code != 2 || !strings.Contains(errOut, "No pipeline has stored positions there") {
		t.Fatalf("reset in an emptied store: exit %d, %q", code, errOut)
	}
}

// TestResetNoDataDir resets in a directory without a state store: exit 2, and no data directory is
// created.
func TestResetNoDataDir(t *testing.T) {
	dir := t.TempDir()
	_, errOut, code := sluice(t, dir, "reset", "orders")
	if code != 2 || !strings.Contains(errOut, "no stored positions for pipeline orders in data dir .sluice") ||
		!strings.Contains(errOut, "No pipeline has stored positions there") {
		t.Fatalf("exit %d, %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, ".sluice")); !os.IsNotExist(err) {
		t.Errorf("reset created the data dir: %v", err)
	}
}
