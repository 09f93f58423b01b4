// Package plugin finds plugin binaries, identifies them by their spec, and starts plugin instances for
// pipeline stages, as subprocesses or, for first-party plugins linked into the host, in-process.
//
// Discovery runs only executables no other user could have replaced (trust_unix.go), takes specs from a
// cache while the binaries are unchanged (cache.go), and a binary pinned to a SHA-256 is checked before
// each start (pin.go). Plugin processes put their sockets in a directory of the host process's own, which
// the next host removes if this one was killed (sockets_unix.go).
package plugin

import (
	"context"
	"encoding/json"
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

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
)

// DefaultEnv names the host environment variables a plugin process inherits. Everything else is withheld:
// secrets reach plugins through their settings, never through the environment. The Go runtime's GOGC,
// GOMEMLIMIT, GOMAXPROCS and GODEBUG pass, so that one setting in sluice's environment tunes (or, with
// GODEBUG=gctrace=1, traces) every process of it.
var DefaultEnv = []string{"PATH", "HOME", "TMPDIR", "TZ", "LANG", "LC_ALL", "SSL_CERT_FILE", "SSL_CERT_DIR",
	"GOGC", "GOMEMLIMIT", "GOMAXPROCS", "GODEBUG"}

// Plugin is a discovered plugin.
type Plugin struct {
	Spec sdk.Spec
	// Path is the plugin binary, or "" when the plugin is only linked into the host.
	Path string
	// Linked builds the plugin in-process; nil unless the host links it in.
	Linked func() sdk.Plugin
}

// Catalog is the set of plugins the host knows, by spec name, and what discovery passed over. Its
// plugins are read-only after Discover; Pin and Start are safe for concurrent use.
type Catalog struct {
	opts    Options
	byName  map[string]*Plugin
	dirs    []string // searched, in order, each once; a note in parentheses when it could not be read
	skipped []Skipped
	cache   *specCache

	// sockBase is TMPDIR/sluice-UID, where sock is made when the first plugin process starts; "" when
	// plugins put their sockets where go-plugin does by default.
	sockBase string
	sockOnce sync.Once
	sock     *socketDir

	mu   sync.Mutex
	pins map[string][]Pin // by plugin name
}

// Skipped is an executable in a plugins directory that discovery passed over, and why.
type Skipped struct {
	// Path is the file, as found in its directory.
	Path string
	// Reason says in one line why it is not a usable plugin.
	Reason string
}

// Options configure discovery and launching.
type Options struct {
	// Dirs are searched, in order, for plugin binaries: every executable file (or symlink to one) is asked
	// for its spec.
	Dirs []string
	// Linked are first-party plugins compiled into the host, runnable in-process.
	Linked []func() sdk.Plugin
	// Env are the host environment variables plugin processes receive (default DefaultEnv).
	Env []string
	// Logger receives plugin logs, tagged with plugin=<name>.
	Logger *slog.Logger
	// MaxMessageBytes bounds gRPC messages (default protocol.DefaultMaxMessageBytes).
	MaxMessageBytes int
	// PlainText turns off mutual TLS between host and plugins. Only for measuring what TLS costs.
	PlainText bool
	// Stdout receives what stages whose output is meant for it (sdk.Capabilities.WritesStdout: the stdout
	// sink) print; nil discards it. What other plugins print on their stdout is logged as warnings.
	Stdout io.Writer
	// StartTimeout bounds a plugin's handshake, at discovery and at start (default
	// protocol.DefaultStartTimeout).
	StartTimeout time.Duration
	// CacheDir holds the spec cache: discovery takes a binary's spec from there instead of starting the
	// binary while the binary is unchanged (see cache.go). It is created if needed and left unused when
	// another user could write to it; "" caches nothing.
	CacheDir string
}

// specTimeout bounds the Spec call of a probe or a start.
const specTimeout = 10 * time.Second

// Discover builds the catalog: it starts every executable in opts.Dirs (following symlinks), reads its
// spec and stops it, several at a time, each bounded in time — unless opts.CacheDir holds the spec of
// the unchanged binary. An executable that others could replace (see distrust) is not started, and one
// that fails in any way (it prints something else than the handshake, exits, crashes, hangs, speaks
// another protocol version, returns a broken spec) is skipped: each with one warning naming the file,
// the reason and its last stderr lines; the Catalog remembers them (Skipped). Two binaries with the same
// plugin name are an error. Discover also removes the socket directories of sluice processes that died
// without removing them (see sockets_unix.go). Call Close when done with the Catalog.
func Discover(ctx context.Context, opts Options) (*Catalog, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Env == nil {
		opts.Env = DefaultEnv
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = protocol.DefaultStartTimeout
	}
	c := &Catalog{opts: opts, byName: map[string]*Plugin{}, cache: openCache(opts.CacheDir, opts.Logger)}
	switch base, err := socketBase(); {
	case errors.Is(err, errNoSockets):
	case err != nil:
		opts.Logger.Warn("plugins put their sockets in the temporary directory, where a killed plugin's socket is not cleaned up", "error", err)
	default:
		cleanSockets(base, opts.Logger)
		c.sockBase = base
	}
	for _, l := range opts.Linked {
		p := l()
		if err := p.Spec.Validate(); err != nil {
			return nil, fmt.Errorf("linked plugin %q: %w", p.Spec.Name, err)
		}
		c.byName[p.Spec.Name] = &Plugin{Spec: p.Spec, Linked: l}
	}

	paths := c.scan()
	type found struct {
		spec   sdk.Spec
		reason string   // why the file is skipped; "" when spec is good
		stderr []string // its last stderr lines, for the warning
	}
	results := make([]found, len(paths))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, path := range paths {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			r := &results[i]
			r.spec, r.reason, r.stderr = c.specOf(ctx, path)
		})
	}
	wg.Wait()

	var errs []error
	binaries := map[string]string{} // name -> path
	for i, path := range paths {
		r := results[i]
		if r.reason != "" {
			c.skip(path, r.reason, r.stderr)
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

// scan lists the executables of every directory, in order. A directory named twice (a flag and the
// default, or through a symlink) is searched once, and a binary reached twice (a symlink beside its
// target, or in two directories) is probed once. Directories that do not exist are noted, not errors.
func (c *Catalog) scan() []string {
	var paths []string
	seenDir := map[string]bool{}
	seenFile := map[string]bool{}
	for _, dir := range c.opts.Dirs {
		key := realPath(dir)
		if seenDir[key] {
			continue
		}
		seenDir[key] = true
		entries, err := os.ReadDir(dir)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			c.dirs = append(c.dirs, dir+" (does not exist)")
			continue
		case err != nil:
			c.opts.Logger.Warn("cannot read plugins directory", "dir", dir, "error", err)
			c.dirs = append(c.dirs, dir+" (unreadable)")
			continue
		}
		c.dirs = append(c.dirs, dir)
		for _, e := range entries {
			path := filepath.Join(dir, e.Name())
			info, err := os.Stat(path) // follows symlinks: a symlink to a plugin is a plugin
			if err != nil {
				if e.Type()&fs.ModeSymlink != 0 {
					c.skip(path, "broken symlink: "+errText(err), nil)
				}
				continue
			}
			if !info.Mode().IsRegular() {
				continue
			}
			if info.Mode().Perm()&0o111 == 0 {
				c.opts.Logger.Debug("ignoring file that is not executable", "path", path)
				continue
			}
			real := realPath(path)
			if reason := distrust(path, real); reason != "" {
				c.skip(path, reason, nil)
				continue
			}
			if seenFile[real] {
				c.opts.Logger.Debug("ignoring a second path to a plugin binary already found", "path", path, "binary", real)
				continue
			}
			seenFile[real] = true
			paths = append(paths, path)
		}
	}
	return paths
}

// realPath is path made absolute with its symlinks resolved, or path when that fails.
func realPath(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
		if real, err := filepath.EvalSymlinks(abs); err == nil {
			path = real
		}
	}
	return path
}

func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// skip records a file discovery passes over and logs one warning about it.
func (c *Catalog) skip(path, reason string, stderr []string) {
	c.skipped = append(c.skipped, Skipped{Path: path, Reason: reason})
	args := []any{"path", path, "reason", reason}
	if len(stderr) == 1 && strings.Contains(reason, strings.TrimSpace(stderr[0])) {
		stderr = nil // the reason already quotes it
	}
	if len(stderr) > 0 {
		args = append(args, "stderr", strings.Join(stderr, " | "))
	}
	c.opts.Logger.Warn("skipping plugin file", args...)
}

// specOf returns the spec of the binary at path, from the cache when it holds the unchanged binary's,
// else by probing the binary (and then caching its spec), or why the file is not a usable plugin.
func (c *Catalog) specOf(ctx context.Context, path string) (spec sdk.Spec, reason string, stderr []string) {
	if c.cache == nil {
		return c.probe(ctx, path)
	}
	real := realPath(path)
	id, err := identify(real)
	if err != nil {
		return c.probe(ctx, path)
	}
	if spec, ok := c.cache.lookup(real, id); ok {
		return spec, "", nil
	}
	// Hashed while the probe waits for the plugin to start.
	var digest string
	var derr error
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		digest, derr = FileDigest(real)
	}()
	spec, reason, stderr = c.probe(ctx, path)
	<-hashed
	if reason == "" && derr == nil {
		// Cached only when the binary probed is the one hashed.
		if after, err := identify(real); err == nil && after == id {
			c.cache.store(real, id, digest, spec)
		}
	}
	return spec, reason, stderr
}

// warnStderrLines is how many of a skipped file's last stderr lines its warning shows.
const warnStderrLines = 5

// probe starts the binary at path, reads its spec and stops it. It returns the spec, or why the file is
// not a usable plugin with its last stderr lines. Everything the probe logs is at debug level: a file that
// fails gets one warning from Discover.
func (c *Catalog) probe(ctx context.Context, path string) (spec sdk.Spec, reason string, stderr []string) {
	logger := c.opts.Logger.With("plugin", filepath.Base(path))
	conn, err := c.launch(path, newHCLog(logger, true), &stdoutLog{log: logger, level: slog.LevelDebug})
	if err != nil {
		var se *protocol.StartError
		if !errors.As(err, &se) {
			return sdk.Spec{}, err.Error(), nil
		}
		return sdk.Spec{}, se.Reason, lastLines(se.Stderr, se.Exit)
	}
	defer func() {
		conn.Kill()
		if e := conn.Exit(); e != nil && reason != "" {
			stderr = lastLines(e.Stderr, e)
		}
	}()
	sctx, cancel := context.WithTimeout(ctx, specTimeout)
	defer cancel()
	spec, err = conn.Spec(sctx)
	switch {
	case err == nil:
		return spec, "", nil
	case ctx.Err() != nil:
		return sdk.Spec{}, "discovery was interrupted", nil
	}
	if exit := conn.WaitExit(time.Second); exit != nil {
		return sdk.Spec{}, "died when asked for its spec: it " + exit.String(), nil
	}
	if sctx.Err() != nil {
		return sdk.Spec{}, fmt.Sprintf("did not answer when asked for its spec within %s", specTimeout), nil
	}
	return sdk.Spec{}, strings.ReplaceAll(err.Error(), "\n", "; "), nil
}

// lastLines returns the last stderr lines a warning shows: none when the exit names a panic (its stack
// would say nothing more), and no debug log lines.
func lastLines(lines []string, exit *protocol.Exit) []string {
	if exit != nil && exit.Panic != "" {
		return nil
	}
	var out []string
	for _, l := range lines {
		if strings.TrimSpace(l) != "" && !debugLine(l) {
			out = append(out, l)
		}
	}
	return out[max(0, len(out)-warnStderrLines):]
}

// debugLine reports whether l is a JSON log line at debug or trace level.
func debugLine(l string) bool {
	if !strings.HasPrefix(l, "{") {
		return false
	}
	var v struct {
		Level string `json:"@level"`
	}
	return json.Unmarshal([]byte(l), &v) == nil && (v.Level == "debug" || v.Level == "trace")
}

func (c *Catalog) launch(path string, logger hclog.Logger, stdout io.Writer) (*protocol.Conn, error) {
	var env []string
	for _, name := range c.opts.Env {
		if v, ok := os.LookupEnv(name); ok && name != envSocketDir {
			env = append(env, name+"="+v)
		}
	}
	if dir := c.socketDir(); dir != "" {
		env = append(env, envSocketDir+"="+dir)
	}
	return protocol.Launch(protocol.LaunchConfig{
		Path:            path,
		Env:             env,
		Logger:          logger,
		MaxMessageBytes: c.opts.MaxMessageBytes,
		StartTimeout:    c.opts.StartTimeout,
		PlainText:       c.opts.PlainText,
		Stdout:          stdout,
	})
}

// socketDir returns the directory this process's plugins put their sockets in, made the first time it is
// needed; "" leaves them where go-plugin puts them by default.
func (c *Catalog) socketDir() string {
	c.sockOnce.Do(func() {
		if c.sockBase == "" {
			return
		}
		d, err := newSocketDir(c.sockBase)
		if err != nil {
			c.opts.Logger.Warn("plugins put their sockets in the temporary directory, where a killed plugin's socket is not cleaned up", "error", err)
			return
		}
		c.sock = d
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sock == nil {
		return ""
	}
	return c.sock.path
}

// Close removes the directory the catalog's plugin processes put their sockets in, with any socket a
// killed plugin left there. Call it once no plugin started from the catalog is running; it is safe to call
// more than once.
func (c *Catalog) Close() {
	c.sockOnce.Do(func() {})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sock != nil {
		c.sock.close()
		c.sock = nil
	}
}

// Skipped returns the files discovery passed over, in the order found.
func (c *Catalog) Skipped() []Skipped { return slices.Clone(c.skipped) }

// Searched says where plugins were looked for and what was passed over, for messages about a plugin that
// was not found: "searched DIR1, DIR2 (does not exist); skipped: FILE (reason), …".
func (c *Catalog) Searched() string {
	s := "searched " + strings.Join(c.dirs, ", ")
	if len(c.dirs) == 0 {
		s = "searched no plugins directory"
	}
	if len(c.skipped) > 0 {
		parts := make([]string, len(c.skipped))
		for i, sk := range c.skipped {
			parts[i] = fmt.Sprintf("%s (%s)", sk.Path, sk.Reason)
		}
		s += "; skipped: " + strings.Join(parts, ", ")
	}
	return s
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
// into the host; otherwise it runs as a subprocess, whose stdout goes to Options.Stdout when the stage
// declares sdk.Capabilities.WritesStdout and is logged otherwise. The caller owns the returned Conn and
// must Kill it.
func (c *Catalog) Start(ctx context.Context, name string, kind sdk.Kind, inProcess bool, logger *slog.Logger) (*protocol.Conn, error) {
	p, ok := c.byName[name]
	if !ok {
		return nil, fmt.Errorf("unknown plugin %q; %s", name, c.Searched())
	}
	stage := p.Spec.Stage(kind)
	if stage == nil {
		return nil, fmt.Errorf("plugin %q serves no %s stage (it serves %v)", name, kind, p.Spec.Kinds())
	}
	if inProcess {
		if p.Linked == nil {
			return nil, fmt.Errorf("plugin %q is not linked into this sluice binary, so it cannot run in_process", name)
		}
		return protocol.Local(p.Linked(), protocol.WithLogger(logger))
	}
	if p.Path == "" {
		return nil, fmt.Errorf("plugin %q has no binary (%s); build it (make plugins) or set in_process: true", name, c.Searched())
	}
	if err := c.checkPins(name, p.Path); err != nil {
		return nil, err
	}
	var stdout io.Writer = &stdoutLog{log: logger, level: slog.LevelWarn}
	if stage.Capabilities.WritesStdout {
		stdout = c.opts.Stdout
	}
	conn, err := c.launch(p.Path, newHCLog(logger, false), stdout)
	if err != nil {
		return nil, err
	}
	// The binary may have been replaced since discovery: check it is still the same plugin.
	ctx, cancel := context.WithTimeout(ctx, specTimeout)
	defer cancel()
	spec, err := conn.Spec(ctx)
	if err == nil && (spec.Name != name || !slices.Contains(spec.Kinds(), kind)) {
		err = fmt.Errorf("binary %s now serves plugin %q %v, not %q %s", p.Path, spec.Name, spec.Kinds(), name, kind)
	}
	if err != nil {
		if exit := conn.WaitExit(time.Second); exit != nil {
			err = fmt.Errorf("plugin %s %s", p.Path, exit)
		}
		conn.Kill()
		return nil, err
	}
	return conn, nil
}
