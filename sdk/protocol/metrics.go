package protocol

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/proto/sluicev1"
)

// Metrics is what a plugin reports about the stage it serves (see sdk.Metrics).
type Metrics struct {
	// Text holds the stage's own metrics in the Prometheus text exposition format (version 0.0.4), with
	// the plugin's own names; empty when it has none.
	Text []byte
	// Fill is a buffer's fill; nil when the plugin does not report one.
	Fill *sdk.Fill
}

// Metrics asks the plugin for its stage's metrics. Bound the call with ctx: a frozen plugin never answers.
// A plugin that does not implement the call (one built before it existed, or in another language) reports
// none: the zero Metrics and no error.
func (c *Conn) Metrics(ctx context.Context) (Metrics, error) {
	resp, err := sluicev1.NewPluginClient(c.cc).Metrics(ctx, &sluicev1.MetricsRequest{})
	if status.Code(err) == codes.Unimplemented {
		return Metrics{}, nil
	}
	if err != nil {
		return Metrics{}, fmt.Errorf("collecting metrics: %w", fromWire(err))
	}
	m := Metrics{Text: resp.GetText()}
	if f := resp.GetBufferFill(); f != nil {
		m.Fill = &sdk.Fill{Entries: f.GetEntries(), Bytes: f.GetBytes(), Fraction: f.GetFraction()}
	}
	return m, nil
}
