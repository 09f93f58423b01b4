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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/status"

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
	UseBufferPool()
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{ProtocolVersion: pluginSet(&p, Logger())},
		Logger:           hclog.New(&hclog.LoggerOptions{Output: os.Stderr, JSONFormat: true, Level: hclog.Info}),
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, ServerOptions(maxMsg)...)...)
		},
	})
}

// exitWhenOrphaned ends the plugin when its host has died without stopping it (a SIGKILLed host): the
// process is re-parented, and a plugin without a host has nobody to serve.
func exitWhenOrphaned() {
	parent := os.Getppid()
	for range time.Tick(500 * time.Millisecond) {
		if os.Getppid() != parent {
			fmt.Fprintln(stderr, "sluice plugin: host process is gone; exiting")
			os.Exit(3)
		}
	}
}

// Flow-control windows and socket buffers sized for batches of hundreds of kilobytes: gRPC's defaults (64 KiB
// windows, 32 KiB buffers) make a 256 KiB batch wait for several window updates per message. A receiver
// may hold a window's worth of messages it has not read yet, on top of the pipeline's in-flight bytes:
// 1 MiB per stream (4 MiB per connection) moved as many records per second as 8 MiB (32 MiB) did on the
// generate → Kafka benchmark, with 12 MiB less in the host.
const (
	streamWindow = 1 << 20
	connWindow   = 4 << 20
	socketBuffer = 256 << 10
)

// ServerOptions are the gRPC server options a plugin serves with, for a message limit of maxMsg bytes.
func ServerOptions(maxMsg int) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxMsg), grpc.MaxSendMsgSize(maxMsg),
		grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow),
		grpc.ReadBufferSize(socketBuffer), grpc.WriteBufferSize(socketBuffer),
		experimental.BufferPool(sharedPool),
		grpc.ForceServerCodecV2(batchCodec{}),
	}
}

// DialOptions are the matching gRPC client options the host connects with.
func DialOptions(maxMsg int) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsg), grpc.MaxCallSendMsgSize(maxMsg),
			grpc.ForceCodecV2(batchCodec{})),
		grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithReadBufferSize(socketBuffer), grpc.WithWriteBufferSize(socketBuffer),
		experimental.WithBufferPool(sharedPool),
	}
}

// MaxMessageBytes returns the gRPC message limit set by the host, or DefaultMaxMessageBytes.
func MaxMessageBytes() int {
	if n, err := strconv.Atoi(os.Getenv(EnvMaxMessageBytes)); err == nil && n > 0 {
		return n
	}
	return DefaultMaxMessageBytes
}

// stderr is the process's standard error as it was at start. go-plugin's Serve replaces os.Stderr (and
// os.Stdout) with pipes it forwards over its stdio stream, which the host keeps only as debug lines; the
// host parses and forwards the original stderr at the lines' levels, so that is where logs must go.
var stderr = os.Stderr

// Logger returns a logger that writes JSON lines to stderr in the form the host forwards, tagged with the
// plugin's name by the host. OpenRequest.Logger is this logger with the pipeline added.
func Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				// JSON would carry a duration as nanoseconds, which the host prints as a float: "1.5s" reads.
				return slog.String(a.Key, a.Value.Duration().String())
			}
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				// go-plugin parses exactly this layout (hclog's); with any other it forwards the whole line
				// as an unparsed debug message.
				a = slog.String("@timestamp", a.Value.Time().Format("2006-01-02T15:04:05.000000Z07:00"))
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

// Option configures Register.
type Option func(*options)

type options struct{ logger *slog.Logger }

// WithLogger makes OpenRequest.Logger write to l instead of stderr (the host's in-process mode passes its
// own logger).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Register registers p's services on s, for serving a plugin over a gRPC server of the caller's own (the
// host's in-process mode and tests use it; plugin binaries call Serve).
func Register(s *grpc.Server, p Plugin, opts ...Option) error {
	if err := p.check(); err != nil {
		return fmt.Errorf("plugin %q: %w", p.Spec.Name, err)
	}
	o := options{logger: Logger()}
	for _, opt := range opts {
		opt(&o)
	}
	for _, part := range pluginSet(&p, o.logger) {
		if err := part.(*grpcPart).GRPCServer(nil, s); err != nil {
			return err
		}
	}
	return nil
}

func pluginSet(p *Plugin, logger *slog.Logger) plugin.PluginSet {
	// One set of metrics per plugin instance: the host opens one stage per instance.
	metrics := NewMetrics()
	set := plugin.PluginSet{PartSpec: &grpcPart{register: func(s *grpc.Server) {
		sluicev1.RegisterPluginServer(s, &pluginServer{spec: p.Spec, metrics: metrics})
	}}}
	if p.NewSource != nil {
		set[PartSource] = &grpcPart{register: func(s *grpc.Server) {
			sluicev1.RegisterSourceServer(s, &sourceServer{impl: p.NewSource(), opened: opened{logger: logger, metrics: metrics}})
		}}
	}
	if p.NewBuffer != nil {
		set[PartBuffer] = &grpcPart{register: func(s *grpc.Server) {
			sluicev1.RegisterBufferServer(s, &bufferServer{impl: p.NewBuffer(), opened: opened{logger: logger, metrics: metrics}})
		}}
	}
	if p.NewSink != nil {
		set[PartSink] = &grpcPart{register: func(s *grpc.Server) {
			sluicev1.RegisterSinkServer(s, &sinkServer{impl: p.NewSink(), opened: opened{logger: logger, metrics: metrics}})
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

// pluginServer serves the Plugin service: the spec, and the metrics of the stage the instance serves.
type pluginServer struct {
	sluicev1.UnimplementedPluginServer
	spec    Spec
	metrics *Metrics
}

func (s *pluginServer) Spec(context.Context, *sluicev1.Empty) (*sluicev1.SpecResponse, error) {
	b, err := json.Marshal(s.spec)
	if err != nil {
		return nil, err
	}
	return &sluicev1.SpecResponse{SpecJson: b}, nil
}

// Metrics returns the stage's metrics. A panic in a plugin's GaugeFunc or BufferFill func is an error of
// this call, not the end of the process.
func (s *pluginServer) Metrics(context.Context, *sluicev1.MetricsRequest) (resp *sluicev1.MetricsResponse, err error) {
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, status.Errorf(codes.Internal, "collecting metrics: panic: %v", r)
		}
	}()
	text, fill, err := s.metrics.Text()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	resp = &sluicev1.MetricsResponse{Text: text}
	if fill != nil {
		resp.BufferFill = &sluicev1.BufferFill{Entries: fill.Entries, Bytes: fill.Bytes, Fraction: fill.Fraction}
	}
	return resp, nil
}
