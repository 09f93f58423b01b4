// Package cli implements the sluice command line: run, validate, plugins, reset and version. cmd/sluice
// only calls Execute and turns its error into an exit code; the tests drive the built binary, as users do.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/plugins/discard"
	"github.com/sluicehq/sluice/plugins/file"
	"github.com/sluicehq/sluice/plugins/generate"
	"github.com/sluicehq/sluice/plugins/memory"
	"github.com/sluicehq/sluice/plugins/stdout"
	"github.com/sluicehq/sluice/runtime/plugin"
	"github.com/sluicehq/sluice/runtime/redact"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
)

// Version is the sluice version, set at build time with -ldflags "-X …/cli.Version=v1.2.3".
var Version = ""

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitInvalid = 2
)

// ExitError carries the process exit code for an error. Err is printed unless nil (already printed).
type ExitError struct {
	Code int
	Err  error
}

func (e ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit %d", e.Code)
	}
	return e.Err.Error()
}

func (e ExitError) Unwrap() error { return e.Err }

// linked are the first-party plugins compiled into sluice, which connector files may run in_process.
var linked = []func() sdk.Plugin{generate.Plugin, file.Plugin, stdout.Plugin, discard.Plugin, memory.Plugin}

// globals are the flags every command shares.
type globals struct {
	pluginDirs []string
	maxMessage int
	logLevel   string
	logFormat  string
	stdout     io.Writer
	stderr     io.Writer
	logger     *slog.Logger
	// secrets are the secret values of the connector files loaded so far (loadFiles adds them). The log,
	// the run summary, the HTTP API's errors, alerts and the error Execute returns are redacted with it.
	secrets  *redact.Set
	catalogs []*plugin.Catalog // closed when the command ends
}

// Execute runs the command line args (without the program name), writing to stdout and stderr.
func Execute(args []string, stdout, stderr io.Writer) error {
	g := &globals{stdout: stdout, stderr: stderr, secrets: new(redact.Set)}
	root := &cobra.Command{
		Use:           "sluice",
		Short:         "sluice runs connector pipelines: source → transforms → buffer → sink, each stage a plugin",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			l, err := newLogger(stderr, g.logLevel, g.logFormat, g.secrets)
			if err != nil {
				return ExitError{ExitInvalid, err}
			}
			g.logger = l
			return nil
		},
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return ExitError{ExitInvalid, err} })
	pf := root.PersistentFlags()
	pf.StringArrayVar(&g.pluginDirs, "plugins-dir", nil,
		"directory to search for plugin binaries (repeatable; also $SLUICE_PLUGINS_DIR, colon-separated; default: plugins/ beside the sluice binary)")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	pf.IntVar(&g.maxMessage, "max-message-bytes", protocol.DefaultMaxMessageBytes,
		"largest gRPC message between sluice and its plugins: a batch, or one record larger than batch_max_bytes (default fits a 16 MiB MongoDB document several times)")

	root.AddCommand(runCmd(g), validateCmd(g), testCmd(g), pluginsCmd(g), resetCmd(g), statusCmd(g), verifyCmd(g), versionCmd(g))
	err := root.Execute()
	for _, c := range g.catalogs {
		c.Close()
	}
	if err != nil && !errors.As(err, new(ExitError)) && strings.Contains(err.Error(), "unknown command") {
		return ExitError{ExitInvalid, err}
	}
	var ex ExitError
	if errors.As(err, &ex) {
		ex.Err = g.secrets.Error(ex.Err)
		return ex
	}
	return g.secrets.Error(err)
}

// usage makes a wrong number of arguments a usage error (exit 2), like an unknown flag.
func usage(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return ExitError{ExitInvalid, fmt.Errorf("%s: %w (see %s --help)", cmd.CommandPath(), err, cmd.CommandPath())}
		}
		return nil
	}
}

// newLogger returns the logger writing to w, which hides the values of secrets in every line: the host's
// own and those it forwards from plugins.
func newLogger(w io.Writer, level, format string, secrets *redact.Set) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	switch format {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("--log-format: want text or json, got %q", format)
	}
	return slog.New(secrets.Handler(h)), nil
}

// dirs returns the plugin directories in search order: flags, $SLUICE_PLUGINS_DIR, then plugins/ beside
// the sluice binary.
func (g *globals) dirs() []string {
	dirs := append([]string(nil), g.pluginDirs...)
	if env := os.Getenv("SLUICE_PLUGINS_DIR"); env != "" {
		dirs = append(dirs, filepath.SplitList(env)...)
	}
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		dirs = append(dirs, filepath.Join(filepath.Dir(exe), "plugins"))
	}
	return dirs
}

func (g *globals) catalog(ctx context.Context) (*plugin.Catalog, error) {
	c, err := plugin.Discover(ctx, plugin.Options{Dirs: g.dirs(), Linked: linked, Logger: g.logger, Stdout: g.stdout,
		MaxMessageBytes: g.maxMessage, CacheDir: specCacheDir(g.logger)})
	if err != nil {
		return nil, ExitError{ExitFailure, fmt.Errorf("discovering plugins: %w", err)}
	}
	g.catalogs = append(g.catalogs, c)
	return c, nil
}

func versionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the sluice version and plugin protocol version",
		Args:  usage(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			v := Version
			if v == "" {
				v = "(devel)"
				if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
					v = bi.Main.Version
				}
			}
			fmt.Fprintf(g.stdout, "sluice %s (plugin protocol v%d)\n", v, sdk.ProtocolVersion)
			return nil
		},
	}
}
