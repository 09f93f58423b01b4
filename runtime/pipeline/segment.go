package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
)

// A segment moves batches from one stage's read stream to the next stage's write stream and carries the
// acks back, in order. This is where a record is handed downstream and where it is acked: a batch read
// from upstream is acked to upstream only when the downstream stage has made it durable.
//
// A pipeline without a buffer has one segment (source → sink); with a buffer it has two (source → buffer,
// buffer → sink), each with its own positions.
type segment struct {
	name string
	in   upstream
	out  *protocol.WriteStream
	// up and down are the stages the segment reads from and writes to, to attribute failures.
	up, down *stage
	// steps rewrites a batch between in and out (transforms, dead letters); nil passes batches through
	// untouched (never decoded).
	steps *steps
	// rejects sends the records a sink rejects to the dead-letter sink; nil when the pipeline has none
	// (the SDK then fails a sink that rejects).
	rejects  *deadLetters
	pipeline string
	// acked is called, in order, with the upstream position through which downstream holds everything and
	// the number of records sent through it.
	acked func(pos record.Position, through int64)
	// delivered counts records the downstream acknowledged (nil: not counted).
	delivered func(records int)
	// read counts records received from upstream, before any step (nil: not counted).
	read func(records int)
	// progress is called on every acknowledgement from downstream.
	progress func()
	// upMeter and downMeter measure the two stages for metrics (nil: not measured).
	upMeter, downMeter StageMeter
	// latency observes, for each batch downstream acknowledged that has an event time, the time since it
	// (nil: not observed).
	latency func(time.Duration)
	// eventTime is told the latest event time (Unix nanoseconds) among the batches downstream
	// acknowledged, when one of them has one (nil: not kept).
	eventTime func(int64)
	// persist stores acked positions in the host's state store (nil when downstream stores them itself).
	persist *persister
	// inflight keeps the records sent beyond the stored position where a killed host leaves it for the next
	// one (nil: not kept).
	inflight  *inflight
	sent      int64 // records sent downstream by this segment
	window    *semaphore.Weighted
	maxWindow int64
	drain     <-chan struct{}

	mu      sync.Mutex
	pending []inFlight // sent downstream, not yet acked, in order
	closed  bool       // out was closed on purpose (end of input or drain)
	// waiting is since when downstream has held pending batches without acknowledging one: when the
	// first was sent, or the last ack came while more remained.
	waiting time.Time
}

// upstream is where a segment reads batches and acknowledges them: a stage's read stream
// (*protocol.ReadStream), or a lane of a pipeline with ordered: false (laneReader).
type upstream interface {
	// Recv returns the next batch, io.EOF at the end of the input.
	Recv() (*protocol.Batch, error)
	// Ack acknowledges every batch through the one numbered seq.
	Ack(seq uint64) error
}

type inFlight struct {
	outSeq, inSeq uint64
	pos           record.Position
	size          int64 // bytes held against the in-flight window
	bytes         int64 // the batch's encoded size
	event         int64 // the batch's latest event time, Unix nanoseconds; 0: none
	records       int
	through       int64 // records the segment sent up to and including this batch
	// batch is kept until acked when the sink may reject its records.
	batch *protocol.Batch
}

func newSegment(name string, in upstream, out *protocol.WriteStream, maxInFlight int, drain <-chan struct{}) *segment {
	return &segment{name: name, in: in, out: out, window: semaphore.NewWeighted(int64(maxInFlight)),
		maxWindow: int64(maxInFlight), drain: drain}
}

// errDrained is returned by run when the segment stopped early because the pipeline is draining.
var errDrained = errors.New("drained")

// run moves batches until upstream ends its stream (nil), the pipeline drains (errDrained), or a stage
// fails (the error). Cancelling ctx stops it at once. abort must cancel the context the segment's streams
// were opened with: a failure on one side calls it, because the other side may be blocked in a stream
// receive that only the stream's cancellation ends.
func (s *segment) run(ctx context.Context, abort context.CancelCauseFunc) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	fail := func(err error) {
		cancel(err)
		abort(err)
	}
	var drained bool
	var fwdErr, ackErr error
	fwdDone, ackDone := make(chan struct{}), make(chan struct{})
	// A stream that a plugin ended shows as ErrStreamEnded on the side sending to it; the other side
	// receives the plugin's own error. Give that side a moment to report it before cancelling both.
	endedBy := func(err error, other <-chan struct{}) {
		if errors.Is(err, protocol.ErrStreamEnded) {
			select {
			case <-other:
			case <-time.After(exitWait):
			}
		}
		fail(err)
	}
	go func() {
		defer close(fwdDone)
		drained, fwdErr = s.forward(ctx)
		if fwdErr != nil {
			endedBy(fwdErr, ackDone)
		}
	}()
	go func() {
		defer close(ackDone)
		ackErr = s.acks(ctx)
		if ackErr != nil {
			endedBy(ackErr, fwdDone)
		}
	}()
	<-fwdDone
	<-ackDone
	switch {
	case fwdErr != nil && ackErr != nil && errors.Is(fwdErr, protocol.ErrStreamEnded):
		return ackErr
	case fwdErr != nil && !(ackErr != nil && isCancel(fwdErr)):
		return fwdErr
	case ackErr != nil:
		return ackErr
	case drained:
		return errDrained
	}
	return nil
}

// isCancel reports whether err only says that the work was cancelled.
func isCancel(err error) bool {
	return errors.Is(err, context.Canceled) && !errors.As(err, new(*StageError))
}

// receive runs a goroutine that receives batches from in and hands them over one by one, until in fails
// (its error, io.EOF at the end, is sent on the second channel) or ctx ends.
func receive(ctx context.Context, in upstream) (<-chan *protocol.Batch, <-chan error) {
	batches := make(chan *protocol.Batch)
	recvErr := make(chan error, 1)
	go func() {
		for {
			b, err := in.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case batches <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	return batches, recvErr
}

// forward receives batches from upstream and sends them downstream, holding at most maxWindow bytes in
// flight. It reports whether it stopped because of a drain.
func (s *segment) forward(ctx context.Context) (drained bool, err error) {
	batches, recvErr := receive(ctx, s.in)
	closeOut := func() error {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		return s.out.CloseSend()
	}
	for {
		var b *protocol.Batch
		select {
		case <-ctx.Done():
			return false, context.Cause(ctx)
		case <-s.drain:
			return true, closeOut()
		case err := <-recvErr:
			if err == io.EOF {
				return false, s.down.fail("ending the stream", closeOut())
			}
			return false, s.up.fail("reading", err)
		case b = <-batches:
		}
		inSeq, pos := b.Seq, b.Position
		if s.read != nil {
			s.read(b.Len())
		}
		if s.upMeter != nil {
			s.upMeter.Read(b.Len(), b.Size())
		}
		if s.steps != nil {
			if err := s.steps.apply(ctx, b); err != nil {
				return false, err
			}
		}
		n := b.Len()
		var keep *protocol.Batch
		if s.rejects != nil {
			keep = b
		}
		bytes := int64(b.Size())
		size := min(bytes, s.maxWindow)
		var event int64
		if !b.EventTime.IsZero() {
			event = b.EventTime.UnixNano()
		}
		if err := s.window.Acquire(ctx, size); err != nil {
			return false, context.Cause(ctx)
		}
		// Record the batch before sending it: its ack may arrive before Send returns.
		s.mu.Lock()
		if len(s.pending) == 0 {
			s.waiting = time.Now()
		}
		s.sent += int64(n)
		s.pending = append(s.pending, inFlight{outSeq: s.out.NextSeq(), inSeq: inSeq, pos: pos, size: size, bytes: bytes, event: event,
			records: n, through: s.sent, batch: keep})
		s.mu.Unlock()
		if s.inflight != nil {
			s.inflight.sending(n)
		}
		if err := s.out.Send(b); err != nil {
			return false, s.down.fail("writing", err)
		}
	}
}

// acks receives downstream acks and acknowledges upstream in order.
func (s *segment) acks(ctx context.Context) error {
	for {
		ack, err := s.out.RecvAck()
		seq := ack.Seq
		if err != nil {
			s.mu.Lock()
			closed, left := s.closed, len(s.pending)
			s.mu.Unlock()
			if err == io.EOF && closed && left == 0 {
				return nil
			}
			if err == io.EOF {
				err = fmt.Errorf("%w with %d batches unacknowledged", protocol.ErrStreamEnded, left)
			}
			return s.down.fail("writing", err)
		}
		s.mu.Lock()
		n := 0
		var size int64
		records := 0
		for n < len(s.pending) && s.pending[n].outSeq <= seq {
			size += s.pending[n].size
			records += s.pending[n].records
			n++
		}
		if n == 0 {
			s.mu.Unlock()
			continue
		}
		last := s.pending[n-1]
		acked := s.pending[:n]
		s.pending = s.pending[n:]
		s.waiting = time.Now()
		s.mu.Unlock()
		if s.progress != nil {
			s.progress()
		}
		if len(ack.Rejects) > 0 {
			if err := s.reject(ctx, acked, ack.Rejects); err != nil {
				return err
			}
			records -= len(ack.Rejects) // not delivered to the sink
		}
		if err := s.in.Ack(last.inSeq); err != nil {
			return s.up.fail("acknowledging", err)
		}
		if s.acked != nil {
			s.acked(last.pos, last.through)
		}
		if s.delivered != nil {
			s.delivered(records)
		}
		s.measure(acked, records)
		s.window.Release(size)
	}
}

// measure reports batches downstream acknowledged (records of them) to the meters and keeps their latest
// event time.
func (s *segment) measure(acked []inFlight, records int) {
	if s.downMeter == nil && s.latency == nil && s.eventTime == nil {
		return
	}
	var bytes, latest int64
	for i := range acked {
		bytes += acked[i].bytes
		latest = max(latest, acked[i].event)
	}
	if s.downMeter != nil {
		s.downMeter.Written(records, int(bytes))
	}
	if latest == 0 {
		return
	}
	if s.eventTime != nil {
		s.eventTime(latest)
	}
	if s.latency != nil {
		now := time.Now()
		for i := range acked {
			if acked[i].event != 0 {
				s.latency(max(0, now.Sub(time.Unix(0, acked[i].event))))
			}
		}
	}
}

// reject sends the records the sink rejected to the dead-letter sink, before their batches are acked
// upstream.
func (s *segment) reject(ctx context.Context, acked []inFlight, rejects []protocol.Reject) error {
	if s.rejects == nil {
		return permanentError{fmt.Errorf("%s: the sink rejected %d records but the pipeline has no dead-letter sink", s.name, len(rejects))}
	}
	dead := make([]record.Record, 0, len(rejects))
	for _, r := range rejects {
		i := slices.IndexFunc(acked, func(f inFlight) bool { return f.outSeq == r.Seq })
		if i < 0 || acked[i].batch == nil {
			return fmt.Errorf("%s: the sink rejected a record of batch %d, which is not among the batches it acknowledged", s.name, r.Seq)
		}
		b := acked[i].batch
		recs, err := record.Decode(nil, b.Encoded(), b.Len())
		if err != nil || r.Index < 0 || r.Index >= len(recs) {
			return fmt.Errorf("%s: the sink rejected record %d of batch %d, which has %d records", s.name, r.Index, r.Seq, len(recs))
		}
		dead = append(dead, deadLetter(recs[r.Index], s.pipeline, "sink", r.Reason))
	}
	return s.rejects.send(ctx, dead)
}

// stalled reports, when downstream has held unacknowledged batches for at least timeout without
// acknowledging any, for how long and how much it holds.
func (s *segment) stalled(now time.Time, timeout time.Duration) (held time.Duration, records int, bytes int64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 || now.Sub(s.waiting) < timeout {
		return 0, 0, 0, false
	}
	for _, p := range s.pending {
		records += p.records
		bytes += p.size
	}
	return now.Sub(s.waiting), records, bytes, true
}

// unacked returns how many records were sent downstream and not acknowledged.
func (s *segment) unacked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, p := range s.pending {
		n += p.records
	}
	return n
}
