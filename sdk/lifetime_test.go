package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
)

// journal records, in order, the calls a stage received and when its stage context ended.
type journal struct {
	mu      sync.Mutex
	entries []string
	ended   chan struct{} // closed when the stage context ends
}

func newJournal() *journal { return &journal{ended: make(chan struct{})} }

func (j *journal) add(format string, args ...any) {
	j.mu.Lock()
	j.entries = append(j.entries, fmt.Sprintf(format, args...))
	j.mu.Unlock()
}

func (j *journal) get() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.entries)
}

// watch records the stage context's end and its cause.
func (j *journal) watch(ctx context.Context) {
	context.AfterFunc(ctx, func() {
		j.add("context ended: %v", context.Cause(ctx))
		close(j.ended)
	})
}

// lifeSink journals its calls, and whether its stage context was still live at each of them. Write and
// Checkpoint report an overlap.
type lifeSink struct {
	sdk.UnimplementedSink
	j       *journal
	life    context.Context
	inWrite sync.Mutex
	openErr error
}

func (s *lifeSink) live() string {
	if s.life.Err() != nil {
		return "ended"
	}
	return "live"
}

func (s *lifeSink) Open(_ context.Context, req sdk.OpenRequest) error {
	s.life = req.Context()
	s.j.watch(s.life)
	s.j.add("open")
	return s.openErr
}

func (s *lifeSink) Checkpoint(context.Context) (record.Position, error) {
	if !s.inWrite.TryLock() {
		s.j.add("checkpoint during write")
		return nil, nil
	}
	defer s.inWrite.Unlock()
	s.j.add("checkpoint (context %s)", s.live())
	return nil, nil
}

func (s *lifeSink) Write(_ context.Context, b record.Batch) error {
	s.inWrite.Lock()
	defer s.inWrite.Unlock()
	time.Sleep(time.Millisecond) // room for a Checkpoint to overlap, were it allowed to
	s.j.add("write %s (context %s)", b.Position, s.live())
	return nil
}

func (s *lifeSink) Close(context.Context) error {
	s.j.add("close (context %s)", s.live())
	return nil
}

func startLifeSink(t *testing.T, s *lifeSink) (*protocol.Conn, *protocol.Sink, context.Context) {
	t.Helper()
	c, err := protocol.Local(sdk.Plugin{
		Spec:    sdk.Spec{Name: "life", Version: "0", Summary: "test", Sink: &sdk.Stage{Summary: "s"}},
		NewSink: func() sdk.Sink { return s },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Kill)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c, c.Sink(), ctx
}

func waitEnded(t *testing.T, j *journal) {
	t.Helper()
	select {
	case <-j.ended:
	case <-time.After(5 * time.Second):
		t.Fatalf("the stage context did not end; journal: %q", j.get())
	}
}

// TestLifetimeOrder checks the documented order when the host closes a sink: Open first, Checkpoint before
// and after a write stream (also once the stream has ended) with the stage context live throughout, Close
// last with it still live, and the context ended right after Close with ErrStageClosed.
func TestLifetimeOrder(t *testing.T) {
	j := newJournal()
	_, snk, ctx := startLifeSink(t, &lifeSink{j: j})
	if err := snk.Open(ctx, protocol.OpenRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := snk.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	ws, err := snk.Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a", "b"} {
		if err := ws.Send(protocol.NewBatch(nil, record.Position(p))); err != nil {
			t.Fatal(err)
		}
		if _, err := ws.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if err := ws.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Recv(); err == nil {
		t.Fatal("the write stream did not end after CloseSend")
	}
	if _, err := snk.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if err := snk.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitEnded(t, j)
	want := []string{"open", "checkpoint (context live)", "write a (context live)", "write b (context live)",
		"checkpoint (context live)", "close (context live)", "context ended: " + sdk.ErrStageClosed.Error()}
	if got := j.get(); !slices.Equal(got, want) {
		t.Fatalf("calls:\n got %q\nwant %q", got, want)
	}
	if _, err := snk.Checkpoint(ctx); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Checkpoint after Close: %v, want an error saying the stage is closed", err)
	}
}

// TestLifetimeCheckpointNeverOverlapsWrite: while a stream writes, the host's Checkpoint calls wait their
// turn.
func TestLifetimeCheckpointNeverOverlapsWrite(t *testing.T) {
	j := newJournal()
	_, snk, ctx := startLifeSink(t, &lifeSink{j: j})
	if err := snk.Open(ctx, protocol.OpenRequest{}); err != nil {
		t.Fatal(err)
	}
	ws, err := snk.Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 50 {
			if _, err := snk.Checkpoint(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for i := range 50 {
		if err := ws.Send(protocol.NewBatch(nil, record.Position(fmt.Sprint(i)))); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for _, e := range j.get() {
		if e == "checkpoint during write" {
			t.Fatal("Checkpoint ran while Write was running")
		}
	}
}

// TestLifetimeKillWithoutClose: a stage the host never closed is closed when the plugin is stopped (Kill);
// the stage context ends after that Close.
func TestLifetimeKillWithoutClose(t *testing.T) {
	j := newJournal()
	c, snk, ctx := startLifeSink(t, &lifeSink{j: j})
	if err := snk.Open(ctx, protocol.OpenRequest{}); err != nil {
		t.Fatal(err)
	}
	ws, err := snk.Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Send(protocol.NewBatch(nil, record.Position("a"))); err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Recv(); err != nil {
		t.Fatal(err)
	}
	c.Kill() // the write stream is still open
	waitEnded(t, j)
	want := []string{"open", "write a (context live)", "close (context live)", "context ended: " + sdk.ErrStageClosed.Error()}
	if got := j.get(); !slices.Equal(got, want) {
		t.Fatalf("calls:\n got %q\nwant %q", got, want)
	}
}

// TestLifetimeAbort: an aborted stage gets no Close; its stage context ends with ErrStageAbandoned.
func TestLifetimeAbort(t *testing.T) {
	j := newJournal()
	c, snk, ctx := startLifeSink(t, &lifeSink{j: j})
	if err := snk.Open(ctx, protocol.OpenRequest{}); err != nil {
		t.Fatal(err)
	}
	c.Abort()
	waitEnded(t, j)
	want := []string{"open", "context ended: " + sdk.ErrStageAbandoned.Error()}
	if got := j.get(); !slices.Equal(got, want) {
		t.Fatalf("calls:\n got %q\nwant %q", got, want)
	}
}

// TestLifetimeFailedOpen: after a failed Open no other call is served, and Close still comes, to release
// what Open got before it failed. Open is served once.
func TestLifetimeFailedOpen(t *testing.T) {
	j := newJournal()
	_, snk, ctx := startLifeSink(t, &lifeSink{j: j, openErr: errors.New("no database")})
	if err := snk.Open(ctx, protocol.OpenRequest{}); err == nil {
		t.Fatal("Open succeeded")
	}
	if err := snk.Open(ctx, protocol.OpenRequest{}); err == nil || !strings.Contains(err.Error(), "already open") {
		t.Fatalf("second Open: %v, want a protocol error", err)
	}
	if _, err := snk.Checkpoint(ctx); err == nil || !strings.Contains(err.Error(), "not open") {
		t.Fatalf("Checkpoint after a failed Open: %v, want a protocol error", err)
	}
	if err := snk.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitEnded(t, j)
	want := []string{"open", "close (context live)", "context ended: " + sdk.ErrStageClosed.Error()}
	if got := j.get(); !slices.Equal(got, want) {
		t.Fatalf("calls:\n got %q\nwant %q", got, want)
	}
}

// TestLifetimeCloseWithoutOpen: a stage never opened is not closed either.
func TestLifetimeCloseWithoutOpen(t *testing.T) {
	j := newJournal()
	_, snk, ctx := startLifeSink(t, &lifeSink{j: j})
	if err := snk.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := j.get(); len(got) != 0 {
		t.Fatalf("calls %q, want none", got)
	}
}

func TestOpenRequestContextOutsideTheSDK(t *testing.T) {
	if ctx := (sdk.OpenRequest{}).Context(); ctx != context.Background() {
		t.Fatalf("Context of a bare OpenRequest = %v, want context.Background()", ctx)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if got := (sdk.OpenRequest{}).WithContext(ctx).Context(); got != ctx {
		t.Fatal("WithContext did not set Context")
	}
}
