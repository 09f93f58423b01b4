package protocol

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/proto/sluicev1"
)

// Conn is a connection to one running plugin instance. A Conn serves one stage: open a new Conn for each
// stage, so that every stage runs (and can crash and restart) on its own.
//
// A Conn is safe for concurrent use.
type Conn struct {
	cc     grpc.ClientConnInterface
	client *plugin.Client // nil when in-process
	stop   func()
	done   chan struct{} // closed when the plugin has exited (or the in-process server stopped)
	once   sync.Once
}

// LaunchConfig says how to start a plugin binary.
type LaunchConfig struct {
	// Path is the plugin binary.
	Path string
	// Env is the plugin's whole environment: the host passes a minimal one, not its own.
	Env []string
	// Logger receives the plugin's log lines (its stderr), named after the plugin.
	Logger hclog.Logger
	// MaxMessageBytes bounds gRPC messages both ways (default sdk.DefaultMaxMessageBytes).
	MaxMessageBytes int
	// StartTimeout bounds the handshake (default 10s).
	StartTimeout time.Duration
	// Stdout receives what the plugin writes to its stdout after the handshake (the stdout sink's output);
	// nil discards it.
	Stdout io.Writer
	// PlainText turns AutoMTLS off. Only for measuring its cost; plugins talk over TLS by default.
	PlainText bool
}

// Launch starts a plugin binary as a subprocess and connects to it over gRPC with mutual TLS. The process
// gets the environment in cfg.Env only, and is killed when the host process dies (Linux parent-death
// signal; on other systems the SDK notices the orphaning within a second and exits).
func Launch(cfg LaunchConfig) (*Conn, error) {
	sdk.UseBufferPool()
	maxMsg := cfg.MaxMessageBytes
	if maxMsg <= 0 {
		maxMsg = sdk.DefaultMaxMessageBytes
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	cmd := exec.Command(cfg.Path)
	cmd.Env = append(append([]string(nil), cfg.Env...), fmt.Sprintf("%s=%d", sdk.EnvMaxMessageBytes, maxMsg))
	cmd.SysProcAttr = deathSignal()
	set := plugin.PluginSet{sdk.PartSpec: &hostPart{}}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{sdk.ProtocolVersion: set},
		Cmd:              cmd,
		SkipHostEnv:      true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         !cfg.PlainText,
		Logger:           logger,
		StartTimeout:     cfg.StartTimeout,
		SyncStdout:       cfg.Stdout,
		GRPCDialOptions:  sdk.DialOptions(maxMsg),
	})
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("starting plugin %s: %w", cfg.Path, err)
	}
	raw, err := rpc.Dispense(sdk.PartSpec)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("connecting to plugin %s: %w", cfg.Path, err)
	}
	c := &Conn{cc: raw.(*grpc.ClientConn), client: client, done: make(chan struct{})}
	c.stop = client.Kill
	go c.watch()
	return c, nil
}

// watch closes done when the subprocess exits.
func (c *Conn) watch() {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for range t.C {
		if c.client.Exited() {
			c.once.Do(func() { close(c.done) })
			return
		}
	}
}

// Local serves p in this process over an in-memory gRPC connection: the same protocol code as a
// subprocess, without the process boundary, the socket or TLS. It is how first-party plugins are linked
// in-process, and how the cost of the boundary is measured.
//
// opts configure the plugin's side; sdk.WithLogger sends its log lines to the host's logger instead of
// stderr.
func Local(p sdk.Plugin, opts ...sdk.Option) (*Conn, error) {
	sdk.UseBufferPool()
	lis := bufconn.Listen(4 << 20)
	srv := grpc.NewServer(sdk.ServerOptions(sdk.DefaultMaxMessageBytes)...)
	if err := sdk.Register(srv, p, opts...); err != nil {
		return nil, err
	}
	go func() { _ = srv.Serve(lis) }()
	cc, err := grpc.NewClient("passthrough:///local", append(sdk.DialOptions(sdk.DefaultMaxMessageBytes),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		srv.Stop()
		return nil, err
	}
	c := &Conn{cc: cc, done: make(chan struct{})}
	c.stop = func() {
		_ = cc.Close()
		srv.Stop()
		c.once.Do(func() { close(c.done) })
	}
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
		return sdk.Spec{}, fmt.Errorf("plugin spec: %w", err)
	}
	return spec, nil
}

// Source returns a client for the plugin's source stage.
func (c *Conn) Source() *Source { return &Source{c: sluicev1.NewSourceClient(c.cc)} }

// Sink returns a client for the plugin's sink stage.
func (c *Conn) Sink() *Sink { return &Sink{c: sluicev1.NewSinkClient(c.cc)} }

// Buffer returns a client for the plugin's buffer stage.
func (c *Conn) Buffer() *Buffer { return &Buffer{c: sluicev1.NewBufferClient(c.cc)} }

// Done is closed when the plugin has exited or the connection was closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Pid returns the plugin's process id, or 0 when it runs in-process.
func (c *Conn) Pid() int {
	if c.client == nil {
		return 0
	}
	if rc := c.client.ReattachConfig(); rc != nil {
		return rc.Pid
	}
	return 0
}

// Kill ends the plugin: it kills the subprocess (after a short grace period in which go-plugin asks it to
// exit) or stops the in-process server. It is safe to call more than once.
func (c *Conn) Kill() { c.stop() }

// hostPart is the host side of the go-plugin GRPCPlugin: it hands back the raw connection.
type hostPart struct {
	plugin.NetRPCUnsupportedPlugin
}

func (hostPart) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("protocol: the host side serves nothing")
}

func (hostPart) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, cc *grpc.ClientConn) (any, error) {
	return cc, nil
}
