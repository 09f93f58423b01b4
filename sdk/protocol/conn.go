package protocol

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/internal/transport"
	"github.com/sluicehq/sluice/sdk/proto/sluicev1"
)

// Conn is a connection to one running plugin instance. A Conn serves one stage: open a new Conn for each
// stage, so that every stage runs (and can crash and restart) on its own.
//
// A Conn is safe for concurrent use.
type Conn struct {
	cc     grpc.ClientConnInterface
	client *plugin.Client // nil when in-process
	cmd    *exec.Cmd      // the plugin process; nil when in-process
	pid    int
	tail   *stderrTail
	logger hclog.Logger
	stop   func() // asks the plugin to stop, then kills it
	abort  func() // in-process: stops the server at once, without Close; nil for a subprocess
	kill   sync.Once
	done   chan struct{} // closed when the plugin has exited (or the in-process server stopped)
	once   sync.Once
	exit   *Exit // set before done is closed; nil when in-process
}

// How long Kill gives a plugin: it asks the plugin to exit and waits killGrace for it, then kills the
// process (SIGKILL, which also ends a stopped process) and waits at most killReap for it to be reaped and
// for go-plugin's goroutines to end.
const (
	killGrace = 1500 * time.Millisecond
	killReap  = 1500 * time.Millisecond
)

// KillTimeout bounds Conn.Kill: it returns within this long whatever the plugin does (frozen, hung, ignoring
// signals).
const KillTimeout = killGrace + killReap

// DefaultMaxMessageBytes is the gRPC message limit unless LaunchConfig.MaxMessageBytes says otherwise: room
// for a 16 MiB MongoDB document, several times over, plus its envelope.
const DefaultMaxMessageBytes = transport.DefaultMaxMessageBytes

// Handshake is the go-plugin handshake every plugin binary answers, for tests that speak go-plugin to a
// plugin directly.
var Handshake = transport.Handshake

// PartSpec is the go-plugin plugin-set key under which a plugin binary serves the Plugin service.
const PartSpec = transport.PartSpec

// DefaultStartTimeout bounds a plugin's handshake unless LaunchConfig.StartTimeout says otherwise.
const DefaultStartTimeout = 10 * time.Second

// LaunchConfig says how to start a plugin binary.
type LaunchConfig struct {
	// Path is the plugin binary.
	Path string
	// Env is the plugin's whole environment: the host passes a minimal one, not its own.
	Env []string
	// Logger receives the plugin's log lines (its stderr) through a logger named after the plugin binary,
	// go-plugin's own lines, and, when the plugin panics, one error line "plugin panicked" whose "panic"
	// holds the message and first frame (go-plugin also passes every raw line of the panic to the named
	// logger at error level; hosts that want the one line demote those).
	Logger hclog.Logger
	// MaxMessageBytes bounds gRPC messages both ways (default DefaultMaxMessageBytes).
	MaxMessageBytes int
	// StartTimeout bounds the handshake (default DefaultStartTimeout).
	StartTimeout time.Duration
	// Stdout receives what the plugin writes to its stdout after the handshake; nil discards it. The host
	// passes its own stdout only to stages whose output is meant for it (sdk.Capabilities.WritesStdout).
	Stdout io.Writer
	// PlainText turns mutual TLS off. Only for measuring its cost; plugins talk over TLS by default.
	PlainText bool
}

// StartError is the error Launch returns when a binary could not be started as a plugin: it could not be
// executed, did not complete the handshake, or could not be connected to.
type StartError struct {
	// Path is the binary.
	Path string
	// Reason says in one line what went wrong: `printed "hello" on stdout instead of the plugin
	// handshake: not a sluice plugin`, `ended before the plugin handshake: exited with status 1: …`, `did
	// not complete the plugin handshake within 10s`, `speaks plugin protocol version 2; this sluice speaks
	// version 1: …`, `announced 127.0.0.1:1 in its plugin handshake but nothing accepts connections there`.
	Reason string
	// Exit is how the process ended, when it was reaped (nil when it could not be executed).
	Exit *Exit
	// Stderr holds the last lines the process wrote to its stderr (see Exit.Stderr).
	Stderr []string
	// Err is go-plugin's error.
	Err error
}

func (e *StartError) Error() string { return fmt.Sprintf("starting plugin %s: %s", e.Path, e.Reason) }

// Unwrap returns go-plugin's error.
func (e *StartError) Unwrap() error { return e.Err }

// Launch starts a plugin binary as a subprocess and connects to it over gRPC with mutual TLS. The process
// gets the environment in cfg.Env only, and is killed when the host process dies (Linux parent-death
// signal; on other systems the SDK notices the orphaning within a second and exits). A binary that does not
// start as a plugin is stopped and reported as a *StartError.
func Launch(cfg LaunchConfig) (*Conn, error) {
	transport.UseBufferPool()
	maxMsg := cfg.MaxMessageBytes
	if maxMsg <= 0 {
		maxMsg = DefaultMaxMessageBytes
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	cmd := exec.Command(cfg.Path)
	cmd.Env = append(append([]string(nil), cfg.Env...), fmt.Sprintf("%s=%d", transport.EnvMaxMessageBytes, maxMsg))
	cmd.SysProcAttr = deathSignal()
	var mtls *hostTLS
	if !cfg.PlainText {
		var err error
		if mtls, err = newHostTLS(); err != nil {
			return nil, err
		}
		cmd.Env = append(cmd.Env, envClientCert+"="+string(mtls.certPEM))
	}
	c := &Conn{cmd: cmd, logger: logger, done: make(chan struct{})}
	c.tail = newStderrTail(func(text string) { logger.Error("plugin panicked", "panic", text) })
	set := plugin.PluginSet{transport.PartSpec: &transport.HostPart{}}
	clientCfg := &plugin.ClientConfig{
		HandshakeConfig:  transport.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{sdk.ProtocolVersion: set},
		Cmd:              cmd,
		SkipHostEnv:      true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
		StartTimeout:     cfg.StartTimeout,
		Stderr:           c.tail.raw(),
		SyncStdout:       cfg.Stdout,
		SyncStderr:       c.tail.forwarded(func(l string) { logger.Debug("plugin stderr", "line", l) }),
		// A connection attempt to the announced address is bounded like the handshake (gRPC's own bound
		// is 20s): go-plugin's first call on the connection waits for it.
		GRPCDialOptions: append(transport.DialOptions(maxMsg),
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: cfg.StartTimeout})),
	}
	if mtls != nil {
		// Not go-plugin's AutoMTLS, whose certificate other languages' TLS stacks refuse (see tls.go).
		clientCfg.TLSConfig = mtls.config
	}
	c.client = plugin.NewClient(clientCfg)
	began := time.Now()
	rpc, err := c.client.Client()
	if cmd.Process != nil {
		c.pid = cmd.Process.Pid
	}
	if err == nil && mtls != nil && !mtls.gotServerCert() {
		err = errNoServerCert
	}
	if err != nil {
		return nil, c.startError(cfg, err)
	}
	raw, err := rpc.Dispense(transport.PartSpec)
	if err != nil {
		return nil, c.startError(cfg, err)
	}
	cc := raw.(*grpc.ClientConn)
	if err := c.connect(cc, cfg.StartTimeout, began, clientCfg.TLSConfig); err != nil {
		return nil, c.startError(cfg, err)
	}
	c.cc = cc
	c.stop = func() { c.stopProcess(killGrace) }
	go c.watch()
	return c, nil
}

// connectError is a plugin that completed its handshake but cannot be reached at the address it announced
// there: Reason says so in one sentence.
type connectError struct {
	reason string
	exited bool // the process had exited by then
}

func (e *connectError) Error() string { return e.reason }

// connect waits up to timeout for cc to reach the address the plugin announced in its handshake (gRPC
// dials lazily, so a plugin that announced an address it does not serve would otherwise fail its first
// call in gRPC's words). It fails with a *connectError when nothing accepts connections there, when the
// connection there cannot be set up, or when the plugin does not answer there within timeout (gRPC's
// connection attempt is bounded by it: MinConnectTimeout). began is
// when the plugin was started; tlsConfig is the host's TLS configuration (nil: plain text).
func (c *Conn) connect(cc *grpc.ClientConn, timeout time.Duration, began time.Time, tlsConfig *tls.Config) error {
	silent := fmt.Sprintf("announced %s in its plugin handshake but does not answer there within %s", c.address(), timeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cc.Connect()
	for {
		state := cc.GetState()
		switch state {
		case connectivity.Ready:
			return nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			reason, answered := c.unreachable(tlsConfig, silent)
			if !answered && time.Since(began) >= timeout {
				// In plain text nothing tells a silent server from one that closes connections but the time
				// gRPC's attempt took: one that failed after timeout failed on its deadline (MinConnectTimeout).
				reason = silent
			}
			return &connectError{reason: reason}
		}
		if !cc.WaitForStateChange(ctx, state) {
			return &connectError{reason: silent}
		}
	}
}

// probeTimeout bounds each step of unreachable's own look at the plugin's address.
const probeTimeout = time.Second

// unreachable says why the connection to the plugin's announced address failed: nothing accepts
// connections there; it does not answer there (over TLS: then the reason is silent); it serves another
// certificate than the one in its handshake; or it accepts connections but no gRPC connection could be
// set up with it. answered is true when that is known for sure, false when the plugin accepted a
// plain-text connection (it may or may not answer there).
func (c *Conn) unreachable(tlsConfig *tls.Config, silent string) (reason string, answered bool) {
	addr := c.address()
	rc := c.client.ReattachConfig()
	if rc == nil || rc.Addr == nil {
		return "announced no address in its plugin handshake", true
	}
	conn, err := net.DialTimeout(rc.Addr.Network(), rc.Addr.String(), probeTimeout)
	if err != nil {
		return fmt.Sprintf("announced %s in its plugin handshake but nothing accepts connections there", addr), true
	}
	defer conn.Close()
	failed := fmt.Sprintf("announced %s in its plugin handshake and accepts connections there, but no gRPC connection could be set up with it", addr)
	if tlsConfig == nil {
		return failed, false
	}
	_ = conn.SetDeadline(time.Now().Add(probeTimeout))
	err = tls.Client(conn, tlsConfig).Handshake()
	var verr *tls.CertificateVerificationError
	var nerr net.Error
	switch {
	case errors.As(err, &verr):
		return fmt.Sprintf("announced %s in its plugin handshake but serves another TLS certificate there than the one its handshake sent", addr), true
	case errors.As(err, &nerr) && nerr.Timeout():
		return silent, true
	case err != nil:
		return fmt.Sprintf("announced %s in its plugin handshake and accepts connections there, but not over TLS", addr), true
	}
	return failed, true
}

// address is the address the plugin announced in its handshake, as a user would write it.
func (c *Conn) address() string {
	if rc := c.client.ReattachConfig(); rc != nil && rc.Addr != nil {
		return rc.Addr.String()
	}
	return "an address"
}

// exitedSoon reports whether the plugin process exits within a moment (go-plugin notices an exit only
// once it has read the process's output to its end and reaped it).
func (c *Conn) exitedSoon() bool {
	for range 25 {
		if c.client.Exited() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c.client.Exited()
}

// startError stops what is left of a plugin that failed to start and explains why it failed.
func (c *Conn) startError(cfg LaunchConfig, err error) error {
	var ce *connectError
	if errors.As(err, &ce) && c.exitedSoon() {
		// The plugin died after its handshake: its exit says more than the address it no longer serves.
		ce.exited = true
	}
	c.stopProcess(0) // nothing to ask: go-plugin has already killed the process itself, or it is to be killed
	se := &StartError{Path: cfg.Path, Err: err}
	if c.client.Exited() {
		c.finish()
		se.Exit = c.exit
	}
	_, se.Stderr = c.tail.snapshot()
	se.Reason = startReason(err, se.Exit, cfg.StartTimeout)
	return se
}

// envClientCert names the variable that holds the host's TLS certificate (PEM) in a plugin's environment.
const envClientCert = "PLUGIN_CLIENT_CERT"

// errNoServerCert: the plugin's handshake line had no TLS certificate, so the host cannot authenticate it.
var errNoServerCert = errors.New("no TLS certificate in the handshake line")

var pluginVersion = regexp.MustCompile(`Plugin version: (\S+?),`)

// startReason explains go-plugin's error for a plugin that failed to start. go-plugin's handshake errors
// have no types, so they are told apart by their text.
func startReason(err error, exit *Exit, timeout time.Duration) string {
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		return "cannot be executed: " + pathErr.Err.Error()
	}
	var ce *connectError
	if errors.As(err, &ce) {
		if ce.exited && exit != nil {
			return "ended right after its plugin handshake: it " + exit.String()
		}
		return ce.reason
	}
	if errors.Is(err, errNoServerCert) {
		return "sent no TLS certificate in its plugin handshake (the sixth field), so it cannot be authenticated: " +
			"a plugin must serve mutual TLS (see docs/plugins-in-other-languages.md)"
	}
	msg := err.Error()
	first, _, _ := strings.Cut(msg, "\n")
	const unrecognized = "Unrecognized remote plugin message: "
	switch {
	case strings.HasPrefix(first, unrecognized) && strings.TrimSpace(strings.TrimPrefix(first, unrecognized)) != "":
		line := strings.TrimPrefix(first, unrecognized)
		if len(line) > 100 {
			line = line[:100] + "…"
		}
		return fmt.Sprintf("printed %q on stdout instead of the plugin handshake: not a sluice plugin", line)
	case strings.Contains(msg, "error parsing core protocol version"), strings.Contains(msg, "incompatible core API version"):
		return fmt.Sprintf("printed something other than the plugin handshake on stdout (%s): not a sluice plugin", first)
	case strings.Contains(msg, "incompatible API version"):
		v := "another"
		if m := pluginVersion.FindStringSubmatch(msg); m != nil {
			v = m[1]
		}
		return fmt.Sprintf("speaks plugin protocol version %s; this sluice speaks version %d: build it against a matching sluice sdk", v, sdk.ProtocolVersion)
	case strings.HasPrefix(first, unrecognized), strings.Contains(msg, "plugin exited before we could connect"):
		if exit != nil {
			return "ended before the plugin handshake: it " + exit.String()
		}
		return "closed its stdout before the plugin handshake"
	case strings.Contains(msg, "timeout while waiting for plugin to start"):
		return fmt.Sprintf("did not complete the plugin handshake within %s", timeout)
	case strings.Contains(msg, "unsupported plugin protocol"):
		return "serves go-plugin's net/rpc protocol, not gRPC: not a sluice plugin"
	}
	return "plugin handshake failed: " + first
}

// watch closes done when the subprocess exits. go-plugin reads the plugin's stdout and stderr to their end,
// then reaps the process (which sets cmd.ProcessState), and only then reports Exited under its lock: once
// Exited is true, ProcessState and every stderr line are there to read.
func (c *Conn) watch() {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for range t.C {
		if c.client.Exited() {
			c.finish()
			return
		}
	}
}

// finish records how the process ended and closes done. Call it only once client.Exited() is true.
func (c *Conn) finish() {
	c.once.Do(func() {
		c.tail.finish()
		c.exit = exitOf(c.cmd.ProcessState, c.tail)
		close(c.done)
	})
}

// stopProcess asks the plugin to exit (go-plugin's Kill: it closes the connection and calls the plugin's
// Shutdown), waits grace for that, then kills the process group and waits, bounded, for go-plugin to reap
// it. go-plugin's Kill alone can block forever: its Shutdown call only ends when the plugin answers or
// exits, and a stopped or frozen plugin does neither.
func (c *Conn) stopProcess(grace time.Duration) {
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		c.client.Kill()
	}()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		if grace > 0 {
			c.logger.Warn("plugin did not exit when asked; killing it", "pid", c.pid, "waited", grace.String())
		}
		if c.cmd.Process != nil && !c.client.Exited() {
			killGroup(c.cmd.Process)
		}
		reap := time.NewTimer(killReap)
		defer reap.Stop()
		select {
		case <-stopped:
		case <-reap.C:
			c.logger.Warn("plugin process did not end after SIGKILL; leaving it", "pid", c.pid)
		}
	}
	if c.client.Exited() {
		c.finish()
	}
}

// LocalOption configures Local.
type LocalOption func(*localOptions)

type localOptions struct{ logger *slog.Logger }

// WithLogger makes the in-process plugin's OpenRequest.Logger write to l instead of stderr (the host passes
// its own logger).
func WithLogger(l *slog.Logger) LocalOption { return func(o *localOptions) { o.logger = l } }

// Local serves p in this process over an in-memory gRPC connection: the same protocol code as a
// subprocess, without the process boundary, the socket or TLS. It is how first-party plugins are linked
// in-process, and how the cost of the boundary is measured.
//
// Kill closes a stage the host has not closed (its Close is called, as when a plugin process is asked to
// stop) and stops the server; Abort stops it without Close. Either way the stage's context
// (sdk.OpenRequest.Context) ends.
func Local(p sdk.Plugin, opts ...LocalOption) (*Conn, error) {
	o := localOptions{logger: sdk.Logger()}
	for _, opt := range opts {
		opt(&o)
	}
	transport.UseBufferPool()
	lis := transport.ListenPipe()
	srv := grpc.NewServer(transport.ServerOptions(DefaultMaxMessageBytes)...)
	stages, err := transport.RegisterLocal(srv, &p, o.logger)
	if err != nil {
		return nil, err
	}
	go func() { _ = srv.Serve(lis) }()
	cc, err := grpc.NewClient("passthrough:///local", append(transport.DialOptions(DefaultMaxMessageBytes),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		srv.Stop()
		return nil, err
	}
	c := &Conn{cc: cc, done: make(chan struct{})}
	// Both bounded, so that a plugin method that ignores its context cannot hold the host.
	end := func(abort bool) {
		defer c.once.Do(func() { close(c.done) })
		ctx, cancel := context.WithTimeout(context.Background(), KillTimeout)
		defer cancel()
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			stages.Shutdown(ctx, abort)
			_ = cc.Close()
			// Stop closes the connections and cancels the plugin's calls, but waits for its serving
			// goroutines.
			srv.Stop()
		}()
		select {
		case <-stopped:
		case <-ctx.Done():
		}
	}
	c.stop = func() { end(false) }
	c.abort = func() { end(true) }
	return c, nil
}

// Spec asks the plugin for its spec and checks it.
func (c *Conn) Spec(ctx context.Context) (sdk.Spec, error) {
	resp, err := sluicev1.NewPluginClient(c.cc).Spec(ctx, &sluicev1.Empty{})
	if err != nil {
		return sdk.Spec{}, fmt.Errorf("reading spec: %w", err)
	}
	var spec sdk.Spec
	if err := json.Unmarshal(resp.GetSpecJson(), &spec); err != nil {
		return sdk.Spec{}, fmt.Errorf("reading spec: %w", err)
	}
	if err := spec.Validate(); err != nil {
		return sdk.Spec{}, fmt.Errorf("invalid spec: %w", err)
	}
	return spec, nil
}

// Source returns a client for the plugin's source stage.
func (c *Conn) Source() *Source { return &Source{c: sluicev1.NewSourceClient(c.cc)} }

// Sink returns a client for the plugin's sink stage.
func (c *Conn) Sink() *Sink { return &Sink{c: sluicev1.NewSinkClient(c.cc)} }

// Buffer returns a client for the plugin's buffer stage.
func (c *Conn) Buffer() *Buffer { return &Buffer{c: sluicev1.NewBufferClient(c.cc)} }

// Done is closed when the plugin process has exited (Exit then says how), or when Kill has stopped an
// in-process plugin.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Pid returns the plugin's process id (also after it exited), or 0 when it runs in-process.
func (c *Conn) Pid() int { return c.pid }

// Exit returns how the plugin process ended: nil while it runs, and always nil for an in-process plugin.
func (c *Conn) Exit() *Exit {
	select {
	case <-c.done:
	default:
		return nil
	}
	if c.exit == nil {
		return nil
	}
	e := *c.exit
	e.Stderr = slices.Clone(e.Stderr)
	return &e
}

// WaitExit waits up to d for the plugin process to exit and returns Exit: after a call or stream failed,
// it tells whether (and how) the plugin died. It returns nil at once for an in-process plugin.
func (c *Conn) WaitExit(d time.Duration) *Exit {
	if c.client == nil {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-c.done:
	case <-timer.C:
	}
	return c.Exit()
}

// Kill ends the plugin and returns within KillTimeout whatever the plugin does. A subprocess is asked to
// exit (go-plugin closes the connection and calls its Shutdown); one still running after a short grace
// period is killed with SIGKILL, with its process group, which ends a frozen or stopped (SIGSTOP) process
// too. An in-process plugin's server is stopped. Kill is safe to call more than once and from several
// goroutines at once: every call returns when the first one is done.
//
// An in-process plugin's stage, unless the host closed it, is closed as a plugin process closes it when
// asked to exit: its calls are cancelled and waited for, then its Close runs; then its server is stopped.
func (c *Conn) Kill() { c.kill.Do(c.stop) }

// Abort ends the plugin at once, without asking it anything first: its process group is killed
// (SIGKILL), so it does nothing more — no call in progress completes and no Close runs — then it is reaped
// as Kill does (bounded by KillTimeout). An in-process plugin's stage is abandoned: its calls and its
// context (sdk.OpenRequest.Context) are cancelled, its Close is not called, and its server is stopped.
// The host aborts the stages of a pipeline whose lease is lost. Safe to call more than once, and together
// with Kill: the first call decides.
func (c *Conn) Abort() {
	c.kill.Do(func() {
		if c.abort != nil {
			c.abort()
			return
		}
		if c.cmd.Process != nil && !c.client.Exited() {
			killGroup(c.cmd.Process)
		}
		c.stop()
	})
}
