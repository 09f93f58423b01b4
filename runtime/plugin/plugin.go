// Package plugin finds plugin binaries, identifies them by their spec, and starts plugin instances for
// pipeline stages, as subprocesses or, for first-party plugins linked into the host, in-process.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
)

// DefaultEnv names the host environment variables a plugin process inherits. Everything else is withheld:
// secrets reach plugins through their settings, never through the environment.
var DefaultEnv = []string{"PATH", "HOME", "TMPDIR", "TZ", "LANG", "LC_ALL", "SSL_CERT_FILE", "SSL_CERT_DIR"}

// Plugin is a discovered plugin.
type Plugin struct {
	Spec sdk.Spec
	// Path is the plugin binary, or "" when the plugin is only linked into the host.
	Path string
	// Linked builds the plugin in-process; nil unless the host links it in.
	Linked func() sdk.Plugin
}

// Catalog is the set of plugins the host knows, by spec name. It is read-only after Discover.
type Catalog struct {
	opts   Options
	byName map[string]*Plugin
}

// Options configure discovery and launching.
type Options struct {
	// Dirs are searched, in order, for plugin binaries: every regular executable file is asked for its spec.
	Dirs []string
	// Linked are first-party plugins compiled into the host, runnable in-process.
	Linked []func() sdk.Plugin
	// Env are the host environment variables plugin processes receive (default DefaultEnv).
	Env []string
	// Logger receives plugin logs, tagged with plugin=<name>.
	Logger *slog.Logger
	// MaxMessageBytes bounds gRPC messages (default sdk.DefaultMaxMessageBytes).
	MaxMessageBytes int
	// PlainText turns off AutoMTLS between host and plugins. Only for measuring what TLS costs.
	PlainText bool
	// Stdout receives what plugins print to their stdout (the stdout sink); nil discards it.
	Stdout io.Writer
}

// Discover builds the catalog: it starts every executable in opts.Dirs, reads its spec and stops it.
// Two plugins with the same name, a binary speaking another protocol version, or a broken spec are errors;
// an executable that is not a sluice plugin at all is skipped with a warning.
func Discover(ctx context.Context, opts Options) (*Catalog, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Env == nil {
		opts.Env = DefaultEnv
	}
	c := &Catalog{opts: opts, byName: map[string]*Plugin{}}
	for _, l := range opts.Linked {
		p := l()
		if err := p.Spec.Validate(); err != nil {
			return nil, fmt.Errorf("linked plugin %q: %w", p.Spec.Name, err)
		}
		c.byName[p.Spec.Name] = &Plugin{Spec: p.Spec, Linked: l}
	}

	var paths []string
	seen := map[string]bool{}
	for _, dir := range opts.Dirs {
		// The same directory named twice (a flag and the default, a symlink) is searched once.
		key := dir
		if abs, err := filepath.Abs(dir); err == nil {
			key = abs
			if real, err := filepath.EvalSymlinks(abs); err == nil {
				key = real
			}
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading plugin dir: %w", err)
		}
		for _, e := range entries {
			info, err := e.Info()
			if err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
				continue
			}
			paths = append(paths, filepath.Join(dir, e.Name()))
		}
	}

	type found struct {
		spec sdk.Spec
		err  error
	}
	results := make([]found, len(paths))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, path := range paths {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i].spec, results[i].err = c.probe(ctx, path)
		})
	}
	wg.Wait()

	var errs []error
	binaries := map[string]string{} // name -> path
	for i, path := range paths {
		r := results[i]
		if errors.Is(r.err, errNotPlugin) {
			opts.Logger.Warn("skipping executable that is not a sluice plugin", "path", path)
			continue
		}
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		name := r.spec.Name
		if first, dup := binaries[name]; dup {
			errs = append(errs, fmt.Errorf("plugin %q is provided twice: by %s and by %s; remove one", name, first, path))
			continue
		}
		binaries[name] = path
		if p, ok := c.byName[name]; ok {
			p.Path = path
			p.Spec = r.spec // the binary's spec is authoritative for what runs as a subprocess
			continue
		}
		c.byName[name] = &Plugin{Spec: r.spec, Path: path}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

var errNotPlugin = errors.New("not a sluice plugin")

// probe starts the binary at path, reads its spec and stops it.
func (c *Catalog) probe(ctx context.Context, path string) (sdk.Spec, error) {
	conn, err := c.launch(path, c.opts.Logger.With("plugin", filepath.Base(path)))
	if err != nil {
		msg := strings.ToLower(err.Error())
		switch {
		case strings.Contains(msg, "incompatible api version"):
			return sdk.Spec{}, fmt.Errorf("plugin %s speaks another protocol version than this sluice (v%d): %w", path, sdk.ProtocolVersion, err)
		case strings.Contains(msg, "unrecognized remote plugin message"), strings.Contains(msg, "plugin exited before we could connect"),
			strings.Contains(msg, "exec format error"), strings.Contains(msg, "timeout while waiting for plugin to start"):
			return sdk.Spec{}, fmt.Errorf("%s: %w: %v", path, errNotPlugin, err)
		}
		return sdk.Spec{}, err
	}
	defer conn.Kill()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	spec, err := conn.Spec(ctx)
	if err != nil {
		return sdk.Spec{}, fmt.Errorf("plugin %s: %w", path, err)
	}
	return spec, nil
}

func (c *Catalog) launch(path string, logger *slog.Logger) (*protocol.Conn, error) {
	var env []string
	for _, name := range c.opts.Env {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	return protocol.Launch(protocol.LaunchConfig{
		Path:            path,
		Env:             env,
		Logger:          newHCLog(logger),
		MaxMessageBytes: c.opts.MaxMessageBytes,
		PlainText:       c.opts.PlainText,
		Stdout:          c.opts.Stdout,
	})
}

// Lookup returns the plugin named name.
func (c *Catalog) Lookup(name string) (*Plugin, bool) {
	p, ok := c.byName[name]
	return p, ok
}

// Spec returns the spec of the plugin named name; its signature fits config.SpecFunc.
func (c *Catalog) Spec(name string) (*sdk.Spec, bool) {
	p, ok := c.byName[name]
	if !ok {
		return nil, false
	}
	return &p.Spec, true
}

// List returns every plugin, sorted by name.
func (c *Catalog) List() []*Plugin {
	ps := make([]*Plugin, 0, len(c.byName))
	for _, p := range c.byName {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Spec.Name < ps[j].Spec.Name })
	return ps
}

// Start starts one instance of the plugin for a stage of kind. With inProcess the plugin must be linked
// into the host; otherwise it runs as a subprocess. The caller owns the returned Conn and must Kill it.
func (c *Catalog) Start(ctx context.Context, name string, kind sdk.Kind, inProcess bool, logger *slog.Logger) (*protocol.Conn, error) {
	p, ok := c.byName[name]
	if !ok {
		return nil, fmt.Errorf("unknown plugin %q", name)
	}
	if p.Spec.Stage(kind) == nil {
		return nil, fmt.Errorf("plugin %q serves no %s stage (it serves %v)", name, kind, p.Spec.Kinds())
	}
	if inProcess {
		if p.Linked == nil {
			return nil, fmt.Errorf("plugin %q is not linked into this sluice binary, so it cannot run in_process", name)
		}
		return protocol.Local(p.Linked(), sdk.WithLogger(logger))
	}
	if p.Path == "" {
		return nil, fmt.Errorf("plugin %q has no binary in %s; build it (make plugins) or set in_process: true", name, strings.Join(c.opts.Dirs, ", "))
	}
	conn, err := c.launch(p.Path, logger)
	if err != nil {
		return nil, err
	}
	// The binary may have been replaced since discovery: check it is still the same plugin.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	spec, err := conn.Spec(ctx)
	if err == nil && (spec.Name != name || !slices.Contains(spec.Kinds(), kind)) {
		err = fmt.Errorf("binary %s now serves plugin %q %v, not %q %s", p.Path, spec.Name, spec.Kinds(), name, kind)
	}
	if err != nil {
		conn.Kill()
		return nil, err
	}
	return conn, nil
}
