// Command misbehave is a sluice plugin that fails on purpose, for the host's tests of failures: it can
// fail, panic, exit, block or print to stdout in Open, Read or Write, block in Close and ignore SIGTERM.
// It can also leak its secrets: "leak" logs its password and dsn settings verbatim (through the SDK's
// logger, as a raw stderr line and on stdout) and fails with an error quoting them, for the host's test
// that nothing it prints shows them.
// It is never installed; tests build it into a plugins directory of their own.
//
// Built with -ldflags "-X main.protocolVersion=N" it serves plugin protocol version N instead of the SDK's
// (and nothing else): a plugin built against another SDK, which the host must refuse. Built with
// -ldflags "-X main.brokenSpec=true" it completes the handshake and answers the host's Spec call with a
// spec that is not valid (a name with spaces and no stage).
//
// Its source emits records {"seq":N} (position N as 8 bytes, big-endian, like generate); its sink appends
// each payload as a line to the file path (not durably: at-least-once), so that tests can check that
// nothing was lost.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/rpc"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/proto/sluicev1"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
)

// Behaviours, the values of the open, read and write settings.
var behaviours = []string{"", "error", "permanent", "invalid", "history_lost", "panic", "exit", "block", "slow", "stdout", "leak"}

func settings(data string) []sdk.Setting {
	return []sdk.Setting{
		{Name: "open", Type: sdk.TypeString, Enum: behaviours, Doc: "What Open does: fail (error, permanent, invalid, history_lost), panic, exit, block, slow (sleep delay first) or stdout (print a line to stdout)."},
		{Name: data, Type: sdk.TypeString, Enum: behaviours, Doc: "What " + data + " does once after records have passed."},
		{Name: "after", Type: sdk.TypeInt, Default: "0", Min: "0", Doc: "Records that pass before the " + data + " behaviour starts."},
		{Name: "once_marker", Type: sdk.TypeString, Doc: "When set, a behaviour happens only while this file does not exist, and creates it: the failure heals after a restart."},
		{Name: "close", Type: sdk.TypeString, Enum: []string{"", "block"}, Doc: "block: Close never returns."},
		{Name: "ignore_sigterm", Type: sdk.TypeBool, Default: "false", Doc: "Ignore SIGTERM and SIGINT."},
		{Name: "delay", Type: sdk.TypeDuration, Default: "2s", Doc: "How long slow sleeps."},
		{Name: "password", Type: sdk.TypeString, Secret: true, Doc: "A secret that leak prints."},
		{Name: "dsn", Type: sdk.TypeString, Doc: "A connection string that leak prints."},
	}
}

// protocolVersion, when set at build time, makes the binary serve that plugin protocol version.
var protocolVersion string

// brokenSpec, when "true" at build time, makes the binary answer with an invalid spec.
var brokenSpec string

// stderr is the process's standard error before sdk.Serve hands os.Stderr to go-plugin: what is written
// to it reaches the host at once, even when the process exits right after.
var stderr = os.Stderr

func main() {
	switch {
	case protocolVersion != "":
		serveVersion(protocolVersion)
		return
	case brokenSpec == "true":
		serveBrokenSpec()
		return
	}
	sdk.Serve(sdk.Plugin{
		Spec: sdk.Spec{
			Name: "misbehave", Version: "0.0.1", Summary: "Fails on purpose, for tests.",
			Source: &sdk.Stage{Summary: "Emits {\"seq\":N}.", Settings: append(settings("read"),
				sdk.Setting{Name: "count", Type: sdk.TypeInt, Default: "0", Min: "0", Doc: "Records to emit (0: unlimited)."})},
			Sink: &sdk.Stage{Summary: "Appends payloads to path.", Settings: append(settings("write"),
				sdk.Setting{Name: "path", Type: sdk.TypeString, Required: true, Doc: "The file payloads are appended to."})},
		},
		NewSource: func() sdk.Source { return &source{} },
		NewSink:   func() sdk.Sink { return &sink{} },
	})
}

type config struct {
	Open          string        `setting:"open"`
	Read          string        `setting:"read"`
	Write         string        `setting:"write"`
	After         int64         `setting:"after"`
	OnceMarker    string        `setting:"once_marker"`
	Close         string        `setting:"close"`
	IgnoreSIGTERM bool          `setting:"ignore_sigterm"`
	Delay         time.Duration `setting:"delay"`
	Count         int64         `setting:"count"`
	Path          string        `setting:"path"`
	Password      string        `setting:"password"`
	DSN           string        `setting:"dsn"`

	log *slog.Logger
}

func (c *config) load(req sdk.OpenRequest) error {
	if err := req.Settings.Decode(c); err != nil {
		return err
	}
	c.log = req.Logger
	if c.IgnoreSIGTERM {
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
	}
	return c.act(context.Background(), c.Open, "open")
}

// act does behaviour b in the method named where.
func (c *config) act(ctx context.Context, b, where string) error {
	if b == "" {
		return nil
	}
	if c.OnceMarker != "" {
		if _, err := os.Stat(c.OnceMarker); err == nil {
			return nil
		}
		if err := os.WriteFile(c.OnceMarker, nil, 0o644); err != nil {
			return err
		}
	}
	switch b {
	case "error":
		return fmt.Errorf("misbehave: %s failed (transient)", where)
	case "permanent":
		return sdk.Permanentf("misbehave: %s failed for good", where)
	case "invalid":
		return fmt.Errorf("%w: misbehave: %s refuses these settings", sdk.ErrInvalidSettings, where)
	case "history_lost":
		return sdk.HistoryLost(fmt.Errorf("misbehave: %s: the stored position is no longer available", where))
	case "panic":
		panic("misbehave: panic in " + where)
	case "exit":
		fmt.Fprintf(stderr, "misbehave: exiting with status 7 in %s\n", where)
		os.Exit(7)
	case "block":
		select {} // ignores ctx on purpose
	case "slow":
		select {
		case <-time.After(c.Delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	case "stdout":
		fmt.Println("misbehave: a line on stdout in " + where)
	case "leak":
		c.log.Error("misbehave: connecting", "password", c.Password, "dsn", c.DSN)
		fmt.Fprintf(stderr, "misbehave: a raw stderr line: password=%s dsn=%s\n", c.Password, c.DSN)
		fmt.Printf("misbehave: a line on stdout: password=%s dsn=%s\n", c.Password, c.DSN)
		return fmt.Errorf("misbehave: %s failed: cannot connect to %s with password %s (transient)", where, c.DSN, c.Password)
	}
	return nil
}

func (c *config) close() error {
	if c.Close == "block" {
		select {}
	}
	return nil
}

type source struct {
	sdk.UnimplementedSource
	cfg  config
	next int64
	max  int
}

func (s *source) Open(_ context.Context, req sdk.OpenRequest) error {
	if req.After != nil {
		s.next = int64(binary.BigEndian.Uint64(req.After)) + 1
	}
	s.max = req.MaxBatchRecords
	return s.cfg.load(req)
}

func (s *source) Read(ctx context.Context) ([]record.Record, error) {
	if s.cfg.Count > 0 && s.next >= s.cfg.Count {
		return nil, sdk.ErrDone
	}
	if s.next >= s.cfg.After {
		if err := s.cfg.act(ctx, s.cfg.Read, "read"); err != nil {
			return nil, err
		}
	}
	var recs []record.Record
	for len(recs) < s.max && (s.cfg.Count == 0 || s.next < s.cfg.Count) {
		pos := binary.BigEndian.AppendUint64(nil, uint64(s.next))
		recs = append(recs, record.Record{Position: pos, Op: record.OpInsert, Key: []byte(strconv.FormatInt(s.next, 10)),
			Payload: fmt.Appendf(nil, `{"seq":%d}`, s.next), Encoding: record.EncodingJSON})
		s.next++
	}
	return recs, nil
}

func (s *source) Close(context.Context) error { return s.cfg.close() }

type sink struct {
	sdk.UnimplementedSink
	cfg     config
	mu      sync.Mutex
	f       *os.File
	written int64
}

func (s *sink) Open(_ context.Context, req sdk.OpenRequest) error {
	if err := s.cfg.load(req); err != nil {
		return err
	}
	f, err := os.OpenFile(s.cfg.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return sdk.Permanent(err)
	}
	s.f = f
	return nil
}

func (s *sink) Write(ctx context.Context, b record.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written+int64(len(b.Records)) > s.cfg.After {
		if err := s.cfg.act(ctx, s.cfg.Write, "write"); err != nil {
			return err
		}
	}
	var buf []byte
	for _, r := range b.Records {
		if r.Op == record.OpHeartbeat {
			continue
		}
		buf = append(append(buf, r.Payload...), '\n')
	}
	if _, err := s.f.Write(buf); err != nil {
		return err
	}
	s.written += int64(len(b.Records))
	return nil
}

func (s *sink) Close(context.Context) error {
	err := s.cfg.close()
	if s.f != nil {
		err = errors.Join(err, s.f.Close())
	}
	return err
}

// serveVersion completes go-plugin's handshake announcing plugin protocol version v, with the SDK's magic
// cookie, and serves nothing the host could use.
func serveVersion(v string) {
	n, err := strconv.Atoi(v)
	if err != nil {
		fmt.Fprintf(stderr, "misbehave: protocolVersion %q is not a number\n", v)
		os.Exit(1)
	}
	hs := protocol.Handshake
	hs.ProtocolVersion = uint(n)
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  hs,
		VersionedPlugins: map[int]plugin.PluginSet{n: {protocol.PartSpec: registerer(func(*grpc.Server) {})}},
		GRPCServer:       plugin.DefaultGRPCServer,
	})
}

// serveBrokenSpec serves the SDK's protocol version with a Plugin service whose spec is invalid.
func serveBrokenSpec() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: protocol.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{sdk.ProtocolVersion: {protocol.PartSpec: registerer(func(s *grpc.Server) {
			sluicev1.RegisterPluginServer(s, badSpec{})
		})}},
		GRPCServer: plugin.DefaultGRPCServer,
	})
}

type badSpec struct {
	sluicev1.UnimplementedPluginServer
}

func (badSpec) Spec(context.Context, *sluicev1.Empty) (*sluicev1.SpecResponse, error) {
	return &sluicev1.SpecResponse{SpecJson: []byte(`{"name":"Not A Name","version":"1","summary":"broken"}`)}, nil
}

// registerer is a go-plugin gRPC part that registers services with a function.
type registerer func(*grpc.Server)

func (r registerer) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	r(s)
	return nil
}
func (registerer) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("misbehave: no client side")
}
func (registerer) Client(*plugin.MuxBroker, *rpc.Client) (any, error) {
	return nil, errors.New("misbehave: no net/rpc")
}
func (registerer) Server(*plugin.MuxBroker) (any, error) {
	return nil, errors.New("misbehave: no net/rpc")
}
