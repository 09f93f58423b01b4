package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the .golden files of testdata/invalid from the current output")

// TestInvalidGolden loads every broken file in testdata/invalid and compares the full error text with the
// file's .golden neighbour. Run with -update to regenerate them (and review the diff).
func TestInvalidGolden(t *testing.T) {
	entries, err := os.ReadDir("testdata/invalid")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasSuffix(name, ".golden") {
			continue
		}
		n++
		t.Run(name, func(t *testing.T) {
			path := "testdata/invalid/" + name
			f, err := testLoader().Load(path)
			if err == nil {
				t.Fatalf("Load(%s) = %+v, want an error", path, f)
			}
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("Load(%s) error is %T, want Errors: %v", path, err, err)
			}
			for i, e := range errs {
				if e.Pos.File != path || e.Pos.Line < 1 || e.Pos.Col < 1 {
					t.Errorf("error %d has position %+v, want file %s and line, col >= 1", i, e.Pos, path)
				}
				if i > 0 && e.Pos.before(errs[i-1].Pos) {
					t.Errorf("errors not sorted by position: %s before %s", errs[i-1].Pos, e.Pos)
				}
			}
			got := err.Error() + "\n"
			for _, secret := range []string{testEnv["TOKEN"], "hunter2", "987654321"} {
				if strings.Contains(got, secret) {
					t.Errorf("error text contains the secret %q:\n%s", secret, got)
				}
			}
			golden := filepath.Join("testdata", "invalid", name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Load(%s) errors differ from %s\ngot:\n%s\nwant:\n%s", path, golden, got, want)
			}
		})
	}
	if n < 15 {
		t.Errorf("only %d invalid files; want at least 15", n)
	}
}
