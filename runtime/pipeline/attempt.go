package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
)

// stages holds one attempt's running plugins.
type stages struct {
	all    []*stage
	closes []func(context.Context) error
}

// stop closes the stages, downstream last, within CloseTimeout, then kills their plugins. Kill is bounded
// whatever a plugin does, so stop always returns.
func (s *stages) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), CloseTimeout)
	defer cancel()
	for i := len(s.closes) - 1; i >= 0; i-- {
		_ = s.closes[i](ctx) // best effort: the process is killed next anyway
	}
	var wg sync.WaitGroup
	for _, st := range s.all {
		wg.Go(st.conn.Kill)
	}
	wg.Wait()
}

// stageStart names a stage to start: its role ("sink", "buffer", …), kind and configuration.
type stageStart struct {
	role string
	kind sdk.Kind
	cfg  Stage
	// laned is set for the sinks of a pipeline with ordered: false; lane is then the sink's lane.
	laned bool
	lane  int
}

// startAll starts the plugin instances of stages all at once — each start launches a process and waits
// for its handshake, tens of milliseconds that would otherwise add up stage after stage — then watches
// them in the order given, so the attempt reports and stops them in that order. It returns the stages in
// that order, or the first error in that order; the instances that did start are then stopped with the
// attempt's other stages.
func (p *Pipeline) startAll(ctx context.Context, cancel context.CancelCauseFunc, st *stages, starts []stageStart) ([]*stage, error) {
	conns := make([]*protocol.Conn, len(starts))
	errs := make([]error, len(starts))
	var wg sync.WaitGroup
	for i, s := range starts {
		wg.Go(func() {
			conns[i], errs[i] = p.starter.Start(ctx, s.cfg.Plugin, s.kind, s.cfg.InProcess,
				p.stageLog(s))
		})
	}
	wg.Wait()
	out := make([]*stage, len(starts))
	var first error
	for i, s := range starts {
		if errs[i] != nil {
			if first == nil {
				first = fmt.Errorf("starting %s %q: %w", s.role, s.cfg.Plugin, errs[i])
			}
			continue
		}
		if first != nil { // a stage before it failed: stop this one with the attempt's others
			st.all = append(st.all, &stage{role: s.role, plugin: s.cfg.Plugin, conn: conns[i], laned: s.laned, lane: s.lane})
			continue
		}
		var err error
		if out[i], err = p.watch(ctx, cancel, st, s, conns[i]); err != nil {
			first = err
		}
	}
	if first != nil {
		return nil, first
	}
	return out, nil
}

// watch registers a started plugin instance as one of the attempt's stages and watches its process: the
// attempt is cancelled with an explanation when the process exits or stops answering.
func (p *Pipeline) watch(ctx context.Context, cancel context.CancelCauseFunc, st *stages, start stageStart, conn *protocol.Conn) (*stage, error) {
	s := &stage{role: start.role, plugin: start.cfg.Plugin, conn: conn, laned: start.laned, lane: start.lane}
	st.all = append(st.all, s)
	p.mu.Lock()
	if p.aborted != nil {
		p.mu.Unlock()
		conn.Abort()
		return nil, p.aborted
	}
	ss := StageStatus{Role: s.role, Plugin: s.plugin, Pid: conn.Pid()}
	if s.laned {
		ss.Lane = new(int)
		*ss.Lane = s.lane
	}
	p.stages = append(p.stages, ss)
	p.running = append(p.running, s)
	p.mu.Unlock()
	go func() {
		select {
		case <-conn.Done():
			cancel(s.exited(conn.Exit()))
		case <-ctx.Done():
		}
	}()
	go p.watchHealth(ctx, cancel, s)
	return s, nil
}

// stageLog is the logger a stage's plugin writes to.
func (p *Pipeline) stageLog(s stageStart) *slog.Logger {
	if s.laned {
		return p.log.With("plugin", s.cfg.Plugin, "stage", s.role, "lane", s.lane)
	}
	return p.log.With("plugin", s.cfg.Plugin, "stage", s.role)
}

// watchHealth pings s's plugin process every healthInterval and cancels the attempt when it has not
// answered for healthTimeout: a stopped (SIGSTOP) or hung process would otherwise hold the pipeline
// silently.
func (p *Pipeline) watchHealth(ctx context.Context, cancel context.CancelCauseFunc, s *stage) {
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, pcancel := context.WithTimeout(ctx, healthTimeout)
		err := s.conn.Ping(pctx)
		pcancel()
		if err != nil && ctx.Err() == nil {
			if exit := s.conn.WaitExit(exitWait); exit != nil {
				cancel(s.exited(exit))
				return
			}
			err = s.unresponsive(healthTimeout, err)
			p.log.Error("plugin process is not responding; restarting the pipeline", "stage", s.String(), "err", err)
			cancel(err)
			return
		}
	}
}

// call runs fn, the call named method into s that sets a stage up (Open, Checkpoint), within OpenTimeout,
// warning every slowCallWarning while it runs. A call cut at OpenTimeout fails with an *OpenTimeoutError,
// whatever words the transport found for the cut.
func (p *Pipeline) call(ctx context.Context, s *stage, doing, method string, fn func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, p.cfg.OpenTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fn(cctx) }()
	begun := time.Now()
	t := time.NewTicker(slowCallWarning)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			// The plugin's side of the call has the same deadline and may give up a moment before this
			// side notices: a failure at the deadline is the timeout, whatever the transport called it.
			// A failure well before it is the plugin's own, even when a timeout of its own (a driver's)
			// fired: that one is not open_timeout.
			deadline, _ := cctx.Deadline()
			timedOut := cctx.Err() == context.DeadlineExceeded || time.Until(deadline) < 100*time.Millisecond
			if err != nil && ctx.Err() == nil && timedOut {
				err = &OpenTimeoutError{Method: method, Timeout: p.cfg.OpenTimeout, Err: err}
			}
			if err != nil && ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return s.fail(doing, err)
		case <-t.C:
			p.log.Warn("stage is slow", "stage", s.String(), "doing", doing,
				"for", time.Since(begun).Round(time.Second).String(), "open_timeout", p.cfg.OpenTimeout.String())
		}
	}
}

// open opens a stage; deadLetter tells it that the pipeline has a dead-letter sink it may use.
func (p *Pipeline) open(ctx context.Context, s *stage, cfg Stage, open func(context.Context, protocol.OpenRequest) error,
	after record.Position, deadLetter bool) error {
	// A stage opened under a lease may write at once: the lease must be valid now. Should this host
	// freeze after this check and lose the lease meanwhile, the token stops its writes where the stage
	// checks it.
	if err := p.leaseValid(); err != nil {
		return err
	}
	req := protocol.OpenRequest{
		Pipeline: p.cfg.ID, Settings: cfg.Settings, After: after,
		MaxBatchRecords: p.cfg.BatchMaxRecords, MaxBatchBytes: p.cfg.BatchMaxBytes,
		DeadLetter: deadLetter, Fence: p.fence(),
	}
	if s.laned {
		req.Pipeline, req.Lane, req.Lanes = laneID(p.cfg.ID, s.lane), s.lane, p.cfg.Lanes
	}
	return p.call(ctx, s, "opening", "Open", func(ctx context.Context) error { return open(ctx, req) })
}

// attempt starts the stages, resumes each from its stored position, and runs the segments once.
func (p *Pipeline) attempt(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	st := &stages{}
	defer func() {
		st.stop()
		p.mu.Lock()
		p.stages, p.running = nil, nil
		p.mu.Unlock()
	}()
	err := p.run(ctx, cancel, st)
	if c := context.Cause(ctx); err != nil && c != nil && !errors.Is(c, context.Canceled) {
		err = c // the first failure, not the cancellations it caused
	}
	return err
}

func (p *Pipeline) run(ctx context.Context, cancel context.CancelCauseFunc, st *stages) error {
	// Every plugin process starts at once; the stages are then opened one after the other, in the order
	// the position rule needs.
	hasDLQ := p.cfg.DeadLetter != nil
	var starts []stageStart
	if hasDLQ {
		starts = append(starts, stageStart{role: "dead-letter sink", kind: sdk.KindSink, cfg: *p.cfg.DeadLetter})
	}
	lanes := p.cfg.Lanes
	if lanes > 0 && p.cfg.Buffer == nil {
		return permanentError{errors.New("ordered: false needs a buffer: add one, or remove ordered: false")}
	}
	if lanes > 0 {
		for i := range lanes {
			starts = append(starts, stageStart{role: "sink", kind: sdk.KindSink, cfg: p.cfg.Sink, laned: true, lane: i})
		}
	} else {
		starts = append(starts, stageStart{role: "sink", kind: sdk.KindSink, cfg: p.cfg.Sink})
	}
	if p.cfg.Buffer != nil {
		starts = append(starts, stageStart{role: "buffer", kind: sdk.KindBuffer, cfg: *p.cfg.Buffer})
	}
	starts = append(starts, stageStart{role: "source", kind: sdk.KindSource, cfg: p.cfg.Source})
	started, err := p.startAll(ctx, cancel, st, starts)
	if err != nil {
		return err
	}
	next := func() *stage {
		s := started[0]
		started = started[1:]
		return s
	}

	// The dead-letter sink first: every other stage may need it.
	var dead *deadLetters
	if hasDLQ {
		s := next()
		dlq := s.conn.Sink()
		if err := p.open(ctx, s, *p.cfg.DeadLetter, dlq.Open, nil, false); err != nil {
			return err
		}
		st.closes = append(st.closes, dlq.Close)
		out, err := dlq.Write(ctx)
		if err != nil {
			return s.fail("writing", err)
		}
		dead = &deadLetters{st: s, out: out, log: p.log, sent: func(n int) { p.Stats.DeadLetters.Add(int64(n)) }, meter: p.cfg.Meter}
	}

	// Downstream first: the sink says where everything upstream resumes.
	var (
		sinkSt  *stage
		sink    *protocol.Sink
		sinkHas record.Position
		ln      *laneSinks // the lanes' sinks, with ordered: false
	)
	if lanes > 0 {
		sts := make([]*stage, lanes)
		for i := range sts {
			sts[i] = next()
		}
		if ln, err = p.openLanes(ctx, st, sts, hasDLQ); err != nil {
			return err
		}
	} else {
		sinkSt = next()
		sink = sinkSt.conn.Sink()
		if err := p.open(ctx, sinkSt, p.cfg.Sink, sink.Open, nil, hasDLQ); err != nil {
			return err
		}
		st.closes = append(st.closes, sink.Close)
		// upstreamOfSink is the stage whose positions the sink receives.
		upstreamOfSink := stateSource
		if p.cfg.Buffer != nil {
			upstreamOfSink = stateBuffer
		}
		if sinkHas, err = p.resumePoint(ctx, sinkSt, p.cfg.Sink, sink, upstreamOfSink); err != nil {
			return err
		}
	}

	var segs []*segment
	var dispatch *dispatcher // with ordered: false, what feeds the lanes' segments
	srcAfter := sinkHas
	var bufSt *stage
	var bufferOut *protocol.WriteStream // where the source writes, when there is a buffer
	if p.cfg.Buffer != nil {
		bufSt = next()
		buf := bufSt.conn.Buffer()
		after, res, err := p.bufferAfter(ctx, bufSt, buf, ln, sinkHas)
		if err != nil {
			return err
		}
		if err := p.open(ctx, bufSt, *p.cfg.Buffer, buf.Open, after, false); err != nil {
			return err
		}
		st.closes = append(st.closes, buf.Close)
		if err := p.checkOrdering(ctx, bufSt, &res); err != nil {
			return err
		}
		go p.watchFill(ctx, bufSt)
		if srcAfter, err = p.resumePoint(ctx, bufSt, *p.cfg.Buffer, buf, stateSource); err != nil {
			return err
		}
		in, err := buf.Read(ctx)
		if err != nil {
			return bufSt.fail("reading", err)
		}
		if ln != nil {
			d, laneSegs, err := p.laneSegments(ctx, in, bufSt, buf, ln, res, dead)
			if err != nil {
				return err
			}
			segs = append(segs, laneSegs...)
			dispatch = d
		} else {
			out, err := sink.Write(ctx)
			if err != nil {
				return sinkSt.fail("writing", err)
			}
			last := p.segment("buffer → sink", in, out, bufSt, sinkSt, p.cfg.Sink, stateBuffer, true)
			if p.cfg.SinkSteps != nil {
				last.steps = p.sinkSteps(dead)
			}
			last.rejects = dead
			segs = append(segs, last)
		}
		if bufferOut, err = buf.Append(ctx); err != nil {
			return bufSt.fail("appending", err)
		}
	}

	srcSt := next()
	src := srcSt.conn.Source()
	if err := p.open(ctx, srcSt, p.cfg.Source, src.Open, srcAfter, hasDLQ); err != nil {
		return err
	}
	st.closes = append(st.closes, src.Close)
	in, err := src.Read(ctx)
	if err != nil {
		return srcSt.fail("reading", err)
	}
	var first *segment
	if bufferOut != nil {
		first = p.segment("source → buffer", in, bufferOut, srcSt, bufSt, *p.cfg.Buffer, stateSource, false)
	} else {
		out, err := sink.Write(ctx)
		if err != nil {
			return sinkSt.fail("writing", err)
		}
		first = p.segment("source → sink", in, out, srcSt, sinkSt, p.cfg.Sink, stateSource, true)
		first.rejects = dead
	}
	first.read = func(n int) { p.Stats.Read.Add(int64(n)) }
	if p.cfg.Steps != nil || hasDLQ {
		first.steps = &steps{pipeline: p.cfg.ID, list: "transforms", onError: p.cfg.OnError, scan: hasDLQ, dead: dead,
			filtered: p.filtered("transforms")}
		if p.cfg.Steps != nil {
			first.steps.runner = p.cfg.Steps.NewRunner()
		}
	}
	segs = append([]*segment{first}, segs...)
	p.mu.Lock()
	if p.started.IsZero() {
		p.started = time.Now()
	}
	p.mu.Unlock()
	p.setState(Running)
	if lanes > 0 {
		p.log.Info("pipeline started", "guarantee", GuaranteeOf(&p.cfg), "source_after", p.describe(ctx, srcSt, srcAfter),
			"ordered", false, "lanes", lanes)
	} else {
		p.log.Info("pipeline started", "guarantee", GuaranteeOf(&p.cfg), "source_after", p.describe(ctx, srcSt, srcAfter))
	}

	var lastAck atomic.Int64
	lastAck.Store(time.Now().UnixNano())
	for _, s := range segs {
		s.progress = func() {
			p.Stats.acks.Add(1)
			lastAck.Store(time.Now().UnixNano())
		}
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go p.watchStalls(wctx, cancel, segs, dead, &lastAck)
	rend := &renderer{p: p, stages: map[string]formatter{stateSource: formatterOf(srcSt)}}
	if bufSt != nil {
		rend.stages[stateBuffer] = formatterOf(bufSt)
	}
	rendered := make(chan struct{})
	go func() {
		defer close(rendered)
		p.renderPositions(wctx, rend)
	}()

	n := len(segs)
	if dispatch != nil {
		n++
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, s := range segs {
		wg.Go(func() { errs[i] = s.run(ctx, cancel) })
	}
	if dispatch != nil {
		wg.Go(func() {
			err := dispatch.run(ctx)
			if err != nil && !errors.Is(err, errDrained) {
				cancel(err)
			}
			errs[n-1] = err
		})
	}
	wg.Wait()
	wcancel()
	<-rendered
	// After a clean end the last positions are rendered while the stages still run (the attempt stops
	// them when run returns). After a failure they are not: a stage may be frozen.
	if errors.Join(errs...) == nil || onlyDrained(errs) {
		fctx, fcancel := context.WithTimeout(context.Background(), renderInterval)
		rend.render(fctx)
		fcancel()
	}
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
		last := segs[len(segs)-1]
		if n := last.unacked(); n > 0 && !p.cfg.Sink.Atomic {
			p.Stats.Redelivered.Add(int64(n))
			if p.cfg.Meter != nil {
				p.cfg.Meter.Redelivered(n)
			}
			p.log.Warn("records sent to the sink were not acknowledged; they will be delivered again and may be duplicates",
				"records", n)
		}
		if last.inflight != nil {
			last.inflight.reset() // counted just now: a crash before the next attempt must not count them again
		}
		return firstCause(errs)
	}
	p.log.Info("pipeline completed", "delivered", p.Stats.Delivered.Load())
	return nil
}

// firstCause returns the error that explains a failed attempt: a stage's failure rather than the
// cancellations it caused in the other segments.
func firstCause(errs []error) error {
	var first error
	for _, e := range errs {
		if e == nil || errors.Is(e, errDrained) {
			continue
		}
		if !isCancel(e) {
			return e
		}
		if first == nil {
			first = e
		}
	}
	return first
}

// watchStalls restarts the attempt when records stop being acknowledged: when some stage has held
// unacknowledged records for StallTimeout and no stage acknowledged anything meanwhile (a full buffer
// behind a working sink is backpressure, not a stall). It reports the stage closest to the sink that
// holds records, and cancels the attempt.
func (p *Pipeline) watchStalls(ctx context.Context, cancel context.CancelCauseFunc, segs []*segment, dead *deadLetters, lastAck *atomic.Int64) {
	timeout := p.cfg.StallTimeout
	t := time.NewTicker(min(timeout/4, 5*time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if now.Sub(time.Unix(0, lastAck.Load())) < timeout {
				continue
			}
			if dead != nil {
				if held, ok := dead.stalled(now, timeout); ok {
					cancel(p.stall(dead.st, held, 0, 0))
					return
				}
			}
			for i := len(segs) - 1; i >= 0; i-- {
				if held, recs, bytes, ok := segs[i].stalled(now, timeout); ok {
					cancel(p.stall(segs[i].down, held, recs, bytes))
					return
				}
			}
		}
	}
}

// stall reports a stalled stage and returns the error that restarts the pipeline.
func (p *Pipeline) stall(s *stage, held time.Duration, records int, bytes int64) error {
	err := &StageError{Stage: s.String(), Role: s.roleName(), Doing: "writing",
		Err: fmt.Errorf("%w: %d records (%d bytes) unacknowledged for %s, past stall_timeout (%s)",
			errStalled, records, bytes, held.Round(time.Second), p.cfg.StallTimeout)}
	p.log.Error("stage stalled; restarting the pipeline", "stage", s.String(), "pending_records", records,
		"pending_bytes", bytes, "for", held.Round(time.Second).String(), "stall_timeout", p.cfg.StallTimeout.String())
	return err
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
func (p *Pipeline) resumePoint(ctx context.Context, s *stage, cfg Stage, c checkpointer, name string) (record.Position, error) {
	if cfg.Atomic {
		var pos record.Position
		err := p.call(ctx, s, "reading its checkpoint", "Checkpoint", func(ctx context.Context) (err error) {
			pos, err = c.Checkpoint(ctx)
			return err
		})
		return pos, err
	}
	return p.store.Get(p.cfg.ID, name)
}

// segment builds a segment from stage up into stage down; when down keeps no positions itself, acked
// positions go to the state store under stateName. toSink segments count delivered records.
func (p *Pipeline) segment(name string, in upstream, out *protocol.WriteStream, up, down *stage, downCfg Stage, stateName string, toSink bool) *segment {
	s := newSegment(name, in, out, p.cfg.MaxInFlightBytes, p.drain)
	s.pipeline, s.up, s.down = p.cfg.ID, up, down
	s.acked = func(pos record.Position, _ int64) { p.setPosition(stateName, pos) }
	if !downCfg.Atomic {
		s.persist = newPersister(p.store, p.cfg.ID, stateName, p.log)
		s.acked = func(pos record.Position, through int64) {
			p.setPosition(stateName, pos)
			s.persist.set(pos, through)
		}
		if store, ok := p.store.(InFlightStore); ok && toSink {
			p.countLeftover(store, stateName)
			s.inflight = newInflight(store, p.cfg.ID, stateName, p.log)
			s.persist.stored = s.inflight.storedThrough
		}
	}
	if toSink {
		s.delivered = func(n int) { p.Stats.Delivered.Add(int64(n)) }
	}
	if stateName == stateSource {
		s.eventTime = func(ns int64) { p.lastEvent.Store(ns) }
	}
	if m := p.cfg.Meter; m != nil {
		s.upMeter, s.downMeter = m.Stage(up.role), m.Stage(down.role)
		if toSink {
			s.latency = m.Latency
		}
	}
	return s
}

// sinkSteps returns the sink_transforms steps of one segment into the sink (each has a runner of its own).
func (p *Pipeline) sinkSteps(dead *deadLetters) *steps {
	return &steps{pipeline: p.cfg.ID, runner: p.cfg.SinkSteps.NewRunner(), list: "sink_transforms",
		onError: p.cfg.OnError, dead: dead, filtered: p.filtered("sink_transforms")}
}

// filtered returns what counts the records the steps named list drop, or nil without a Meter.
func (p *Pipeline) filtered(list string) func(int) {
	m := p.cfg.Meter
	if m == nil {
		return nil
	}
	return func(n int) { m.Filtered(list, n) }
}

// countLeftover counts, once per process, the records a previous host process had sent to the sink beyond
// the stored position when it was killed: the pipeline sends them again.
func (p *Pipeline) countLeftover(store InFlightStore, stage string) {
	if p.leftoverRead {
		return
	}
	p.leftoverRead = true
	n, err := store.LoadInFlight(p.cfg.ID, stage)
	if err != nil {
		p.log.Warn("could not read the in-flight count; records delivered again after a crash of sluice are not counted", "err", err)
		return
	}
	if n > 0 {
		p.Stats.Redelivered.Add(n)
		p.log.Warn("the previous sluice process ended without storing the position of records it had sent to the sink; they will be delivered again and may be duplicates",
			"records", n)
	}
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
	return FormatPosition(pos)
}
