// Package pipeline runs one pipeline: it starts the stages' plugins, applies the position rule to decide
// where each stage resumes, moves batches through segments, and restarts the pipeline from stored
// positions when a stage fails.
//
// The position rule (ARCHITECTURE.md §2): each stage stores the upstream position atomically with the data
// it made durable; on start the host asks the downstream stage for the last upstream position it holds and
// opens the upstream strictly after it. A sink without that ability gets the host's state store instead,
// which makes the pipeline at-least-once.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms"
)

// Config is what the pipeline needs to know; the CLI builds it from a connector file.
type Config struct {
	ID     string
	Source Stage
	Buffer *Stage // nil: none
	Sink   Stage
	// BatchMaxRecords and BatchMaxBytes bound the batches sources and buffers send.
	BatchMaxRecords int
	BatchMaxBytes   int
	// MaxInFlightBytes bounds the bytes a segment has sent downstream and not had acknowledged.
	MaxInFlightBytes int
	// Steps, when set, run between the source and the next stage; SinkSteps between the buffer and the
	// sink (only with a buffer).
	Steps, SinkSteps *transforms.Program
	// OnError is what a record a step fails on does: OnErrorStop (the default) fails the pipeline for
	// good; OnErrorDLQ sends the record to DeadLetter.
	OnError string
	// DeadLetter is the dead-letter sink, nil when the pipeline has none. Dead letters are records a step
	// failed on (with OnErrorDLQ), records the source marked (record.MetaError) and records the sink
	// rejected (sdk.RejectError). Each is written, and acknowledged, before the batch it came in is
	// acknowledged upstream, so none is lost; after a crash some may be written twice.
	DeadLetter *Stage
}

// Stage configures one stage.
type Stage struct {
	Plugin    string
	Settings  map[string]any
	InProcess bool
	// Atomic reports whether the stage stores upstream positions atomically with its data (from the spec).
	Atomic bool
}

// Starter starts plugin instances; *plugin.Catalog is one.
type Starter interface {
	Start(ctx context.Context, name string, kind sdk.Kind, inProcess bool, logger *slog.Logger) (*protocol.Conn, error)
}

// Store keeps positions for stages that cannot; *state.Store is one.
type Store interface {
	Get(pipeline, stage string) (record.Position, error)
	Put(pipeline, stage string, pos record.Position) error
}

// Guarantee is the delivery guarantee a pipeline gives across crashes.
type Guarantee string

// The two guarantees.
const (
	ExactlyOnce  Guarantee = "exactly-once"
	AtLeastOnce  Guarantee = "at-least-once"
	stateSource            = "source"
	stateBuffer            = "buffer"
	longRunReset           = time.Minute
)

// GuaranteeOf returns what cfg guarantees: exactly-once when the sink (and the buffer, if any) store
// positions atomically with their data, at-least-once otherwise.
func GuaranteeOf(cfg *Config) Guarantee {
	if cfg.Sink.Atomic && (cfg.Buffer == nil || cfg.Buffer.Atomic) {
		return ExactlyOnce
	}
	return AtLeastOnce
}

// Stats are a pipeline's counters. They are safe to read while the pipeline runs.
type Stats struct {
	// Delivered counts records the sink acknowledged.
	Delivered atomic.Int64
	// Restarts counts restarts after a stage failed.
	Restarts atomic.Int64
	// Redelivered counts records that were sent to a sink without atomic positions, not acknowledged
	// before a failure, and so delivered again after the restart (possible duplicates).
	Redelivered atomic.Int64
	// DeadLetters counts records written to the dead-letter sink.
	DeadLetters atomic.Int64
}

// Pipeline runs one pipeline. Create it with New; call Run once.
type Pipeline struct {
	cfg     Config
	starter Starter
	store   Store
	log     *slog.Logger
	Stats   Stats

	drainOnce sync.Once
	drain     chan struct{}
	// Backoff bounds restarts: the first after InitialBackoff, doubling up to MaxBackoff.
	InitialBackoff, MaxBackoff time.Duration
}

// New returns a pipeline for cfg that starts plugins with starter and keeps host-side positions in store.
func New(cfg Config, starter Starter, store Store, logger *slog.Logger) *Pipeline {
	if cfg.BatchMaxRecords <= 0 {
		cfg.BatchMaxRecords = 1024
	}
	if cfg.BatchMaxBytes <= 0 {
		cfg.BatchMaxBytes = 4 << 20
	}
	if cfg.MaxInFlightBytes <= 0 {
		cfg.MaxInFlightBytes = 64 << 20
	}
	return &Pipeline{cfg: cfg, starter: starter, store: store, log: logger.With("pipeline", cfg.ID),
		drain: make(chan struct{}), InitialBackoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second}
}

// Drain asks the pipeline to stop gracefully: stop reading, wait for what is in flight to be acknowledged,
// store positions and stop the plugins. Run then returns nil. Safe to call more than once, from any
// goroutine.
func (p *Pipeline) Drain() { p.drainOnce.Do(func() { close(p.drain) }) }

// Run runs the pipeline until its source is done and everything is delivered (nil), it is drained (nil),
// ctx is cancelled (ctx's error; a hard stop: nothing waits), or it fails permanently. A stage failure is
// not permanent: the pipeline restarts from stored positions after an exponential backoff. A stage that
// rejects its settings (gRPC InvalidArgument or FailedPrecondition at open) is permanent.
func (p *Pipeline) Run(ctx context.Context) error {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(p.InitialBackoff), backoff.WithMaxInterval(p.MaxBackoff),
		backoff.WithMaxElapsedTime(0))
	for {
		started := time.Now()
		err := p.attempt(ctx)
		switch {
		case err == nil || errors.Is(err, errDrained):
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, protocol.ErrMessageTooLarge):
			// The same batch would be too large again after a restart.
			return fmt.Errorf("%w; raise --max-message-bytes (or lower batch_max_bytes)", err)
		case isPermanent(err):
			return err
		}
		if time.Since(started) > longRunReset {
			b.Reset()
		}
		wait := b.NextBackOff()
		p.Stats.Restarts.Add(1)
		p.log.Error("pipeline failed; restarting from stored positions", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-time.After(wait):
		case <-p.drain:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// permanentError marks failures a restart cannot fix.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func isPermanent(err error) bool {
	var pe permanentError
	return errors.As(err, &pe) || sdk.IsPermanent(err)
}

// opener is the part of every stage client that Open needs.
type opener interface {
	Open(ctx context.Context, req protocol.OpenRequest) error
}

// stages holds one attempt's running plugins.
type stages struct {
	conns  []*protocol.Conn
	closes []func(context.Context) error
}

func (s *stages) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := len(s.closes) - 1; i >= 0; i-- {
		_ = s.closes[i](ctx) // best effort: the process is killed next anyway
	}
	for _, c := range s.conns {
		c.Kill()
	}
}

func (p *Pipeline) start(ctx context.Context, st *stages, kind sdk.Kind, cfg Stage) (*protocol.Conn, error) {
	conn, err := p.starter.Start(ctx, cfg.Plugin, kind, cfg.InProcess, p.log.With("plugin", cfg.Plugin, "stage", string(kind)))
	if err != nil {
		return nil, fmt.Errorf("starting %s %q: %w", kind, cfg.Plugin, err)
	}
	st.conns = append(st.conns, conn)
	return conn, nil
}

// open opens a stage; deadLetter tells it that the pipeline has a dead-letter sink it may use.
func (p *Pipeline) open(ctx context.Context, kind sdk.Kind, cfg Stage, o opener, after record.Position, deadLetter bool) error {
	err := o.Open(ctx, protocol.OpenRequest{
		Pipeline: p.cfg.ID, Settings: cfg.Settings, After: after,
		MaxBatchRecords: p.cfg.BatchMaxRecords, MaxBatchBytes: p.cfg.BatchMaxBytes,
		DeadLetter: deadLetter,
	})
	if err == nil {
		return nil
	}
	return fmt.Errorf("opening %s %q: %w", kind, cfg.Plugin, err)
}

// attempt starts the stages, resumes each from its stored position, and runs the segments once.
func (p *Pipeline) attempt(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	st := &stages{}
	defer st.stop()

	// The dead-letter sink first: every other stage may need it.
	var dead *deadLetters
	hasDLQ := p.cfg.DeadLetter != nil
	if hasDLQ {
		conn, err := p.start(ctx, st, sdk.KindSink, *p.cfg.DeadLetter)
		if err != nil {
			return fmt.Errorf("dead-letter sink: %w", err)
		}
		dlq := conn.Sink()
		if err := p.open(ctx, sdk.KindSink, *p.cfg.DeadLetter, dlq, nil, false); err != nil {
			return fmt.Errorf("dead-letter sink: %w", err)
		}
		st.closes = append(st.closes, dlq.Close)
		out, err := dlq.Write(ctx)
		if err != nil {
			return stageErr("dead-letter sink", "writing", err)
		}
		dead = &deadLetters{out: out, log: p.log, sent: func(n int) { p.Stats.DeadLetters.Add(int64(n)) }}
	}

	// Downstream first: the sink says where everything upstream resumes.
	sinkConn, err := p.start(ctx, st, sdk.KindSink, p.cfg.Sink)
	if err != nil {
		return err
	}
	sink := sinkConn.Sink()
	if err := p.open(ctx, sdk.KindSink, p.cfg.Sink, sink, nil, hasDLQ); err != nil {
		return err
	}
	st.closes = append(st.closes, sink.Close)
	// upstreamOfSink is the stage whose positions the sink receives.
	upstreamOfSink := stateSource
	if p.cfg.Buffer != nil {
		upstreamOfSink = stateBuffer
	}
	sinkHas, err := p.resumePoint(ctx, p.cfg.Sink, sink, upstreamOfSink)
	if err != nil {
		return err
	}

	var segs []*segment
	srcAfter := sinkHas
	var bufferOut *protocol.WriteStream // where the source writes, when there is a buffer
	if p.cfg.Buffer != nil {
		bufConn, err := p.start(ctx, st, sdk.KindBuffer, *p.cfg.Buffer)
		if err != nil {
			return err
		}
		buf := bufConn.Buffer()
		if err := p.open(ctx, sdk.KindBuffer, *p.cfg.Buffer, buf, sinkHas, false); err != nil {
			return err
		}
		st.closes = append(st.closes, buf.Close)
		if srcAfter, err = p.resumePoint(ctx, *p.cfg.Buffer, buf, stateSource); err != nil {
			return err
		}
		in, err := buf.Read(ctx)
		if err != nil {
			return stageErr("buffer", "reading", err)
		}
		out, err := sink.Write(ctx)
		if err != nil {
			return stageErr("sink", "writing", err)
		}
		last := p.segment("buffer → sink", in, out, p.cfg.Sink, stateBuffer, true)
		if p.cfg.SinkSteps != nil {
			last.steps = &steps{pipeline: p.cfg.ID, runner: p.cfg.SinkSteps.NewRunner(), list: "sink_transforms",
				onError: p.cfg.OnError, dead: dead}
		}
		last.rejects = dead
		segs = append(segs, last)
		if bufferOut, err = buf.Append(ctx); err != nil {
			return stageErr("buffer", "appending", err)
		}
	}

	srcConn, err := p.start(ctx, st, sdk.KindSource, p.cfg.Source)
	if err != nil {
		return err
	}
	src := srcConn.Source()
	if err := p.open(ctx, sdk.KindSource, p.cfg.Source, src, srcAfter, hasDLQ); err != nil {
		return err
	}
	st.closes = append(st.closes, src.Close)
	in, err := src.Read(ctx)
	if err != nil {
		return stageErr("source", "reading", err)
	}
	var first *segment
	if bufferOut != nil {
		first = p.segment("source → buffer", in, bufferOut, *p.cfg.Buffer, stateSource, false)
	} else {
		out, err := sink.Write(ctx)
		if err != nil {
			return stageErr("sink", "writing", err)
		}
		first = p.segment("source → sink", in, out, p.cfg.Sink, stateSource, true)
		first.rejects = dead
	}
	if p.cfg.Steps != nil || hasDLQ {
		first.steps = &steps{pipeline: p.cfg.ID, list: "transforms", onError: p.cfg.OnError, scan: hasDLQ, dead: dead}
		if p.cfg.Steps != nil {
			first.steps.runner = p.cfg.Steps.NewRunner()
		}
	}
	segs = append([]*segment{first}, segs...)
	p.log.Info("pipeline started", "guarantee", GuaranteeOf(&p.cfg), "source_after", fmtPos(srcAfter))

	// A plugin process that exits fails the attempt even if no stream has noticed yet.
	for _, c := range st.conns {
		go func() {
			select {
			case <-c.Done():
				cancel(fmt.Errorf("plugin process %d exited", c.Pid()))
			case <-ctx.Done():
			}
		}()
	}

	errs := make([]error, len(segs))
	var wg sync.WaitGroup
	for i, s := range segs {
		wg.Go(func() { errs[i] = s.run(ctx, cancel) })
	}
	wg.Wait()
	for _, s := range segs {
		p.flushState(s)
	}
	if dead != nil {
		_ = dead.close() // every dead letter was acknowledged when it was sent
	}
	if onlyDrained(errs) {
		return errDrained
	}
	if err := errors.Join(errs...); err != nil {
		if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
			err = c // the first failure, not the cancellations it caused
		}
		last := segs[len(segs)-1]
		if n := last.unacked(); n > 0 && !p.cfg.Sink.Atomic {
			p.Stats.Redelivered.Add(int64(n))
			p.log.Warn("records sent to the sink were not acknowledged; they will be delivered again and may be duplicates",
				"records", n)
		}
		return err
	}
	p.log.Info("pipeline completed", "delivered", p.Stats.Delivered.Load())
	return nil
}

// onlyDrained reports whether some segment drained and none failed.
func onlyDrained(errs []error) bool {
	drained := false
	for _, e := range errs {
		if e != nil && !errors.Is(e, errDrained) {
			return false
		}
		drained = drained || e != nil
	}
	return drained
}

// checkpointer is a stage that may store upstream positions atomically.
type checkpointer interface {
	Checkpoint(ctx context.Context) (record.Position, error)
}

// resumePoint returns the last upstream position stage holds: from the stage itself when it stores
// positions atomically, else from the host's state store under name.
func (p *Pipeline) resumePoint(ctx context.Context, cfg Stage, c checkpointer, name string) (record.Position, error) {
	if cfg.Atomic {
		pos, err := c.Checkpoint(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading checkpoint of %q: %w", cfg.Plugin, err)
		}
		return pos, nil
	}
	return p.store.Get(p.cfg.ID, name)
}

// segment builds a segment into a downstream stage; when that stage keeps no positions itself, acked
// positions go to the state store under stateName. toSink segments count delivered records.
func (p *Pipeline) segment(name string, in *protocol.ReadStream, out *protocol.WriteStream, down Stage, stateName string, toSink bool) *segment {
	s := newSegment(name, in, out, p.cfg.MaxInFlightBytes, p.drain)
	s.pipeline = p.cfg.ID
	if stateName != "" && !down.Atomic {
		s.persist = newPersister(p.store, p.cfg.ID, stateName, p.log)
		s.acked = s.persist.set
	}
	if toSink {
		s.delivered = func(n int) { p.Stats.Delivered.Add(int64(n)) }
	}
	return s
}

func (p *Pipeline) flushState(s *segment) {
	if s.persist != nil {
		s.persist.close()
	}
}

func fmtPos(pos record.Position) string {
	if pos == nil {
		return "none (start as configured)"
	}
	return fmt.Sprintf("%x", []byte(pos))
}
