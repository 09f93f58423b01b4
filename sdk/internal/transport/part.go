package transport

import (
	"context"
	"errors"
	"log/slog"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// Part is the plugin side of a go-plugin GRPCPlugin: it only registers gRPC services.
type Part struct {
	plugin.NetRPCUnsupportedPlugin
	Register func(*grpc.Server)
}

// GRPCServer registers the part's services on s.
func (p *Part) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	p.Register(s)
	return nil
}

// GRPCClient fails: the plugin side has no client.
func (p *Part) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("transport: the plugin side has no client")
}

// HostPart is the host side of a go-plugin GRPCPlugin: it hands back the raw connection.
type HostPart struct {
	plugin.NetRPCUnsupportedPlugin
}

// GRPCServer fails: the host side serves nothing.
func (HostPart) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("transport: the host side serves nothing")
}

// GRPCClient returns cc itself (a *grpc.ClientConn).
func (HostPart) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, cc *grpc.ClientConn) (any, error) {
	return cc, nil
}

// Stages are the stages one plugin instance serves.
type Stages interface {
	// Shutdown ends every stage the instance serves that the host has not closed. Gracefully (abort
	// false), each stage's running calls are cancelled and waited for, then the plugin's Close is called,
	// all within ctx. Abort cancels the running calls and ends the stages without calling Close and
	// without waiting. Either way each stage's context (sdk.OpenRequest.Context) ends.
	Shutdown(ctx context.Context, abort bool)
}

// RegisterLocal registers the services of plugin, an sdk.Plugin, on s for serving it in the host's own
// process, with logger for its log lines. Package sdk sets it when it is initialised, so that the host
// side (package protocol) can serve a plugin in-process without the sdk package exporting a way to.
var RegisterLocal func(s *grpc.Server, plugin any, logger *slog.Logger) (Stages, error)
