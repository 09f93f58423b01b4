package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"slices"
	"sync"

	"golang.org/x/sync/semaphore"

	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
)

// Lanes: a pipeline with ordered: false (Config.Lanes > 0) runs one sink instance per lane behind its
// buffer. A dispatcher reads the buffer's batches and splits each by a hash of its records' keys (FNV-1a;
// records without a key go to lane 0), so that the records of one key go to one lane, in buffer order.
// The sink_transforms run in the dispatcher, before the split, so that a record goes to the lane of the key
// the sink writes. Each lane is a segment of its own (its own in-flight window, the records its sink
// rejects) writing to its sink.
//
// Positions. A lane's sub-batch carries the buffer position of its whole batch, wrapped with the number of
// lanes (lanePosition): a lane's sink stores it atomically with the records, so a lane's checkpoint P says
// that the lane holds every one of its records up to P. The buffer is acknowledged at the low-water mark:
// through the last batch such that it and every batch before it are durable in every lane that got records
// of them. After a restart the buffer is read after the smallest lane checkpoint (from its oldest entry if
// a lane has none) and each lane skips its records up to its own checkpoint, which needs the buffer to order
// its positions (protocol.Buffer.ComparePositions): the dispatcher compares a batch's first and last
// positions with each lane's checkpoint, and searches a batch that straddles one, until every lane is past
// its checkpoint. See docs/decisions/2026-12-01-unordered-lanes.md.

// Lane limits and defaults (a connector file's lanes).
const (
	// DefaultLanes is the number of lanes of a pipeline with ordered: false that does not set lanes.
	DefaultLanes = 4
	// MaxLanes is the largest number of lanes (each is a sink instance, a plugin process).
	MaxLanes = 64
)

// laneID is the pipeline id lane i of pipeline opens its sink with: the pipeline's own for lane 0 (which
// so resumes where the pipeline's ordered sink stopped), "<pipeline>.lane-<i>" for the others.
func laneID(pipeline string, lane int) string {
	if lane == 0 {
		return pipeline
	}
	return fmt.Sprintf("%s.lane-%d", pipeline, lane)
}

// lanePrefix starts every position a lane's sink stores: the buffer position follows, after one byte
// holding the number of lanes. A pipeline id holds no dot and buffer positions are the buffer's own, so
// an ordered sink's position (a bare buffer position) is told apart from a lane's.
var lanePrefix = []byte("sluice.lanes\x00")

// lanePosition wraps buffer position pos for a sink of a pipeline with lanes lanes.
func lanePosition(lanes int, pos record.Position) record.Position {
	out := make(record.Position, 0, len(lanePrefix)+1+len(pos))
	out = append(out, lanePrefix...)
	out = append(out, byte(lanes))
	return append(out, pos...)
}

// parseLanePosition unwraps a position a lane's sink stored: the number of lanes then and the buffer
// position. ok is false for a bare buffer position (stored by the sink of an ordered pipeline).
func parseLanePosition(p record.Position) (lanes int, pos record.Position, ok bool) {
	if len(p) <= len(lanePrefix) || !bytes.HasPrefix(p, lanePrefix) {
		return 0, p, false
	}
	return int(p[len(lanePrefix)]), p[len(lanePrefix)+1:].Clone(), true
}

// laneOf returns the lane of a record with key among lanes lanes: FNV-1a (32 bits) of the key modulo
// lanes; lane 0 for a record without a key.
func laneOf(h hash.Hash32, key []byte, lanes int) int {
	if len(key) == 0 || lanes <= 1 {
		return 0
	}
	h.Reset()
	_, _ = h.Write(key) // never fails
	return int(h.Sum32() % uint32(lanes))
}

// comparer orders two of the buffer's positions.
type comparer func(ctx context.Context, a, b record.Position) (int, error)

// errLanesChanged marks a refusal to start because the lane positions stored by the sinks were written
// with another ordering (ordered, or another number of lanes) and the buffer still holds records.
var errLanesChanged = errors.New("the pipeline's ordering changed")

// laneResume is where a pipeline with lanes resumes, from its lanes' checkpoints.
type laneResume struct {
	// stored holds, per lane, the buffer position through which the lane holds its records; nil when it
	// holds none.
	stored []record.Position
	// after is where the buffer is read from: the smallest stored position, nil if a lane has none.
	after record.Position
	// changed describes the other ordering the positions were stored with ("lanes: 8"); "" when none.
	changed string
}

// resumeLanes works out where a pipeline with lanes lanes resumes from its lanes' checkpoints. A bare
// buffer position on lane 0 was stored by the pipeline's ordered sink (lane 0 shares its id): every
// record up to it was delivered, so it is a floor for every lane.
func resumeLanes(ctx context.Context, cmp comparer, lanes int, checkpoints []record.Position) (laneResume, error) {
	r := laneResume{stored: make([]record.Position, lanes)}
	var floor record.Position
	for i, cp := range checkpoints {
		if len(cp) == 0 {
			continue
		}
		n, pos, ok := parseLanePosition(cp)
		switch {
		case !ok && i == 0:
			floor = pos.Clone()
			continue
		case !ok:
			r.changed = "a position that is not a lane's"
		case n != lanes:
			r.changed = fmt.Sprintf("lanes: %d", n)
		}
		r.stored[i] = pos
	}
	if floor != nil {
		for i, s := range r.stored {
			if s == nil {
				r.stored[i] = floor
				continue
			}
			c, err := cmp(ctx, s, floor)
			if err != nil {
				return r, err
			}
			if c < 0 {
				r.stored[i] = floor
			}
		}
	}
	for i, s := range r.stored {
		if s == nil {
			r.after = nil
			return r, nil
		}
		if i == 0 {
			r.after = s
			continue
		}
		c, err := cmp(ctx, s, r.after)
		if err != nil {
			return r, err
		}
		if c < 0 {
			r.after = s
		}
	}
	return r, nil
}

// parent is a batch read from the buffer and dispatched to the lanes, not yet acknowledged upstream.
type parent struct {
	seq uint64
	pos record.Position
	// outstanding counts the lanes that got records of the batch and have not made them durable.
	outstanding int
}

// dispatcher reads the buffer's batches, splits them among the lanes and acknowledges the buffer at the
// low-water mark.
type dispatcher struct {
	in     upstream
	up     *stage // the buffer
	lanes  []*laneReader
	drain  <-chan struct{}
	cmp    comparer
	hasher hash.Hash32
	// steps are the sink_transforms, run before a batch is split so that records are dispatched by the
	// key the sink writes (nil: none).
	steps *steps
	// items is split's scratch space, reused from batch to batch.
	items []item
	// skip holds, per lane, the buffer position through which the lane already holds its records, until
	// the lane has got a batch past it; nil for a lane that skips nothing (any more).
	skip []record.Position
	// skipped counts the records the lanes skipped, for the log; skipDone is told it once no lane skips.
	skipped  int64
	skipDone func(records int64)
	// read counts batches received from the buffer (nil: not counted); acked is told the buffer position
	// through which every lane holds everything.
	read  func(records, bytes int)
	acked func(pos record.Position)

	mu      sync.Mutex
	parents []parent // dispatched, not yet acknowledged upstream, in order
}

// laneReader is one lane's upstream: the sub-batches the dispatcher sends it, and its acknowledgements
// back to the dispatcher.
type laneReader struct {
	d    *dispatcher
	lane int
	ch   chan *protocol.Batch // closed at the end of the input
	done <-chan struct{}      // the attempt's end
	// sent holds the buffer batch numbers of the sub-batches sent to this lane and not yet acknowledged,
	// in order (guarded by d.mu).
	sent []uint64
}

// Recv returns the lane's next sub-batch, io.EOF at the end of the input.
func (r *laneReader) Recv() (*protocol.Batch, error) {
	select {
	case b, ok := <-r.ch:
		if !ok {
			return nil, io.EOF
		}
		return b, nil
	case <-r.done:
		return nil, context.Canceled
	}
}

// Ack reports that the lane's sink holds its sub-batches through buffer batch seq.
func (r *laneReader) Ack(seq uint64) error { return r.d.laneAcked(r.lane, seq) }

func newDispatcher(in upstream, up *stage, lanes int, done <-chan struct{}, drain <-chan struct{}) *dispatcher {
	d := &dispatcher{in: in, up: up, drain: drain, hasher: fnv.New32a(), skip: make([]record.Position, lanes)}
	for i := range lanes {
		d.lanes = append(d.lanes, &laneReader{d: d, lane: i, ch: make(chan *protocol.Batch, 1), done: done})
	}
	return d
}

// skipping reports whether some lane still skips records it holds.
func (d *dispatcher) skipping() bool {
	return slices.ContainsFunc(d.skip, func(p record.Position) bool { return p != nil })
}

// run dispatches batches until the buffer ends its stream (nil: every lane's input is then closed), the
// pipeline drains (errDrained) or something fails.
func (d *dispatcher) run(ctx context.Context) error {
	batches, recvErr := receive(ctx, d.in)
	for {
		var b *protocol.Batch
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-d.drain:
			return errDrained
		case err := <-recvErr:
			if err == io.EOF {
				for _, l := range d.lanes {
					close(l.ch)
				}
				return nil
			}
			return d.up.fail("reading", err)
		case b = <-batches:
		}
		if d.read != nil {
			d.read(b.Len(), b.Size())
		}
		if d.steps != nil {
			if err := d.steps.apply(ctx, b); err != nil {
				return err
			}
		}
		subs, err := d.split(ctx, b)
		if err != nil {
			return err
		}
		if err := d.dispatch(ctx, b, subs); err != nil {
			return err
		}
	}
}

// split divides b among the lanes: subs[i] is lane i's records of b, nil when it gets none (no record of
// its keys, or only records it already holds). A batch no step changed is split in wire form: each
// record's encoding is copied to its lane's batch as it is, never decoded.
func (d *dispatcher) split(ctx context.Context, b *protocol.Batch) ([]*protocol.Batch, error) {
	subs := make([]*protocol.Batch, len(d.lanes))
	if b.Len() == 0 {
		return subs, nil
	}
	items := d.items[:0]
	var recs []record.Record // the records, when steps ran (they are not in wire form then)
	if d.steps != nil {
		var err error
		if recs, err = b.Records(); err != nil {
			return nil, d.up.fail("reading", fmt.Errorf("batch %d: %w", b.Seq, err))
		}
		for i := range recs {
			items = append(items, item{pos: recs[i].Position, key: recs[i].Key})
		}
	} else if err := record.Scan(b.Encoded(), b.Len(), func(_ int, pos, key, raw []byte) {
		items = append(items, item{pos: pos, key: key, raw: raw})
	}); err != nil {
		return nil, d.up.fail("reading", fmt.Errorf("batch %d: %w", b.Seq, err))
	}
	d.items = items
	var from []int // per lane, the index of its first record it does not hold yet; nil: 0 for every lane
	if d.skipping() {
		var err error
		if from, err = d.skipFrom(ctx, items); err != nil {
			return nil, err
		}
	}
	n := len(d.lanes)
	counts, sizes := make([]int, n), make([]int, n)
	for i := range items {
		l := laneOf(d.hasher, items[i].key, n)
		if from != nil && i < from[l] {
			d.skipped++
			l = -1
		} else {
			counts[l]++
			sizes[l] += len(items[i].raw)
		}
		items[i].lane = l
	}
	if from != nil && !d.skipping() && d.skipDone != nil {
		d.skipDone(d.skipped)
	}
	pos := lanePosition(n, b.Position)
	if recs != nil {
		// The steps' records alias buffers their runner reuses on the next batch: encode them now.
		per := make([][]record.Record, n)
		for i := range items {
			if l := items[i].lane; l >= 0 {
				per[l] = append(per[l], recs[i])
			}
		}
		for l, rs := range per {
			if len(rs) > 0 {
				subs[l] = protocol.NewEncodedBatch(record.Encode(nil, rs), len(rs), pos)
			}
		}
	} else {
		data := make([][]byte, n)
		for l := range n {
			if counts[l] > 0 {
				data[l] = make([]byte, 0, sizes[l])
			}
		}
		for i := range items {
			if l := items[i].lane; l >= 0 {
				data[l] = append(data[l], items[i].raw...)
			}
		}
		for l := range n {
			if counts[l] > 0 {
				subs[l] = protocol.NewEncodedBatch(data[l], counts[l], pos)
			}
		}
	}
	for _, s := range subs {
		if s != nil {
			s.Seq, s.EventTime = b.Seq, b.EventTime
		}
	}
	return subs, nil
}

// item is what the dispatcher needs of one record of a batch: its position and key, its encoding (nil
// when the batch was decoded), and the lane it goes to (-1: none, the lane holds it already).
type item struct {
	pos, key, raw []byte
	lane          int
}

// skipFrom returns, per lane, the index in recs of the lane's first record past the position it holds
// (len(recs): it holds them all). It compares the batch's first and last positions with each lane's, and
// searches a batch that straddles one; a lane past its position skips nothing from then on.
func (d *dispatcher) skipFrom(ctx context.Context, recs []item) ([]int, error) {
	from := make([]int, len(d.lanes))
	known := map[string]int{} // the answer for a stored position, as lanes often share one
	for l, held := range d.skip {
		if held == nil {
			continue
		}
		k, ok := known[string(held)]
		if !ok {
			var err error
			if k, err = d.firstAfter(ctx, recs, held); err != nil {
				return nil, err
			}
			known[string(held)] = k
		}
		from[l] = k
		if k < len(recs) {
			d.skip[l] = nil // past it: what follows is all new to the lane
		}
	}
	return from, nil
}

// firstAfter returns the index of the first record of recs (in position order) after held, len(recs) if
// none is.
func (d *dispatcher) firstAfter(ctx context.Context, recs []item, held record.Position) (int, error) {
	after := func(i int) (bool, error) {
		c, err := d.cmp(ctx, recs[i].pos, held)
		return c > 0, err
	}
	last, err := after(len(recs) - 1)
	if err != nil || !last {
		return len(recs), err
	}
	if first, err := after(0); err != nil || first {
		return 0, err
	}
	lo, hi := 1, len(recs)-1 // recs[lo-1] is not after held, recs[hi] is
	for lo < hi {
		mid := (lo + hi) / 2
		a, err := after(mid)
		if err != nil {
			return 0, err
		}
		if a {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo, nil
}

// dispatch registers b and sends its sub-batches to their lanes.
func (d *dispatcher) dispatch(ctx context.Context, b *protocol.Batch, subs []*protocol.Batch) error {
	n := 0
	for _, s := range subs {
		if s != nil {
			n++
		}
	}
	d.mu.Lock()
	d.parents = append(d.parents, parent{seq: b.Seq, pos: b.Position, outstanding: n})
	for i, s := range subs {
		if s != nil {
			d.lanes[i].sent = append(d.lanes[i].sent, b.Seq)
		}
	}
	var err error
	if n == 0 { // nothing for any lane: acknowledged as soon as the batches before it are
		err = d.advance()
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}
	for i, s := range subs {
		if s == nil {
			continue
		}
		select {
		case d.lanes[i].ch <- s:
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-d.drain:
			return errDrained
		}
	}
	return nil
}

// laneAcked records that lane holds its sub-batches through buffer batch seq, and acknowledges the
// buffer through the batches every lane now holds.
func (d *dispatcher) laneAcked(lane int, seq uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := d.lanes[lane]
	n := 0
	for n < len(l.sent) && l.sent[n] <= seq {
		i, found := slices.BinarySearchFunc(d.parents, l.sent[n], func(p parent, s uint64) int {
			switch {
			case p.seq < s:
				return -1
			case p.seq > s:
				return 1
			}
			return 0
		})
		if !found {
			return fmt.Errorf("lane %d acknowledged buffer batch %d, which is not pending", lane, l.sent[n])
		}
		d.parents[i].outstanding--
		n++
	}
	l.sent = l.sent[n:]
	return d.advance()
}

// advance acknowledges the buffer through the last of the leading batches every lane holds; callers hold
// d.mu (so that acknowledgements go out one at a time, in order).
func (d *dispatcher) advance() error {
	n := 0
	for n < len(d.parents) && d.parents[n].outstanding == 0 {
		n++
	}
	if n == 0 {
		return nil
	}
	last := d.parents[n-1]
	d.parents = d.parents[n:]
	if err := d.in.Ack(last.seq); err != nil {
		return d.up.fail("acknowledging", err)
	}
	if d.acked != nil {
		d.acked(last.pos)
	}
	return nil
}

// laneSinks are the sinks of a pipeline's lanes, opened, with their checkpoints.
type laneSinks struct {
	sts         []*stage
	sinks       []*protocol.Sink
	checkpoints []record.Position
}

// openLanes opens the lanes' sinks, all at once, and reads their checkpoints.
func (p *Pipeline) openLanes(ctx context.Context, st *stages, sts []*stage, hasDLQ bool) (*laneSinks, error) {
	if !p.cfg.Sink.Atomic {
		return nil, permanentError{fmt.Errorf("ordered: false needs a sink that stores positions atomically, and sink %s does not: use such a sink, or remove ordered: false", p.cfg.Sink.Plugin)}
	}
	ln := &laneSinks{sts: sts, sinks: make([]*protocol.Sink, len(sts)), checkpoints: make([]record.Position, len(sts))}
	errs := make([]error, len(sts))
	opened := make([]bool, len(sts))
	var wg sync.WaitGroup
	for i, s := range sts {
		ln.sinks[i] = s.conn.Sink()
		wg.Go(func() {
			if errs[i] = p.open(ctx, s, p.cfg.Sink, ln.sinks[i].Open, nil, hasDLQ); errs[i] != nil {
				return
			}
			opened[i] = true
			ln.checkpoints[i], errs[i] = p.resumePoint(ctx, s, p.cfg.Sink, ln.sinks[i], stateBuffer)
		})
	}
	wg.Wait()
	for i := range sts {
		if opened[i] {
			st.closes = append(st.closes, ln.sinks[i].Close)
		}
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return ln, nil
}

// comparer returns what orders the positions of buf, the plugin of stage s.
func (p *Pipeline) comparer(s *stage, buf *protocol.Buffer) comparer {
	return func(ctx context.Context, a, b record.Position) (int, error) {
		ctx, cancel := context.WithTimeout(ctx, p.cfg.OpenTimeout)
		defer cancel()
		c, err := buf.ComparePositions(ctx, a, b)
		if err != nil {
			return 0, s.fail("comparing positions", err)
		}
		return c, nil
	}
}

// bufferAfter returns where the buffer is read from: after what the sink holds (sinkHas), or with lanes
// (ln) after the smallest of the lanes' positions, with what each lane skips. A pipeline with ordered:
// false whose buffer cannot compare positions is refused here. An ordered sink holding a lane's position
// (the pipeline ran with ordered: false) is reported in the laneResume, for checkOrdering.
func (p *Pipeline) bufferAfter(ctx context.Context, bufSt *stage, buf *protocol.Buffer, ln *laneSinks, sinkHas record.Position) (record.Position, laneResume, error) {
	if ln == nil {
		if n, pos, ok := parseLanePosition(sinkHas); ok {
			return pos, laneResume{changed: fmt.Sprintf("ordered: false, lanes: %d", n)}, nil
		}
		return sinkHas, laneResume{}, nil
	}
	if _, err := buf.ComparePositions(ctx, nil, nil); err != nil {
		if errors.Is(err, protocol.ErrNoCompare) {
			return nil, laneResume{}, permanentError{fmt.Errorf("ordered: false needs a buffer that compares its positions (to resume each lane after a restart), and buffer %s does not: use a buffer that does (redis), or remove ordered: false",
				p.cfg.Buffer.Plugin)}
		}
		return nil, laneResume{}, bufSt.fail("comparing positions", err)
	}
	r, err := resumeLanes(ctx, p.comparer(bufSt, buf), p.cfg.Lanes, ln.checkpoints)
	return r.after, r, err
}

// checkOrdering refuses to start a pipeline whose sink positions were stored with another ordering
// (ordered, or another number of lanes) while its buffer, open now, still holds records: the records of a
// key would move to another sink, and some would be delivered twice or not at all. With the buffer empty
// it starts afresh: no lane skips anything.
func (p *Pipeline) checkOrdering(ctx context.Context, bufSt *stage, r *laneResume) error {
	if r.changed == "" {
		return nil
	}
	now := "ordered: true"
	if p.cfg.Lanes > 0 {
		now = fmt.Sprintf("ordered: false, lanes: %d", p.cfg.Lanes)
	}
	m, err := p.stageMetrics(ctx, bufSt, fillInterval)
	if err == nil && m.Fill != nil && m.Fill.Entries == 0 {
		p.log.Warn("the sink positions were stored with another ordering; the buffer is empty, so the pipeline starts with the new one",
			"stored_with", r.changed, "now", now)
		clear(r.stored)
		return nil
	}
	holds := "does not say how many records it holds"
	if err == nil && m.Fill != nil {
		holds = fmt.Sprintf("still holds %d records", m.Fill.Entries)
	}
	return permanentError{fmt.Errorf("%w: the sink positions were stored with %s and the pipeline now has %s, and the buffer %s: the records of a key would move to another sink, and some would be delivered twice or lost. Run the pipeline with %s until its buffer is empty (sluice status shows what it holds), then change the setting",
		errLanesChanged, r.changed, now, holds, r.changed)}
}

// laneSegments builds the dispatcher that reads the buffer's stream in and a segment per lane writing to
// the lane's sink. Each lane holds at most max_in_flight_bytes / lanes unacknowledged.
func (p *Pipeline) laneSegments(ctx context.Context, in *protocol.ReadStream, bufSt *stage, buf *protocol.Buffer, ln *laneSinks,
	r laneResume, dead *deadLetters) (*dispatcher, []*segment, error) {
	n := p.cfg.Lanes
	d := newDispatcher(in, bufSt, n, ctx.Done(), p.drain)
	d.cmp = p.comparer(bufSt, buf)
	copy(d.skip, r.stored)
	d.acked = func(pos record.Position) { p.setPosition(stateBuffer, pos) }
	d.skipDone = func(k int64) {
		p.log.Info("every lane is past the position it had stored", "records_skipped", k)
	}
	if m := p.cfg.Meter; m != nil {
		d.read = m.Stage(bufSt.role).Read
	}
	if p.cfg.SinkSteps != nil {
		d.steps = p.sinkSteps(dead)
	}
	lm, _ := p.cfg.Meter.(LaneMeter)
	window := max(int64(p.cfg.MaxInFlightBytes/n), minLaneWindow)
	segs := make([]*segment, n)
	for i, s := range ln.sts {
		out, err := ln.sinks[i].Write(ctx)
		if err != nil {
			return nil, nil, s.fail("writing", err)
		}
		seg := p.segment(fmt.Sprintf("buffer → sink lane %d", i), d.lanes[i], out, bufSt, s, p.cfg.Sink, stateBuffer, true)
		seg.acked, seg.upMeter = nil, nil // the dispatcher acknowledges and measures the buffer
		seg.window, seg.maxWindow = semaphore.NewWeighted(window), window
		seg.rejects = dead
		if lm != nil {
			delivered := seg.delivered
			seg.delivered = func(k int) {
				delivered(k)
				lm.LaneWritten(i, k)
			}
		}
		segs[i] = seg
	}
	return d, segs, nil
}

// minLaneWindow is the least a lane may hold unacknowledged, however many lanes share max_in_flight_bytes.
const minLaneWindow = 256 << 10
