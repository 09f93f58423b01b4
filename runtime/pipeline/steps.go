package pipeline

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

	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms"
)

// OnError values (see Config.OnError).
const (
	OnErrorStop = "stop"
	OnErrorDLQ  = "dlq"
)

// steps is what a segment does to each batch between reading it and sending it on: run the pipeline's
// transform steps, and take out the records that go to the dead-letter sink instead.
type steps struct {
	pipeline string
	// runner runs the transform steps; nil when the segment has none.
	runner *transforms.Runner
	// list names the steps in messages ("transforms" or "sink_transforms").
	list    string
	onError string
	// scan: look for dead-letter records the source marked (record.MetaError).
	scan bool
	dead *deadLetters
	// filtered counts the records the steps dropped (nil: not counted).
	filtered func(records int)
}

// apply rewrites b: records that pass the steps stay, changed; records a step failed on and records the
// source marked as dead letters go to the dead-letter sink before b is sent on, or fail the pipeline. The
// batch's position is kept, so filtered records still advance it.
func (s *steps) apply(ctx context.Context, b *protocol.Batch) error {
	recs, err := b.Records()
	if err != nil {
		return fmt.Errorf("decoding a batch: %w", err)
	}
	var dead []record.Record
	changed := false
	if s.scan {
		// Most batches hold no dead letter: copy the records only when one is found.
		var kept []record.Record
		for i := range recs {
			reason, ok := recs[i].Meta.Get(record.MetaError)
			if !ok {
				if changed {
					kept = append(kept, recs[i])
				}
				continue
			}
			if s.dead == nil {
				return permanentError{fmt.Errorf("the source sent a dead-letter record (position %x: %s) but the pipeline has no dead-letter sink", []byte(recs[i].Position), reason)}
			}
			if !changed {
				kept, changed = append(make([]record.Record, 0, len(recs)), recs[:i]...), true
			}
			dead = append(dead, deadLetter(recs[i], s.pipeline, "source", reason))
		}
		if changed {
			recs = kept
		}
	}
	if s.runner != nil {
		out, failed := s.runner.Run(recs)
		if n := len(recs) - len(out) - len(failed); n > 0 && s.filtered != nil {
			s.filtered(n)
		}
		for i := range failed {
			f := &failed[i]
			if s.onError != OnErrorDLQ || s.dead == nil {
				return permanentError{fmt.Errorf("%s: record at position %x: %s (on_error: stop)", s.list, []byte(f.Record.Position), stepError(f, s.list))}
			}
			dead = append(dead, deadLetter(f.Record, s.pipeline, stepStage(f, s.list), f.Err.Error()))
		}
		recs, changed = out, true
	}
	if changed {
		b.SetRecords(recs)
	}
	if len(dead) > 0 {
		return s.dead.send(ctx, dead)
	}
	return nil
}

// stepError is a failure's message with the step list's name.
func stepError(f *transforms.Failure, list string) string {
	msg := f.Error()
	if f.Step >= 0 {
		msg = list + msg[len("transforms"):]
	}
	return msg
}

func stepStage(f *transforms.Failure, list string) string {
	if f.Step < 0 {
		return list
	}
	return fmt.Sprintf("%s[%d].%s", list, f.Step, f.Kind)
}

// deadLetter returns rec with the dead-letter metadata set; rec itself is not modified.
func deadLetter(rec record.Record, pipeline, stage, reason string) record.Record {
	rec.Meta = slices.Clone(rec.Meta).
		Set(record.MetaError, reason).
		Set(record.MetaErrorStage, stage).
		Set(record.MetaPipeline, pipeline)
	return rec
}

// deadLetters writes records to the pipeline's dead-letter sink, one batch at a time, waiting for each to
// be acknowledged: a record is acked upstream only after its dead letter is durable. Safe for concurrent
// use.
type deadLetters struct {
	mu  sync.Mutex
	st  *stage
	out *protocol.WriteStream
	log *slog.Logger
	// sent counts dead letters written.
	sent func(n int)
	// meter counts dead letters by origin (nil: not counted).
	meter Meter
	// waiting is since when a batch of dead letters has been waiting for its acknowledgement; zero when
	// none is.
	waiting atomic.Int64
}

// stalled reports whether a dead-letter batch has waited for its acknowledgement for at least timeout, and
// for how long.
func (d *deadLetters) stalled(now time.Time, timeout time.Duration) (time.Duration, bool) {
	w := d.waiting.Load()
	if w == 0 || now.Sub(time.Unix(0, w)) < timeout {
		return 0, false
	}
	return now.Sub(time.Unix(0, w)), true
}

func (d *deadLetters) send(ctx context.Context, recs []record.Record) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	for _, r := range recs {
		stage, _ := r.Meta.Get(record.MetaErrorStage)
		reason, _ := r.Meta.Get(record.MetaError)
		d.log.Warn("sending a record to the dead-letter sink", "stage", stage, "position", fmt.Sprintf("%x", []byte(r.Position)), "error", reason)
	}
	seq := d.out.NextSeq()
	d.waiting.Store(time.Now().UnixNano())
	defer d.waiting.Store(0)
	if err := d.out.Send(protocol.NewBatch(recs, nil)); err != nil {
		if errors.Is(err, protocol.ErrStreamEnded) {
			// The sink ended the stream: its reason is on the receiving side.
			if _, rerr := d.out.RecvAck(); rerr != nil && rerr != io.EOF {
				err = rerr
			}
		}
		return d.st.fail("writing", err)
	}
	for {
		a, err := d.out.RecvAck()
		if err != nil {
			return d.st.fail("waiting for acknowledgements", err)
		}
		if len(a.Rejects) > 0 {
			return permanentError{fmt.Errorf("the dead-letter sink rejected a record: %s", a.Rejects[0].Reason)}
		}
		if a.Seq >= seq {
			break
		}
	}
	if d.sent != nil {
		d.sent(len(recs))
	}
	if d.meter != nil {
		for _, r := range recs {
			stage, _ := r.Meta.Get(record.MetaErrorStage)
			d.meter.DeadLettered(originOf(stage), 1)
		}
	}
	return nil
}

// close ends the stream after the last dead letter.
func (d *deadLetters) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.out.CloseSend(); err != nil {
		return err
	}
	for {
		if _, err := d.out.RecvAck(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}
