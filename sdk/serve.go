package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/sdk/internal/transport"
	"github.com/sluicehq/sluice/sdk/proto/sluicev1"
)

// ProtocolVersion is the plugin protocol version this SDK speaks. The host refuses plugins that speak
// another version.
const ProtocolVersion = transport.ProtocolVersion

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
	maxMsg := transport.MaxMessageBytes()
	go exitWhenOrphaned()
	transport.UseBufferPool()
	set, stages := pluginSet(&p, Logger())
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  transport.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{ProtocolVersion: set},
		Logger:           hclog.New(&hclog.LoggerOptions{Output: os.Stderr, JSONFormat: true, Level: hclog.Info}),
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, transport.ServerOptions(maxMsg)...)...)
		},
	})
	// The host stopped the plugin (go-plugin's Shutdown) without closing its stage, or after: a stage still
	// open gets its Close now, within what the host waits before it kills the process.
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	stages.Shutdown(ctx, false)
}

// shutdownGrace bounds the Close a plugin process gives a stage the host did not close before stopping it.
// The host kills a plugin that has not exited 1.5 s after it asked.
const shutdownGrace = time.Second

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

func init() {
	transport.RegisterLocal = func(s *grpc.Server, plugin any, logger *slog.Logger) (transport.Stages, error) {
		p := plugin.(*Plugin)
		if err := p.check(); err != nil {
			return nil, fmt.Errorf("plugin %q: %w", p.Spec.Name, err)
		}
		set, stages := pluginSet(p, logger)
		for _, part := range set {
			if err := part.(*transport.Part).GRPCServer(nil, s); err != nil {
				return nil, err
			}
		}
		return stages, nil
	}
}

// pluginSet returns the parts a plugin instance serves, and its stages for shutting them down.
func pluginSet(p *Plugin, logger *slog.Logger) (plugin.PluginSet, *instance) {
	// One set of metrics per plugin instance: the host opens one stage per instance.
	metrics := NewMetrics()
	inst := &instance{}
	set := plugin.PluginSet{transport.PartSpec: &transport.Part{Register: func(s *grpc.Server) {
		sluicev1.RegisterPluginServer(s, &pluginServer{spec: p.Spec, metrics: metrics})
	}}}
	if p.NewSource != nil {
		set[transport.PartSource] = &transport.Part{Register: func(s *grpc.Server) {
			srv := &sourceServer{impl: p.NewSource()}
			srv.init(logger, metrics, srv.impl.Close)
			inst.add(&srv.opened)
			sluicev1.RegisterSourceServer(s, srv)
		}}
	}
	if p.NewBuffer != nil {
		set[transport.PartBuffer] = &transport.Part{Register: func(s *grpc.Server) {
			srv := &bufferServer{impl: p.NewBuffer()}
			srv.init(logger, metrics, srv.impl.Close)
			inst.add(&srv.opened)
			sluicev1.RegisterBufferServer(s, srv)
		}}
	}
	if p.NewSink != nil {
		set[transport.PartSink] = &transport.Part{Register: func(s *grpc.Server) {
			srv := &sinkServer{impl: p.NewSink(), turn: make(chan struct{}, 1)}
			srv.init(logger, metrics, srv.impl.Close)
			inst.add(&srv.opened)
			sluicev1.RegisterSinkServer(s, srv)
		}}
	}
	return set, inst
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
