package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/sluicehq/sluice/sdk/proto/sluicev1"
)

// ProtocolVersion is the plugin protocol version this SDK speaks. The host refuses plugins that speak
// another version.
const ProtocolVersion = 1

// Handshake is the go-plugin handshake shared by the host and every plugin. A binary started without the
// magic cookie (for example by a user from a shell) prints a message and exits instead of serving.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "SLUICE_PLUGIN",
	MagicCookieValue: "b9f1c3e2-sluice-connector-plugin",
}

// Names under which a plugin binary serves its parts (go-plugin's plugin set keys).
const (
	PartSpec   = "spec"
	PartSource = string(KindSource)
	PartBuffer = string(KindBuffer)
	PartSink   = string(KindSink)
)

// EnvMaxMessageBytes names the environment variable through which the host tells a plugin the largest gRPC
// message it may send or receive.
const EnvMaxMessageBytes = "SLUICE_MAX_MESSAGE_BYTES"

// DefaultMaxMessageBytes is the default gRPC message limit: room for a 16 MiB MongoDB document, several
// times over, plus its envelope.
const DefaultMaxMessageBytes = 64 << 20

// Plugin is what a plugin binary serves: its spec and a constructor for each stage kind the spec declares.
type Plugin struct {
	Spec      Spec
	NewSource func() Source
	NewBuffer func() Buffer
	NewSink   func() Sink
}

func (p *Plugin) check() error {
	if err := p.Spec.Validate(); err != nil {
		return fmt.Errorf("invalid spec: %w", err)
	}
	for _, c := range []struct {
		kind     Kind
		declared bool
		has      bool
	}{
		{KindSource, p.Spec.Source != nil, p.NewSource != nil},
		{KindBuffer, p.Spec.Buffer != nil, p.NewBuffer != nil},
		{KindSink, p.Spec.Sink != nil, p.NewSink != nil},
	} {
		if c.declared != c.has {
			return fmt.Errorf("spec and constructors disagree about the %s stage", c.kind)
		}
	}
	return nil
}

// Serve serves p over the plugin protocol. It is the one call a plugin's main makes; it returns only when
// the host is done with the plugin, and exits the process if p is invalid. stdout belongs to the protocol
// handshake: log through OpenRequest.Logger (or Logger), which writes to stderr for the host to forward.
func Serve(p Plugin) {
	if err := p.check(); err != nil {
		fmt.Fprintf(os.Stderr, "sluice plugin %q: %v\n", p.Spec.Name, err)
		os.Exit(1)
	}
	maxMsg := MaxMessageBytes()
	go exitWhenOrphaned()
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{ProtocolVersion: pluginSet(&p)},
		Logger:           hclog.New(&hclog.LoggerOptions{Output: os.Stderr, JSONFormat: true, Level: hclog.Info}),
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(maxMsg), grpc.MaxSendMsgSize(maxMsg))...)
		},
	})
}

// exitWhenOrphaned ends the plugin when its host has died without stopping it (a SIGKILLed host): the
// process is re-parented, and a plugin without a host has nobody to serve.
func exitWhenOrphaned() {
	parent := os.Getppid()
	for range time.Tick(500 * time.Millisecond) {
		if os.Getppid() != parent {
			fmt.Fprintln(os.Stderr, "sluice plugin: host process is gone; exiting")
			os.Exit(3)
		}
	}
}

// MaxMessageBytes returns the gRPC message limit set by the host, or DefaultMaxMessageBytes.
func MaxMessageBytes() int {
	if n, err := strconv.Atoi(os.Getenv(EnvMaxMessageBytes)); err == nil && n > 0 {
		return n
	}
	return DefaultMaxMessageBytes
}

// Logger returns a logger that writes JSON lines to stderr in the form the host forwards, tagged with the
// plugin's name by the host. OpenRequest.Logger is this logger with the pipeline added.
func Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				a.Key = "@timestamp"
			case slog.MessageKey:
				a.Key = "@message"
			case slog.LevelKey:
				a.Key = "@level"
				switch l := a.Value.Any().(slog.Level); {
				case l >= slog.LevelError:
					a.Value = slog.StringValue("error")
				case l >= slog.LevelWarn:
					a.Value = slog.StringValue("warn")
				case l >= slog.LevelInfo:
					a.Value = slog.StringValue("info")
				default:
					a.Value = slog.StringValue("debug")
				}
			}
			return a
		},
	}))
}

// Register registers p's services on s, for serving a plugin over a gRPC server of the caller's own (the
// host's in-process mode and tests use it; plugin binaries call Serve).
func Register(s *grpc.Server, p Plugin) error {
	if err := p.check(); err != nil {
		return fmt.Errorf("plugin %q: %w", p.Spec.Name, err)
	}
	for _, part := range pluginSet(&p) {
		if err := part.(*grpcPart).GRPCServer(nil, s); err != nil {
			return err
		}
	}
	return nil
}

func pluginSet(p *Plugin) plugin.PluginSet {
	set := plugin.PluginSet{PartSpec: &grpcPart{register: func(s *grpc.Server) {
		sluicev1.RegisterPluginServer(s, &specServer{spec: p.Spec})
	}}}
	if p.NewSource != nil {
		set[PartSource] = &grpcPart{register: func(s *grpc.Server) {
			sluicev1.RegisterSourceServer(s, &sourceServer{impl: p.NewSource(), name: p.Spec.Name})
		}}
	}
	if p.NewBuffer != nil {
		set[PartBuffer] = &grpcPart{register: func(s *grpc.Server) {
			sluicev1.RegisterBufferServer(s, newBufferServer(p.NewBuffer(), p.Spec.Name))
		}}
	}
	if p.NewSink != nil {
		set[PartSink] = &grpcPart{register: func(s *grpc.Server) {
			sluicev1.RegisterSinkServer(s, &sinkServer{impl: p.NewSink(), name: p.Spec.Name})
		}}
	}
	return set
}

// grpcPart is the plugin side of a go-plugin GRPCPlugin: it only registers servers. The host side lives in
// package protocol.
type grpcPart struct {
	plugin.NetRPCUnsupportedPlugin
	register func(*grpc.Server)
}

func (g *grpcPart) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	g.register(s)
	return nil
}

func (g *grpcPart) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, fmt.Errorf("sdk: the plugin side has no client")
}

type specServer struct {
	sluicev1.UnimplementedPluginServer
	spec Spec
}

func (s *specServer) Spec(context.Context, *sluicev1.Empty) (*sluicev1.SpecResponse, error) {
	b, err := json.Marshal(s.spec)
	if err != nil {
		return nil, err
	}
	return &sluicev1.SpecResponse{SpecJson: b}, nil
}
