// Package scaffold writes a new plugin module: go.mod, main.go with a small working source, sink or buffer,
// main_test.go running the SDK's acceptance suite, and a README. `sluice plugin init` uses it.
package scaffold

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"text/template"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"

	"github.com/sluicehq/sluice/sdk"
)

// SDKModule is the module path of the SDK the written module requires.
const SDKModule = "github.com/sluicehq/sluice/sdk"

// templates holds, per kind, main.go and main_test.go; go.mod and README.md are shared.
//
//go:embed templates
var templates embed.FS

// Kinds are the stage kinds Write can write, in the order the usage text names them.
var Kinds = []sdk.Kind{sdk.KindSource, sdk.KindSink, sdk.KindBuffer}

// what describes each kind's plugin in one sentence, for the README.
var what = map[sdk.Kind]string{
	sdk.KindSource: "a source that emits each entry of its `records` setting as one JSON record, in order, then ends.",
	sdk.KindSink:   "a sink that appends each record to the file `path` as one JSON line with its op, key and payload.",
	sdk.KindBuffer: "a buffer that keeps records in a bounded in-memory queue (`max_records`) until the sink has them; its contents die with its process.",
}

// Options says what to write.
type Options struct {
	// Name is the plugin's name, as its spec declares it and connector files use it.
	Name string
	// Kind is the stage kind the plugin serves.
	Kind sdk.Kind
	// Module is the module path written to go.mod.
	Module string
	// Dir is the directory to write to: created if missing, refused if it holds anything.
	Dir string
	// SDKDir is the SDK checkout go.mod replaces SDKModule with (see SDK).
	SDKDir string
}

// Write validates o and writes the module into o.Dir. It returns the paths written, relative to o.Dir.
func Write(o Options) ([]string, error) {
	tmplDir, ok := map[sdk.Kind]string{sdk.KindSource: "source", sdk.KindSink: "sink", sdk.KindBuffer: "buffer"}[o.Kind]
	if !ok {
		return nil, fmt.Errorf("kind %q: want source, sink or buffer", o.Kind)
	}
	spec := sdk.Spec{Name: o.Name, Version: "0.1.0", Summary: "new plugin"}
	stage := &sdk.Stage{Summary: "new stage"}
	switch o.Kind {
	case sdk.KindSource:
		spec.Source = stage
	case sdk.KindSink:
		spec.Sink = stage
	case sdk.KindBuffer:
		spec.Buffer = stage
	}
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("plugin name: %w", err)
	}
	if err := module.CheckPath(o.Module); err != nil {
		return nil, fmt.Errorf("module path: %w", err)
	}
	goVersion, err := SDK(o.SDKDir)
	if err != nil {
		return nil, err
	}
	if err := emptyDir(o.Dir); err != nil {
		return nil, err
	}
	data := map[string]any{
		"Name": o.Name, "Kind": string(o.Kind), "Module": o.Module, "What": what[o.Kind],
		"GoVersion": goVersion, "SDKModule": SDKModule, "SDKDir": o.SDKDir,
	}
	files := []struct{ tmpl, out string }{
		{"templates/go.mod.tmpl", "go.mod"},
		{"templates/README.md.tmpl", "README.md"},
		{"templates/" + tmplDir + "/main.go.tmpl", "main.go"},
		{"templates/" + tmplDir + "/main_test.go.tmpl", "main_test.go"},
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	var written []string
	for _, f := range files {
		t, err := template.ParseFS(templates, f.tmpl)
		if err != nil {
			return written, err // the embedded templates are tested: not reached
		}
		var b bytes.Buffer
		if err := t.Execute(&b, data); err != nil {
			return written, err
		}
		if err := os.WriteFile(filepath.Join(o.Dir, f.out), b.Bytes(), 0o644); err != nil {
			return written, err
		}
		written = append(written, f.out)
	}
	return written, nil
}

// SDK checks that dir holds the SDK's module (its go.mod declares SDKModule) and returns the Go version
// that go.mod asks for.
func SDK(dir string) (goVersion string, err error) {
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("SDK directory %q is not an absolute path", dir)
	}
	path := filepath.Join(dir, "go.mod")
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("SDK directory %s: %w", dir, err)
	}
	f, err := modfile.ParseLax(path, data, nil)
	if err != nil {
		return "", fmt.Errorf("SDK directory %s: %w", dir, err)
	}
	if f.Module == nil || f.Module.Mod.Path != SDKModule {
		got := "none"
		if f.Module != nil {
			got = f.Module.Mod.Path
		}
		return "", fmt.Errorf("SDK directory %s: %s declares module %s, want %s", dir, path, got, SDKModule)
	}
	if f.Go == nil {
		return "", fmt.Errorf("SDK directory %s: %s has no go directive", dir, path)
	}
	return f.Go.Version, nil
}

// emptyDir returns nil if dir is missing or an empty directory.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("%s is not empty (it holds %s): choose a new directory with --dir", dir, entries[0].Name())
	}
	return nil
}
