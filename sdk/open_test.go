package sdk_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
)

// openSink keeps the OpenRequest it was opened with.
type openSink struct {
	sdk.UnimplementedSink
	got chan sdk.OpenRequest
}

func (s *openSink) Open(_ context.Context, req sdk.OpenRequest) error {
	s.got <- req
	return nil
}

// TestOpenRequestCrossesTheWire checks that every field the host sets in an OpenRequest reaches the
// plugin's Open as sent, the lease's fencing token included.
func TestOpenRequestCrossesTheWire(t *testing.T) {
	s := &openSink{got: make(chan sdk.OpenRequest, 1)}
	c, err := protocol.Local(sdk.Plugin{
		Spec:    sdk.Spec{Name: "open", Version: "0", Summary: "test", Sink: &sdk.Stage{Summary: "s"}},
		NewSink: func() sdk.Sink { return s },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sent := protocol.OpenRequest{Pipeline: "orders", Settings: map[string]any{"a": "b"}, After: record.Position("p7"),
		MaxBatchRecords: 12, MaxBatchBytes: 3456, DeadLetter: true, Fence: 1764504000123}
	if err := c.Sink().Open(ctx, sent); err != nil {
		t.Fatal(err)
	}
	got := <-s.got
	if got.Pipeline != sent.Pipeline || !reflect.DeepEqual(map[string]any(got.Settings), sent.Settings) ||
		string(got.After) != string(sent.After) || got.MaxBatchRecords != sent.MaxBatchRecords ||
		got.MaxBatchBytes != sent.MaxBatchBytes || got.DeadLetter != sent.DeadLetter || got.Fence != sent.Fence {
		t.Fatalf("Open got %+v, want the fields of %+v", got, sent)
	}
	if got.Logger == nil || got.Metrics == nil {
		t.Fatalf("Open got no Logger or Metrics: %+v", got)
	}
}
