package protocol

import (
	"context"
	"errors"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// countSource emits n records with positions "0".."n-1", then ErrDone.
type countSource struct {
	sdk.UnimplementedSource
	n, next int
	mu      sync.Mutex
	acked   record.Position
}

func (s *countSource) Open(_ context.Context, req sdk.OpenRequest) error {
	if req.After != nil {
		v, err := strconv.Atoi(string(req.After))
		if err != nil {
			return err
		}
		s.next = v + 1
	}
	return nil
}

func (s *countSource) Read(context.Context) ([]record.Record, error) {
	if s.next >= s.n {
		return nil, sdk.ErrDone
	}
	var recs []record.Record
	for ; s.next < s.n && len(recs) < 700; s.next++ {
		recs = append(recs, record.Record{Position: record.Position(strconv.Itoa(s.next)), Op: record.OpInsert, Payload: []byte("x")})
	}
	return recs, nil
}

func (s *countSource) Ack(_ context.Context, pos record.Position) error {
	s.mu.Lock()
	s.acked = pos.Clone()
	s.mu.Unlock()
	return nil
}

type collectSink struct {
	sdk.UnimplementedSink
	mu   sync.Mutex
	seen []string
	pos  record.Position
}

func (s *collectSink) Open(context.Context, sdk.OpenRequest) error { return nil }
func (s *collectSink) Write(_ context.Context, b record.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range b.Records {
		s.seen = append(s.seen, string(r.Position))
	}
	s.pos = b.Position.Clone()
	return nil
}

func testPlugin(src *countSource, sink *collectSink) sdk.Plugin {
	return sdk.Plugin{
		Spec: sdk.Spec{Name: "t", Version: "0", Summary: "test",
			Source: &sdk.Stage{Summary: "s"}, Sink: &sdk.Stage{Summary: "k"}},
		NewSource: func() sdk.Source { return src },
		NewSink:   func() sdk.Sink { return sink },
	}
}

func TestLocalSourceToSink(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, sink := &countSource{n: 5000}, &collectSink{}
	sc, err := Local(testPlugin(src, sink))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Kill()
	kc, err := Local(testPlugin(src, sink))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Kill()
	spec, err := sc.Spec(ctx)
	if err != nil || spec.Name != "t" {
		t.Fatalf("spec = %+v, %v", spec, err)
	}
	source, snk := sc.Source(), kc.Sink()
	if err := source.Open(ctx, OpenRequest{After: record.Position("99"), MaxBatchRecords: 256}); err != nil {
		t.Fatal(err)
	}
	if err := snk.Open(ctx, OpenRequest{}); err != nil {
		t.Fatal(err)
	}
	rs, err := source.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := snk.Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seqs := map[uint64]uint64{} // sink seq -> source seq
	var mu sync.Mutex
	ackErr := make(chan error, 1)
	go func() {
		for {
			s, err := ws.Recv()
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				ackErr <- err
				return
			}
			mu.Lock()
			src := seqs[s]
			mu.Unlock()
			if err := rs.Ack(src); err != nil {
				ackErr <- err
				return
			}
		}
	}()
	batches := 0
	for {
		b, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if b.Len() > 256 {
			t.Fatalf("batch of %d records, max 256", b.Len())
		}
		batches++
		mu.Lock()
		seqs[uint64(batches)] = b.Seq // the write stream numbers batches 1, 2, …
		mu.Unlock()
		if err := ws.Send(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := ws.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := <-ackErr; err != nil {
		t.Fatal(err)
	}
	if len(sink.seen) != 4900 || sink.seen[0] != "100" || sink.seen[4899] != "4999" {
		t.Fatalf("sink saw %d records (%v … )", len(sink.seen), sink.seen[:min(3, len(sink.seen))])
	}
	// The SDK hands the last ack to the source's Ack on its own goroutine; it may run just after the
	// stream ended, but before Close.
	deadline := time.Now().Add(5 * time.Second)
	for {
		src.mu.Lock()
		acked := string(src.acked)
		src.mu.Unlock()
		if acked == "4999" && string(sink.pos) == "4999" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("source acked %q, sink stored %q; want 4999", acked, sink.pos)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("%d batches", batches)
}
