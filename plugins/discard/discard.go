// Package discard is a sluice sink that accepts every batch and drops it. It does no work per record, which
// makes it the sink for measuring everything upstream of it (the benchmarks use it).
package discard

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// Plugin returns the discard plugin: its spec and its sink constructor.
func Plugin() sdk.Plugin {
	return sdk.Plugin{
		Spec: sdk.Spec{
			Name:    "discard",
			Version: "0.1.0",
			Summary: "Drops every record: a sink for benchmarks and for trying out sources and transforms.",
			Author:  "sluice",
			Sink: &sdk.Stage{
				Summary: "Acknowledges every batch at once and keeps nothing; logs how many records and batches it dropped when closed.",
			},
		},
		NewSink: func() sdk.Sink { return &Sink{} },
	}
}

// Sink is the discard sink. Write may be called from one goroutine while Close is called from another;
// the counts are atomic.
type Sink struct {
	sdk.UnimplementedSink
	log     *slog.Logger
	opened  time.Time
	records atomic.Int64
	writes  atomic.Int64
}

// Open remembers the logger; discard has no settings.
func (s *Sink) Open(_ context.Context, req sdk.OpenRequest) error {
	s.log = req.Logger
	s.opened = time.Now()
	return nil
}

// Write counts the batch's records (heartbeats included) and drops them.
func (s *Sink) Write(_ context.Context, b record.Batch) error {
	s.records.Add(int64(len(b.Records)))
	s.writes.Add(1)
	return nil
}

// Records returns how many records Write has dropped.
func (s *Sink) Records() int64 { return s.records.Load() }

// Close logs the totals.
func (s *Sink) Close(context.Context) error {
	if s.log != nil {
		s.log.Info("discard: closed", "records", s.records.Load(), "writes", s.writes.Load(),
			"seconds", time.Since(s.opened).Seconds())
	}
	return nil
}
