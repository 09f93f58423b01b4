package protocol

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/health/grpc_health_v1"
)

// Ping asks the plugin process whether it is serving (go-plugin's health service, which every plugin
// serves, Go or not). It fails when ctx ends first: a process that is stopped (SIGSTOP) or whose gRPC
// server no longer runs cannot answer. An in-process plugin always answers.
func (c *Conn) Ping(ctx context.Context) error {
	if c.client == nil {
		return nil
	}
	_, err := grpc_health_v1.NewHealthClient(c.cc).Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: plugin.GRPCServiceName})
	return fromWire(err)
}
