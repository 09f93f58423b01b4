package sdk_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
)

// slowStage is a source, sink and buffer whose Read, Write and Append notice cancellation late (like a
// driver call in flight), and which records whether Close ever ran while one of them was still running.
type slowStage struct {
	busy      atomic.Int32
	violation atomic.Bool
	closes    atomic.Int32
}

func (s *slowStage) block(ctx context.Context) error {
	s.busy.Add(1)
	defer s.busy.Add(-1)
	<-ctx.Done()
	time.Sleep(50 * time.Millisecond)
	return ctx.Err()
}

func (s *slowStage) close() error {
	if s.busy.Load() != 0 {
		s.violation.Store(true)
	}
	s.closes.Add(1)
	return nil
}

type slowSource struct {
	sdk.UnimplementedSource
	*slowStage
}

func (s slowSource) Open(context.Context, sdk.OpenRequest) error { return nil }
func (s slowSource) Read(ctx context.Context) ([]record.Record, error) {
	return nil, s.block(ctx)
}
func (s slowSource) Close(context.Context) error { return s.close() }

type slowSink struct {
	sdk.UnimplementedSink
	*slowStage
}

func (s slowSink) Open(context.Context, sdk.OpenRequest) error { return nil }
func (s slowSink) Write(ctx context.Context, _ record.Batch) error {
	return s.block(ctx)
}
func (s slowSink) Close(context.Context) error { return s.close() }

// TestCloseWaitsForStreams checks the documented order: the SDK calls Close only after Read, Ack, Write
// and Append have returned, even when the host cancels a stream and calls Close at once (as it does
// when it stops a pipeline), and calls it once.
func TestCloseWaitsForStreams(t *testing.T) {
	for _, kind := range []sdk.Kind{sdk.KindSource, sdk.KindSink} {
		t.Run(string(kind), func(t *testing.T) {
			st := &slowStage{}
			p := sdk.Plugin{Spec: sdk.Spec{Name: "slow", Version: "0", Summary: "test"}}
			switch kind {
			case sdk.KindSource:
				p.Spec.Source = &sdk.Stage{Summary: "s"}
				p.NewSource = func() sdk.Source { return slowSource{slowStage: st} }
			case sdk.KindSink:
				p.Spec.Sink = &sdk.Stage{Summary: "s"}
				p.NewSink = func() sdk.Sink { return slowSink{slowStage: st} }
			}
			c, err := protocol.Local(p)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Kill()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			sctx, stop := context.WithCancel(ctx)
			var closeStage func(context.Context) error
			switch kind {
			case sdk.KindSource:
				src := c.Source()
				if err := src.Open(ctx, protocol.OpenRequest{}); err != nil {
					t.Fatal(err)
				}
				if _, err := src.Read(sctx); err != nil {
					t.Fatal(err)
				}
				closeStage = src.Close
			case sdk.KindSink:
				snk := c.Sink()
				if err := snk.Open(ctx, protocol.OpenRequest{}); err != nil {
					t.Fatal(err)
				}
				ws, err := snk.Write(sctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := ws.Send(protocol.NewBatch(nil, record.Position("p"))); err != nil {
					t.Fatal(err)
				}
				closeStage = snk.Close
			}
			for st.busy.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			stop()
			if err := closeStage(ctx); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := closeStage(ctx); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if st.violation.Load() {
				t.Fatal("Close ran while a stream call was still running")
			}
			if n := st.closes.Load(); n != 1 {
				t.Fatalf("the plugin's Close ran %d times, want once", n)
			}
		})
	}
}
