package sdk_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
)

// rejectSink rejects every record whose payload is "bad". Its first Write blocks until release is closed,
// so that the host's next batches queue up and arrive coalesced in the second Write.
type rejectSink struct {
	sdk.UnimplementedSink
	release chan struct{}
	once    sync.Once
	writes  chan int // the number of records of each Write
}

func (s *rejectSink) Open(context.Context, sdk.OpenRequest) error { return nil }
func (s *rejectSink) Write(ctx context.Context, b record.Batch) error {
	s.once.Do(func() { <-s.release })
	s.writes <- len(b.Records)
	var rej []sdk.Rejection
	for i, r := range b.Records {
		if string(r.Payload) == "bad" {
			rej = append(rej, sdk.Rejection{Index: i, Reason: "too bad"})
		}
	}
	if rej != nil {
		return &sdk.RejectError{Rejections: rej}
	}
	return nil
}

func rejectPlugin(s *rejectSink) sdk.Plugin {
	return sdk.Plugin{
		Spec:    sdk.Spec{Name: "reject", Version: "0", Summary: "test", Sink: &sdk.Stage{Summary: "s"}},
		NewSink: func() sdk.Sink { return s },
	}
}

func recs(payloads ...string) []record.Record {
	out := make([]record.Record, len(payloads))
	for i, p := range payloads {
		out[i] = record.Record{Position: record.Position(p), Payload: []byte(p)}
	}
	return out
}

// TestRejects checks that a sink's RejectError reaches the host as rejects naming each record by its own
// batch, also when the SDK coalesced several host batches into one Write.
func TestRejects(t *testing.T) {
	s := &rejectSink{release: make(chan struct{}), writes: make(chan int, 10)}
	c, err := protocol.Local(rejectPlugin(s))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snk := c.Sink()
	if err := snk.Open(ctx, protocol.OpenRequest{DeadLetter: true}); err != nil {
		t.Fatal(err)
	}
	ws, err := snk.Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	batches := [][]string{{"a", "bad"}, {"b", "c"}, {"bad", "d", "bad"}}
	for _, b := range batches {
		if err := ws.Send(protocol.NewBatch(recs(b...), record.Position(b[len(b)-1]))); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the last batch is queued in the plugin, then let the first Write return.
	time.Sleep(200 * time.Millisecond)
	close(s.release)
	var got []protocol.Reject
	for last := uint64(0); last < 3; {
		a, err := ws.RecvAck()
		if err != nil {
			t.Fatal(err)
		}
		last = a.Seq
		got = append(got, a.Rejects...)
	}
	want := []protocol.Reject{{Seq: 1, Index: 1, Reason: "too bad"}, {Seq: 3, Index: 0, Reason: "too bad"}, {Seq: 3, Index: 2, Reason: "too bad"}}
	if len(got) != len(want) {
		t.Fatalf("rejects = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("rejects = %+v, want %+v", got, want)
		}
	}
	if n := len(s.writes); n != 2 {
		t.Logf("writes: %d (batches 2 and 3 were not coalesced; the mapping was still checked)", n)
	}
}

// TestRejectWithoutDeadLetter checks that a sink rejecting records when the pipeline has no dead-letter
// sink fails the stream instead of dropping them.
func TestRejectWithoutDeadLetter(t *testing.T) {
	s := &rejectSink{release: make(chan struct{}), writes: make(chan int, 10)}
	close(s.release)
	c, err := protocol.Local(rejectPlugin(s))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snk := c.Sink()
	if err := snk.Open(ctx, protocol.OpenRequest{}); err != nil {
		t.Fatal(err)
	}
	ws, err := snk.Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Send(protocol.NewBatch(recs("bad"), record.Position("x"))); err != nil {
		t.Fatal(err)
	}
	_, err = ws.RecvAck()
	if err == nil || !strings.Contains(err.Error(), "no dead-letter sink") {
		t.Fatalf("err = %v, want a failure naming the missing dead-letter sink", err)
	}
}
