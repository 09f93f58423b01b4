package scaffold_test

import (
	"bytes"
	"go/format"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/runtime/scaffold"
	"github.com/sluicehq/sluice/sdk"
)

// sdkDir is the checkout's SDK.
func sdkDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "sdk")
}

// TestWrite writes each kind and checks that the Go files are gofmt-formatted, that main.go declares its
// settings once, in Config's tags, and that go.mod points at the SDK. Building and
// testing what Write writes is runtime/cli's TestPluginInit, with the real binary and go toolchain.
func TestWrite(t *testing.T) {
	for _, kind := range scaffold.Kinds {
		t.Run(string(kind), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "p")
			files, err := scaffold.Write(scaffold.Options{Name: "my-" + string(kind), Kind: kind, Module: "example.com/p", Dir: dir, SDKDir: sdkDir()})
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"go.mod", "README.md", "main.go", "main_test.go"}; !slices.Equal(files, want) {
				t.Fatalf("wrote %v, want %v", files, want)
			}
			for _, f := range []string{"main.go", "main_test.go"} {
				src, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				formatted, err := format.Source(src)
				if err != nil {
					t.Errorf("%s: %v", f, err)
				} else if !bytes.Equal(formatted, src) {
					t.Errorf("%s is not gofmt-formatted:\n%s", f, src)
				}
			}
			gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
			if err != nil {
				t.Fatal(err)
			}
			if want := "replace " + scaffold.SDKModule + " => " + sdkDir() + "\n"; !strings.Contains(string(gomod), want) {
				t.Fatalf("go.mod lacks %q:\n%s", want, gomod)
			}
			main, _ := os.ReadFile(filepath.Join(dir, "main.go"))
			if !strings.Contains(string(main), `Name:    "my-`+string(kind)+`"`) {
				t.Fatalf("main.go does not name the plugin my-%s:\n%s", kind, main)
			}
			if !regexp.MustCompile(`Settings: +sdk\.MustSettingsOf\[Config\]\(\)`).Match(main) || strings.Contains(string(main), "sdk.Setting{") ||
				!strings.Contains(string(main), "`setting:\"") {
				t.Fatalf("main.go does not declare its settings in Config's tags:\n%s", main)
			}
		})
	}
}

// TestWriteRefuses checks the errors of Write's validation, and that a refused Write writes nothing.
func TestWriteRefuses(t *testing.T) {
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ok := scaffold.Options{Name: "p", Kind: sdk.KindSink, Module: "example.com/p", SDKDir: sdkDir()}
	for _, tc := range []struct {
		name string
		edit func(*scaffold.Options)
		want string
	}{
		{"kind", func(o *scaffold.Options) { o.Kind = "transform" }, `kind "transform": want source, sink or buffer`},
		{"name", func(o *scaffold.Options) { o.Name = "9lives" }, `plugin name: name "9lives"`},
		{"module", func(o *scaffold.Options) { o.Module = "" }, "module path: malformed module path"},
		{"relative sdk", func(o *scaffold.Options) { o.SDKDir = "sdk" }, `SDK directory "sdk" is not an absolute path`},
		{"not empty", func(o *scaffold.Options) { o.Dir = full }, full + " is not empty (it holds x)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			o.Dir = filepath.Join(t.TempDir(), "p")
			tc.edit(&o)
			_, err := scaffold.Write(o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Write = %v, want an error containing %q", err, tc.want)
			}
			if o.Dir != full {
				if _, err := os.Stat(o.Dir); !os.IsNotExist(err) {
					t.Fatalf("a refused Write created %s", o.Dir)
				}
			}
		})
	}
}
