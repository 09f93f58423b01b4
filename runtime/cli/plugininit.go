package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/runtime/scaffold"
	"github.com/sluicehq/sluice/sdk"
)

// SourceDir is the root of the sluice checkout this binary was built from, set at build time with
// -ldflags "-X …/cli.SourceDir=$PWD" (the Makefile does). `sluice plugin init` finds the SDK there.
var SourceDir = ""

func pluginInitCmd(g *globals) *cobra.Command {
	var kind, dir, module, sdkDir string
	cmd := &cobra.Command{
		Use:   "init NAME --kind source|sink|buffer",
		Short: "write a new plugin module: a working source, sink or buffer with its acceptance test",
		Long: `init writes a Go module for a new plugin named NAME into --dir (default ./NAME), which must be missing or
empty: go.mod, main.go (a small working plugin of the kind asked for), main_test.go (the SDK's acceptance
suite, sdktest) and a README; then it runs "go mod tidy" there.

go.mod replaces the SDK's module path, which the Go module proxy does not serve, with an SDK directory: --sdk,
or else the sdk/ directory of the checkout this sluice was built from (recorded by "make build"), or else
../sdk beside the directory of the sluice binary (bin/sluice in a checkout).`,
		Args: usage(cobra.ExactArgs(1)),
		RunE: func(_ *cobra.Command, args []string) error {
			name := args[0]
			if kind == "" {
				return ExitError{ExitInvalid, errors.New("plugin init: --kind is required: source, sink or buffer")}
			}
			if dir == "" {
				dir = name
			}
			if module == "" {
				module = "example.com/" + name
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return ExitError{ExitInvalid, fmt.Errorf("--dir: %w", err)}
			}
			sdkPath, err := findSDK(sdkDir)
			if err != nil {
				return ExitError{ExitInvalid, err}
			}
			files, err := scaffold.Write(scaffold.Options{Name: name, Kind: sdk.Kind(kind), Module: module, Dir: abs, SDKDir: sdkPath})
			if err != nil {
				return ExitError{ExitInvalid, fmt.Errorf("plugin init: %w", err)}
			}
			for _, f := range files {
				fmt.Fprintf(g.stdout, "wrote %s\n", filepath.Join(dir, f))
			}
			tidy := exec.Command("go", "mod", "tidy")
			tidy.Dir = abs
			tidy.Env = append(os.Environ(), "GOWORK=off")
			if out, err := tidy.CombinedOutput(); err != nil {
				return ExitError{ExitFailure, fmt.Errorf("plugin init: the files are written, but go mod tidy in %s failed (fix it and run it again there): %v\n%s",
					dir, err, strings.TrimSpace(string(out)))}
			}
			fmt.Fprintf(g.stdout, "ran go mod tidy (SDK: %s)\n", sdkPath)
			work := exec.Command("go", "env", "GOWORK")
			work.Dir = abs
			if out, err := work.Output(); err == nil && strings.TrimSpace(string(out)) != "" {
				fmt.Fprintf(g.stdout, "note: %s is inside the Go workspace %s: add it there (go work use) or build and test it with GOWORK=off\n",
					dir, strings.TrimSpace(string(out)))
			}
			fmt.Fprintf(g.stdout, "next: cd %s && go test ./...\n", dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kind, "kind", "", "the stage kind the plugin serves: source, sink or buffer (required)")
	f.StringVar(&dir, "dir", "", "directory to write the module to; must be missing or empty (default ./NAME)")
	f.StringVar(&module, "module", "", "module path for go.mod (default example.com/NAME)")
	f.StringVar(&sdkDir, "sdk", "", "the sluice checkout's sdk directory to build against (default: the checkout sluice was built from)")
	return cmd
}

// findSDK returns the SDK directory for a new plugin: flag if set, else the first of the build-time
// checkout's sdk/ and ../sdk beside the binary's directory that holds the SDK module.
func findSDK(flag string) (string, error) {
	if flag != "" {
		abs, err := filepath.Abs(flag)
		if err != nil {
			return "", fmt.Errorf("--sdk: %w", err)
		}
		if _, err := scaffold.SDK(abs); err != nil {
			return "", fmt.Errorf("--sdk: %w", err)
		}
		return abs, nil
	}
	var candidates []string
	if SourceDir != "" {
		candidates = append(candidates, filepath.Join(SourceDir, "sdk"))
	}
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		candidates = append(candidates, filepath.Join(filepath.Dir(filepath.Dir(exe)), "sdk"))
	}
	return firstSDK(candidates)
}

// firstSDK returns the first candidate directory that holds the SDK module.
func firstSDK(candidates []string) (string, error) {
	var errs []error
	for _, c := range candidates {
		if _, err := scaffold.SDK(c); err != nil {
			errs = append(errs, err)
			continue
		}
		return c, nil
	}
	if len(errs) == 0 {
		return "", errors.New("no SDK found: this sluice was not built from a checkout (make build records it); pass --sdk DIR, the sdk directory of a sluice checkout")
	}
	return "", fmt.Errorf("no SDK found (pass --sdk DIR, the sdk directory of a sluice checkout): %w", errors.Join(errs...))
}
