package services

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// Binaries builds bin/sluice and the named first-party plugins (plugins/*/cmd/NAME) of this repository
// into a directory of the test's, laid out as `make build` lays out bin/ (DIR/sluice, DIR/plugins/NAME),
// and returns it. End-to-end tests run the real host with them.
func Binaries(t testing.TB, plugins ...string) string {
	t.Helper()
	repo := filepath.Dir(Root())
	bin := t.TempDir()
	build := func(moduleDir, pkg, out string) {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, out), pkg)
		cmd.Dir = moduleDir
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", pkg, err, b)
		}
	}
	build(filepath.Join(repo, "runtime"), "./cmd/sluice", "sluice")
	for _, p := range plugins {
		cmds, _ := filepath.Glob(filepath.Join(repo, "plugins", "*", "cmd", p))
		if len(cmds) != 1 {
			t.Fatalf("no plugin %q under plugins/*/cmd", p)
		}
		build(filepath.Dir(filepath.Dir(cmds[0])), "./cmd/"+p, filepath.Join("plugins", p))
	}
	return bin
}
