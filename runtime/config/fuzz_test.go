package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to the loader as a YAML, a JSON and a TOML file. Load must never panic,
// must report problems as positioned, sorted Errors, and a file it accepts must be complete and printable.
func FuzzLoad(f *testing.F) {
	for _, dir := range []string{"testdata/valid", "testdata/invalid"} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			f.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".golden") {
				continue
			}
			data, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	l := testLoader()
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, name := range []string{"fuzz.yaml", "fuzz.json", "fuzz.toml"} {
			file, err := l.parse(name, data)
			if err != nil {
				var errs Errors
				if !errors.As(err, &errs) || len(errs) == 0 {
					t.Fatalf("%s: error %T is not Errors: %v", name, err, err)
				}
				for i, e := range errs {
					if e.Pos.File != name || e.Pos.Line < 1 || e.Pos.Col < 1 {
						t.Fatalf("%s: error without a position: %+v", name, e)
					}
					if i > 0 && e.Pos.before(errs[i-1].Pos) {
						t.Fatalf("%s: errors not sorted: %v", name, err)
					}
				}
				continue
			}
			if len(file.Pipelines) == 0 {
				t.Fatalf("%s: accepted a file without pipelines", name)
			}
			for _, p := range file.Pipelines {
				if p.Source == nil || p.Sink == nil || p.Source.Spec == nil || p.Sink.Spec == nil {
					t.Fatalf("%s: accepted pipeline %q without a source or sink", name, p.ID)
				}
			}
			if err := file.Print(io.Discard); err != nil {
				t.Fatalf("%s: Print: %v", name, err)
			}
		}
	})
}
