package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/sdk/internal/transport"
	"github.com/sluicehq/sluice/sdk/proto/sluicev1"
	"github.com/sluicehq/sluice/sdk/record"
)

// Defaults for batch bounds when the host sends none.
const (
	defaultMaxBatchRecords = 1024
	defaultMaxBatchBytes   = 1 << 20
	// maxCoalesce bounds how many queued batches a sink or buffer receives in one Write or Append.
	maxCoalesce = 16
)

// opened holds what every stage server keeps after Open, and the calls that Close waits for. It keeps the
// order the plugin interfaces promise: Open first and once; Close last and at most once, after every other
// call has returned; the stage's context (OpenRequest.Context) ends after Close returns, or when the stage is
// abandoned without Close.
type opened struct {
	logger          *slog.Logger // the base of OpenRequest.Logger
	metrics         *Metrics     // OpenRequest.Metrics, shared with the plugin server's Metrics call
	closeFn         func(context.Context) error
	ok              atomic.Bool // Open succeeded
	maxBatchRecords int
	maxBatchBytes   int
	deadLetter      bool

	mu      sync.Mutex
	called  bool // Open was called
	closed  bool // the stage is ending: no call may begin
	stop    context.Context
	stopFn  context.CancelCauseFunc // cancels the running calls when the stage begins to end
	life    context.Context         // OpenRequest.Context
	endLife context.CancelCauseFunc
	calls   sync.WaitGroup // running calls, and goroutines calling into the plugin for them
}

// Why a stage's context (OpenRequest.Context) ended, as context.Cause reports it.
var (
	// ErrStageClosed: the host closed the stage, or stopped the plugin, and Close has returned.
	ErrStageClosed = errors.New("sdk: the stage is closed")
	// ErrStageAbandoned: the stage ended without Close: the host aborted it, or it did not stop its
	// running calls in time to be closed.
	ErrStageAbandoned = errors.New("sdk: the stage was abandoned without Close")
)

// init sets o up for a stage whose Close is closeFn.
func (o *opened) init(logger *slog.Logger, metrics *Metrics, closeFn func(context.Context) error) {
	o.logger, o.metrics, o.closeFn = logger, metrics, closeFn
	o.stop, o.stopFn = context.WithCancelCause(context.Background())
	o.life, o.endLife = context.WithCancelCause(context.Background())
}

func (o *opened) open(ctx context.Context, req *sluicev1.OpenRequest, open func(context.Context, OpenRequest) error) (*sluicev1.Empty, error) {
	ctx, done, err := o.enter(ctx, true)
	if err != nil {
		return nil, err
	}
	defer done()
	settings, err := ParseSettings(req.GetSettingsJson())
	if err != nil {
		return nil, protocolError("%v", err)
	}
	o.maxBatchRecords = int(req.GetMaxBatchRecords())
	if o.maxBatchRecords <= 0 {
		o.maxBatchRecords = defaultMaxBatchRecords
	}
	o.deadLetter = req.GetDeadLetter()
	o.maxBatchBytes = int(req.GetMaxBatchBytes())
	if o.maxBatchBytes <= 0 {
		o.maxBatchBytes = defaultMaxBatchBytes
	}
	err = open(ctx, OpenRequest{
		Pipeline:        req.GetPipeline(),
		Settings:        settings,
		After:           record.Position(req.GetAfter()),
		MaxBatchRecords: o.maxBatchRecords,
		MaxBatchBytes:   o.maxBatchBytes,
		DeadLetter:      req.GetDeadLetter(),
		Fence:           req.GetFence(),
		Lane:            int(req.GetLane()),
		Lanes:           int(req.GetLanes()),
		Logger:          o.logger, // the host tags forwarded lines with plugin, stage and pipeline
		Metrics:         o.metrics,
		ctx:             o.life,
	})
	if err != nil {
		return nil, toStatus(err)
	}
	o.ok.Store(true)
	return &sluicev1.Empty{}, nil
}

// enter registers a call on the stage (Open when open is true; otherwise the stage must be open). It
// returns the call's context, also cancelled when the stage begins to end, and a func the call must run
// when it returns. It fails once the stage has begun to end.
func (o *opened) enter(ctx context.Context, open bool) (context.Context, func(), error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.closed:
		return nil, nil, protocolError("the stage is closed")
	case open && o.called:
		return nil, nil, protocolError("the stage is already open")
	case !open && !o.ok.Load():
		return nil, nil, protocolError("the stage is not open")
	}
	o.called = o.called || open
	o.calls.Add(1)
	ctx, cancel := context.WithCancelCause(ctx)
	unwatch := context.AfterFunc(o.stop, func() { cancel(context.Cause(o.stop)) })
	return ctx, func() {
		unwatch()
		cancel(nil)
		o.calls.Done()
	}, nil
}

// end marks the stage as ending and cancels its running calls with cause. It reports false when the stage
// had already begun to end.
func (o *opened) end(cause error) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	o.closed = true
	o.stopFn(cause)
	return true
}

// close ends the stage: it cancels the running calls, waits until they (and the plugin calls they made:
// Read, Ack, Write, Append, Checkpoint, Open) have returned, calls the plugin's Close once if Open was
// called, and then ends the stage's context. A host cancels its streams and calls Close at once, and the
// plugin interfaces promise Close never overlaps other calls. If ctx ends before the calls have returned,
// the plugin's Close is not called (the host kills the process next) and the stage is abandoned.
func (o *opened) close(ctx context.Context) error {
	if !o.end(ErrStageClosed) {
		return nil
	}
	done := make(chan struct{})
	go func() {
		o.calls.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		o.endLife(ErrStageAbandoned)
		return status.Error(codes.DeadlineExceeded, "closing: the stage's calls did not stop in time")
	}
	defer o.endLife(ErrStageClosed)
	o.mu.Lock()
	called := o.called
	o.mu.Unlock()
	if !called {
		return nil
	}
	return o.closeFn(ctx)
}

// abandon ends the stage without Close: it cancels the running calls and the stage's context at once.
func (o *opened) abandon() {
	o.end(ErrStageAbandoned)
	o.endLife(ErrStageAbandoned)
}

// instance is the stages one plugin instance serves (one, as the host uses plugins).
type instance struct {
	mu     sync.Mutex
	stages []*opened
}

func (i *instance) add(o *opened) {
	i.mu.Lock()
	i.stages = append(i.stages, o)
	i.mu.Unlock()
}

// Shutdown ends the stages the host has not closed (see transport.Stages).
func (i *instance) Shutdown(ctx context.Context, abort bool) {
	i.mu.Lock()
	stages := slices.Clone(i.stages)
	i.mu.Unlock()
	var wg sync.WaitGroup
	for _, o := range stages {
		if abort {
			o.abandon()
			continue
		}
		wg.Go(func() {
			if err := o.close(ctx); err != nil {
				// The message only: the gRPC status wrapping is for the host, not for people.
				o.logger.Warn("closing the stage as the plugin stops", "err", status.Convert(err).Message())
			}
		})
	}
	wg.Wait()
}

// toStatus turns a plugin error into a gRPC status the host maps back to the error's class (see
// sluice.proto, "Errors"): ErrInvalidSettings → InvalidArgument, ErrPermanent → FailedPrecondition,
// cancellation → Canceled or DeadlineExceeded, anything else → Unknown (transient). The message is the
// error's own. ErrHistoryLost adds an ErrorInfo detail with reason ReasonHistoryLost.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, ErrInvalidSettings):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrPermanent):
		st := status.New(codes.FailedPrecondition, err.Error())
		if errors.Is(err, ErrHistoryLost) {
			if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: transport.ReasonHistoryLost, Domain: transport.ErrorDomain}); derr == nil {
				st = d
			}
		}
		return st.Err()
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

// protocolError reports a breach of the protocol by the host or the plugin: a bug, which no retry fixes.
func protocolError(format string, args ...any) error {
	return status.Error(codes.FailedPrecondition, "protocol error: "+fmt.Sprintf(format, args...))
}

// formatPosition answers FormatPosition with the stage's PositionFormatter, or Unimplemented when the stage
// has none. A panic in the plugin's FormatPosition is an error of the call, not the end of the process.
func formatPosition(stage any, req *sluicev1.FormatPositionRequest) (resp *sluicev1.FormatPositionResponse, err error) {
	f, ok := stage.(PositionFormatter)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "the stage does not format its positions")
	}
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, status.Errorf(codes.Internal, "formatting a position: panic: %v", r)
		}
	}()
	text, err := f.FormatPosition(req.GetPosition())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &sluicev1.FormatPositionResponse{Text: text}, nil
}

// comparePositions answers ComparePositions with the stage's PositionComparer, or Unimplemented when the
// stage has none. Two empty positions are equal without asking the plugin (the host's probe). A panic in
// the plugin's ComparePositions is an error of the call, not the end of the process.
func comparePositions(stage any, req *sluicev1.ComparePositionsRequest) (resp *sluicev1.ComparePositionsResponse, err error) {
	c, ok := stage.(PositionComparer)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "the stage does not compare its positions")
	}
	if len(req.GetA()) == 0 && len(req.GetB()) == 0 {
		return &sluicev1.ComparePositionsResponse{}, nil
	}
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, status.Errorf(codes.Internal, "comparing positions: panic: %v", r)
		}
	}()
	order, err := c.ComparePositions(req.GetA(), req.GetB())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &sluicev1.ComparePositionsResponse{Order: int32(max(-1, min(order, 1)))}, nil
}

// ---- source ----

type sourceServer struct {
	sluicev1.UnimplementedSourceServer
	opened
	impl Source
}

func (s *sourceServer) Open(ctx context.Context, req *sluicev1.OpenRequest) (*sluicev1.Empty, error) {
	return s.open(ctx, req, s.impl.Open)
}

func (s *sourceServer) Read(stream grpc.BidiStreamingServer[sluicev1.Ack, sluicev1.Batch]) error {
	ctx, done, err := s.enter(stream.Context(), false)
	if err != nil {
		return err
	}
	defer done()
	return serveRead(ctx, stream, &s.opened, s.impl.Read, s.impl.Ack, func() bool { return false })
}

func (s *sourceServer) FormatPosition(_ context.Context, req *sluicev1.FormatPositionRequest) (*sluicev1.FormatPositionResponse, error) {
	return formatPosition(s.impl, req)
}

func (s *sourceServer) Verify(req *sluicev1.VerifyRequest, stream grpc.ServerStreamingServer[sluicev1.VerifyResponse]) error {
	return serveVerify(s.impl, s.logger, req, stream)
}

func (s *sourceServer) Close(ctx context.Context, _ *sluicev1.Empty) (*sluicev1.Empty, error) {
	return &sluicev1.Empty{}, toStatus(s.close(ctx))
}

// ---- sink ----

type sinkServer struct {
	sluicev1.UnimplementedSinkServer
	opened
	impl Sink
	// turn is held by a Write or Checkpoint call into the plugin: the two never run at the same time.
	turn chan struct{}
}

// write is impl.Write, never at the same time as impl.Checkpoint.
func (s *sinkServer) write(ctx context.Context, b record.Batch) error {
	select {
	case s.turn <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	defer func() { <-s.turn }()
	return s.impl.Write(ctx, b)
}

func (s *sinkServer) Open(ctx context.Context, req *sluicev1.OpenRequest) (*sluicev1.Empty, error) {
	return s.open(ctx, req, s.impl.Open)
}

func (s *sinkServer) Checkpoint(ctx context.Context, _ *sluicev1.Empty) (*sluicev1.CheckpointResponse, error) {
	ctx, done, err := s.enter(ctx, false)
	if err != nil {
		return nil, err
	}
	defer done()
	select {
	case s.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, toStatus(context.Cause(ctx))
	}
	defer func() { <-s.turn }()
	pos, err := s.impl.Checkpoint(ctx)
	return &sluicev1.CheckpointResponse{Position: pos}, toStatus(err)
}

func (s *sinkServer) Write(stream grpc.BidiStreamingServer[sluicev1.Batch, sluicev1.Ack]) error {
	ctx, done, err := s.enter(stream.Context(), false)
	if err != nil {
		return err
	}
	defer done()
	return serveWrite(ctx, stream, s.write, s.deadLetter)
}

func (s *sinkServer) Verify(req *sluicev1.VerifyRequest, stream grpc.ServerStreamingServer[sluicev1.VerifyResponse]) error {
	return serveVerify(s.impl, s.logger, req, stream)
}

func (s *sinkServer) Close(ctx context.Context, _ *sluicev1.Empty) (*sluicev1.Empty, error) {
	return &sluicev1.Empty{}, toStatus(s.close(ctx))
}

// ---- buffer ----

type bufferServer struct {
	sluicev1.UnimplementedBufferServer
	opened
	impl Buffer
	// inputDone is set once the host has closed Append and every append has returned.
	inputDone atomic.Bool
}

func (s *bufferServer) Open(ctx context.Context, req *sluicev1.OpenRequest) (*sluicev1.Empty, error) {
	return s.open(ctx, req, s.impl.Open)
}

func (s *bufferServer) Checkpoint(ctx context.Context, _ *sluicev1.Empty) (*sluicev1.CheckpointResponse, error) {
	ctx, done, err := s.enter(ctx, false)
	if err != nil {
		return nil, err
	}
	defer done()
	pos, err := s.impl.Checkpoint(ctx)
	return &sluicev1.CheckpointResponse{Position: pos}, toStatus(err)
}

func (s *bufferServer) Append(stream grpc.BidiStreamingServer[sluicev1.Batch, sluicev1.Ack]) error {
	ctx, done, err := s.enter(stream.Context(), false)
	if err != nil {
		return err
	}
	defer done()
	s.inputDone.Store(false)
	err = serveWrite(ctx, stream, s.impl.Append, false)
	if err == nil {
		s.inputDone.Store(true)
	}
	return err
}

func (s *bufferServer) Read(stream grpc.BidiStreamingServer[sluicev1.Ack, sluicev1.Batch]) error {
	ctx, done, err := s.enter(stream.Context(), false)
	if err != nil {
		return err
	}
	defer done()
	// An empty read that started after the input was closed means the buffer is drained.
	return serveRead(ctx, stream, &s.opened, s.impl.Read, s.impl.Ack, s.inputDone.Load)
}

func (s *bufferServer) FormatPosition(_ context.Context, req *sluicev1.FormatPositionRequest) (*sluicev1.FormatPositionResponse, error) {
	return formatPosition(s.impl, req)
}

func (s *bufferServer) ComparePositions(_ context.Context, req *sluicev1.ComparePositionsRequest) (*sluicev1.ComparePositionsResponse, error) {
	return comparePositions(s.impl, req)
}

func (s *bufferServer) Close(ctx context.Context, _ *sluicev1.Empty) (*sluicev1.Empty, error) {
	return &sluicev1.Empty{}, toStatus(s.close(ctx))
}

// ---- shared stream loops ----

// serveRead runs a read stream: it sends batches produced by read and hands the host's acks to ack. It
// ends the stream, once every sent batch is acked, when read returns ErrDone or when read returns no
// records after drainedIfEmpty, asked just before the read, reported true.
func serveRead(ctx context.Context, stream grpc.BidiStreamingServer[sluicev1.Ack, sluicev1.Batch], o *opened,
	read func(context.Context) ([]record.Record, error), ack func(context.Context, record.Position) error,
	drainedIfEmpty func() bool) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	acks := newAckQueue()
	o.calls.Add(1) // the ack goroutine calls into the plugin and may outlive this call briefly
	go func() {
		defer o.calls.Done()
		for {
			a, err := stream.Recv()
			if err == io.EOF {
				acks.closeHost()
				return
			}
			if err != nil {
				cancel(err)
				return
			}
			if pos := acks.ack(a.GetSeq()); pos != nil {
				err = ack(ctx, pos)
			}
			if err != nil {
				cancel(err)
				return
			}
		}
	}()

	var seq uint64
	for {
		endIfEmpty := drainedIfEmpty()
		recs, err := read(ctx)
		if errors.Is(err, ErrDone) || err == nil && len(recs) == 0 && endIfEmpty {
			// Wait until the host has acked everything sent, then end the stream.
			if err := acks.waitEmpty(ctx); err != nil {
				return toStatus(context.Cause(ctx))
			}
			return nil
		}
		if err != nil {
			if c := context.Cause(ctx); c != nil && ctx.Err() != nil {
				err = c
			}
			return toStatus(err)
		}
		for len(recs) > 0 {
			n, size := 0, 0
			for n < len(recs) && n < o.maxBatchRecords {
				sz := record.EncodedSize(&recs[n])
				if n > 0 && size+sz > o.maxBatchBytes {
					break
				}
				size += sz
				n++
			}
			chunk := recs[:n]
			recs = recs[n:]
			var latest time.Time // the batch's latest event time, for the host's lag and latency
			for i := range chunk {
				if len(chunk[i].Position) == 0 {
					return protocolError("the plugin returned a record without a position (op %s)", chunk[i].Op)
				}
				if t := chunk[i].Time; t.After(latest) {
					latest = t
				}
			}
			seq++
			last := chunk[len(chunk)-1].Position
			acks.push(seq, last.Clone())
			b := &sluicev1.Batch{Seq: seq, Count: uint32(n), Position: last, Data: record.Encode(make([]byte, 0, size), chunk),
				EventTimeUnixNano: unixNano(latest)}
			if err := stream.Send(b); err != nil {
				return err
			}
		}
	}
}

// unixNano returns t in nanoseconds since the Unix epoch, or 0 for the zero time and times an int64 of
// nanoseconds cannot hold (before 1678, after 2262).
func unixNano(t time.Time) int64 {
	if t.IsZero() || t.Year() < 1678 || t.Year() > 2261 {
		return 0
	}
	return t.UnixNano()
}

// serveWrite runs a write stream: it hands the host's batches to write, coalescing batches that queue up
// while a write runs, and acks each once write returns.
func serveWrite(ctx context.Context, stream grpc.BidiStreamingServer[sluicev1.Batch, sluicev1.Ack], write func(context.Context, record.Batch) error, deadLetter bool) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	in := make(chan *sluicev1.Batch, maxCoalesce)
	go func(in chan<- *sluicev1.Batch) {
		defer close(in)
		for {
			b, err := stream.Recv()
			if err == io.EOF {
				return
			}
			if err != nil {
				cancel(err)
				return
			}
			select {
			case in <- b:
			case <-ctx.Done():
				return
			}
		}
	}(in)

	var recs []record.Record
	var starts []batchStart
	for {
		var b *sluicev1.Batch
		select {
		case b = <-in:
		case <-ctx.Done():
			return toStatus(context.Cause(ctx))
		}
		if b == nil {
			if err := context.Cause(ctx); err != nil {
				return toStatus(err)
			}
			return nil // the host closed the stream after its last batch
		}
		var err error
		recs, err = record.Decode(recs[:0], b.GetData(), int(b.GetCount()))
		if err != nil {
			return protocolError("batch %d: %v", b.GetSeq(), err)
		}
		last := b
		// starts[i] is where batch i of this write begins in recs, to map rejected records back.
		starts = append(starts[:0], batchStart{seq: b.GetSeq(), at: 0})
	coalesce:
		for i := 1; i < maxCoalesce; i++ {
			select {
			case next := <-in:
				if next == nil {
					// Put the end of input back for the next round.
					in = closedBatchChan
					break coalesce
				}
				starts = append(starts, batchStart{seq: next.GetSeq(), at: len(recs)})
				if recs, err = record.Decode(recs, next.GetData(), int(next.GetCount())); err != nil {
					return protocolError("batch %d: %v", next.GetSeq(), err)
				}
				last = next
			default:
				break coalesce
			}
		}
		ack := &sluicev1.Ack{Seq: last.GetSeq()}
		if err := write(ctx, record.Batch{Records: recs, Position: last.GetPosition()}); err != nil {
			var rej *RejectError
			if !errors.As(err, &rej) || !deadLetter {
				if c := context.Cause(ctx); c != nil && ctx.Err() != nil {
					err = c
				}
				if rej != nil {
					err = Permanentf("%v, and the pipeline has no dead-letter sink (dlq:) to send it to", err)
				}
				return toStatus(err)
			}
			if ack.Rejects, err = rejects(rej, starts, len(recs)); err != nil {
				return protocolError("%v", err)
			}
		}
		if err := stream.Send(ack); err != nil {
			return err
		}
		clear(recs) // drop references to the batch's data
	}
}

// batchStart is where one host batch begins among the records of a coalesced write.
type batchStart struct {
	seq uint64
	at  int
}

// rejects maps a RejectError's indices (into the coalesced write) to the host's batches.
func rejects(rej *RejectError, starts []batchStart, n int) ([]*sluicev1.Reject, error) {
	out := make([]*sluicev1.Reject, 0, len(rej.Rejections))
	for _, r := range rej.Rejections {
		if r.Index < 0 || r.Index >= n {
			return nil, fmt.Errorf("sink rejected record %d of a batch of %d", r.Index, n)
		}
		i := len(starts) - 1
		for starts[i].at > r.Index {
			i--
		}
		out = append(out, &sluicev1.Reject{Seq: starts[i].seq, Index: uint32(r.Index - starts[i].at), Reason: r.Reason})
	}
	return out, nil
}

// closedBatchChan is a closed channel: receiving from it yields nil at once, signalling end of input.
var closedBatchChan = func() chan *sluicev1.Batch {
	c := make(chan *sluicev1.Batch)
	close(c)
	return c
}()

// ackQueue remembers the last position of each batch sent until the host acks it.
type ackQueue struct {
	mu      sync.Mutex
	pending []pendingBatch
	empty   chan struct{} // closed and replaced when pending becomes empty
	host    bool          // the host closed its side
}

type pendingBatch struct {
	seq uint64
	pos record.Position
}

func newAckQueue() *ackQueue { return &ackQueue{empty: make(chan struct{})} }

func (q *ackQueue) push(seq uint64, pos record.Position) {
	q.mu.Lock()
	q.pending = append(q.pending, pendingBatch{seq, pos})
	q.mu.Unlock()
}

// ack removes every batch up to seq and returns the position of the last one removed, or nil when none
// was outstanding (a repeated ack).
func (q *ackQueue) ack(seq uint64) record.Position {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for n < len(q.pending) && q.pending[n].seq <= seq {
		n++
	}
	if n == 0 {
		return nil
	}
	pos := q.pending[n-1].pos
	q.pending = q.pending[n:]
	if len(q.pending) == 0 {
		close(q.empty)
		q.empty = make(chan struct{})
	}
	return pos
}

func (q *ackQueue) closeHost() {
	q.mu.Lock()
	q.host = true
	close(q.empty) // wake waitEmpty to notice
	q.empty = make(chan struct{})
	q.mu.Unlock()
}

// waitEmpty blocks until every pending batch is acked. It fails if the host closed its side first.
func (q *ackQueue) waitEmpty(ctx context.Context) error {
	for {
		q.mu.Lock()
		if len(q.pending) == 0 {
			q.mu.Unlock()
			return nil
		}
		if q.host {
			q.mu.Unlock()
			return errors.New("host stopped acknowledging")
		}
		ch := q.empty
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
