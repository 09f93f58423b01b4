package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms"
)

// keyedSource emits records 0..n-1 with position = seq and key = seq % keys, so that each key has many
// records whose order can be checked.
type keyedSource struct {
	sdk.UnimplementedSource
	n, keys uint64
	next    uint64
}

func (s *keyedSource) Open(_ context.Context, req sdk.OpenRequest) error {
	if req.After != nil {
		s.next = seqOf(req.After) + 1
	}
	return nil
}

func (s *keyedSource) Read(context.Context) ([]record.Record, error) {
	if s.next >= s.n {
		return nil, sdk.ErrDone
	}
	var recs []record.Record
	for len(recs) < 100 && s.next < s.n {
		recs = append(recs, record.Record{Position: pos(s.next), Op: record.OpInsert,
			Key: []byte("k" + strconv.FormatUint(s.next%s.keys, 10)), Payload: fmt.Appendf(nil, `{"seq":%d}`, s.next),
			Encoding: record.EncodingJSON})
		s.next++
	}
	return recs, nil
}

// laneWorld holds what the sinks of the lanes wrote, by the pipeline id each was opened with: a
// transactional sink per lane (a failed write leaves nothing behind).
type laneWorld struct {
	mu      sync.Mutex
	written map[string][]uint64
	stored  map[string]record.Position
	opens   []sdk.OpenRequest
	failID  string // the sink opened with this id fails once when it has written failAt records
	failAt  int
	failErr error // what it fails with (nil: a transient error)
}

type laneSink struct {
	sdk.UnimplementedSink
	w  *laneWorld
	id string
}

func (s *laneSink) Open(_ context.Context, req sdk.OpenRequest) error {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	s.id = req.Pipeline
	s.w.opens = append(s.w.opens, req)
	return nil
}

func (s *laneSink) Checkpoint(context.Context) (record.Position, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return s.w.stored[s.id].Clone(), nil
}

func (s *laneSink) Write(_ context.Context, b record.Batch) error {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	var seqs []uint64
	for _, r := range b.Records {
		var seq uint64
		if _, err := fmt.Sscanf(string(r.Payload), `{"seq":%d}`, &seq); err != nil {
			return err
		}
		seqs = append(seqs, seq)
	}
	if s.id == s.w.failID && s.w.failAt > 0 && len(s.w.written[s.id])+len(seqs) >= s.w.failAt {
		s.w.failAt = 0
		if s.w.failErr != nil {
			return s.w.failErr
		}
		return errors.New("sink crashed mid-transaction") // nothing written, nothing stored
	}
	s.w.written[s.id] = append(s.w.written[s.id], seqs...)
	s.w.stored[s.id] = b.Position.Clone()
	return nil
}

// cmpBuffer is the test's buffer that orders its positions, and reports its fill (the records after the
// last acknowledged one).
type cmpBuffer struct {
	memBuffer
	acked *int64 // records acknowledged, shared across instances (the buffer's own state)
}

func (b *cmpBuffer) Open(ctx context.Context, req sdk.OpenRequest) error {
	req.Metrics.BufferFill(func() sdk.Fill {
		b.w.mu.Lock()
		defer b.w.mu.Unlock()
		return sdk.Fill{Entries: int64(len(b.w.entries)) - *b.acked}
	})
	return b.memBuffer.Open(ctx, req)
}

func (b *cmpBuffer) Ack(_ context.Context, p record.Position) error {
	b.w.mu.Lock()
	defer b.w.mu.Unlock()
	*b.acked = max(*b.acked, int64(seqOf(p))+1)
	return nil
}

func (b *cmpBuffer) ComparePositions(a, c record.Position) (int, error) {
	if len(a) != 8 || len(c) != 8 {
		return 0, fmt.Errorf("%x or %x is not a position of this buffer", a, c)
	}
	return cmp.Compare(seqOf(a), seqOf(c)), nil
}

type laneFixture struct {
	w        *laneWorld
	bw       *bufWorld
	acked    int64
	n, keys  uint64
	compares bool // the buffer compares its positions
	// sinkSteps, when set, are the pipeline's sink_transforms; sinkKey is then the key they give seq.
	sinkSteps *transforms.Program
	sinkKey   func(seq uint64) string
}

func newLaneFixture(n, keys uint64) *laneFixture {
	return &laneFixture{w: &laneWorld{written: map[string][]uint64{}, stored: map[string]record.Position{}},
		bw: &bufWorld{}, n: n, keys: keys, compares: true}
}

func (f *laneFixture) pipeline(lanes int) *Pipeline {
	plugin := func() sdk.Plugin {
		pl := sdk.Plugin{Spec: spec("t", true),
			NewSource: func() sdk.Source { return &keyedSource{n: f.n, keys: f.keys} },
			NewBuffer: func() sdk.Buffer { return &cmpBuffer{memBuffer: memBuffer{w: f.bw}, acked: &f.acked} },
			NewSink:   func() sdk.Sink { return &laneSink{w: f.w} }}
		if !f.compares {
			pl.NewBuffer = func() sdk.Buffer { return &memBuffer{w: f.bw} }
		}
		return pl
	}
	cfg := config(true, true)
	cfg.Lanes = lanes
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 10 * time.Millisecond}
	cfg.SinkSteps = f.sinkSteps
	return New(cfg, &fakeStarter{plugins: map[string]func() sdk.Plugin{"t": plugin}}, &memStore{}, slog.New(slog.DiscardHandler))
}

// check verifies that the lanes' sinks hold every record once, each key's records in one lane and in
// order, and that a key is in the lane its hash names.
func (f *laneFixture) check(t *testing.T, lanes int) {
	t.Helper()
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	seen := make([]int, f.n)
	for lane := range lanes {
		id := laneID("p", lane)
		last := map[string]uint64{}
		for _, s := range f.w.written[id] {
			seen[s]++
			key := "k" + strconv.FormatUint(s%f.keys, 10)
			if f.sinkKey != nil {
				key = f.sinkKey(s)
			}
			if want := laneOf(fnv.New32a(), []byte(key), lanes); want != lane {
				t.Fatalf("record %d (key %s) written by lane %d, want lane %d", s, key, lane, want)
			}
			if prev, ok := last[key]; ok && prev >= s {
				t.Fatalf("lane %d wrote record %d after %d: key %s out of order", lane, s, prev, key)
			}
			last[key] = s
		}
	}
	for s, c := range seen {
		if c != 1 {
			t.Fatalf("record %d written %d times", s, c)
		}
	}
}

// laneMeter is a testMeter that counts what each lane wrote.
type laneMeter struct {
	*testMeter
	lanes map[int]int
}

func (m *laneMeter) LaneWritten(lane, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lanes[lane] += n
}

func TestLanesDeliver(t *testing.T) {
	f := newLaneFixture(20000, 97)
	p := f.pipeline(4)
	m := &laneMeter{testMeter: newTestMeter(), lanes: map[int]int{}}
	p.cfg.Meter = m
	run(t, p)
	// The buffer's reads are counted once (by the dispatcher), the sink's writes per lane.
	if r, w := m.read["buffer"][0], m.written["sink"][0]; r != 20000 || w != 20000 {
		t.Errorf("meter: %d records read from the buffer, %d written by the sinks; want 20000 each", r, w)
	}
	sum := 0
	for lane, n := range m.lanes {
		f.w.mu.Lock()
		if want := len(f.w.written[laneID("p", lane)]); n != want {
			t.Errorf("meter: lane %d wrote %d records, its sink holds %d", lane, n, want)
		}
		f.w.mu.Unlock()
		sum += n
	}
	if len(m.lanes) != 4 || sum != 20000 {
		t.Errorf("meter: lanes wrote %v, want 4 lanes and 20000 records", m.lanes)
	}
	f.check(t, 4)
	if got := p.Stats.Delivered.Load(); got != 20000 {
		t.Errorf("Delivered = %d, want 20000", got)
	}
	// Every lane got records, was opened as its lane, and stored a lane position.
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	for lane := range 4 {
		id := laneID("p", lane)
		if len(f.w.written[id]) == 0 {
			t.Errorf("lane %d (%s) wrote nothing", lane, id)
		}
		n, bufPos, ok := parseLanePosition(f.w.stored[id])
		if !ok || n != 4 || bufPos == nil {
			t.Errorf("lane %d stored %x, want a position of 4 lanes", lane, f.w.stored[id])
		}
	}
	lanesOpened := map[int]bool{}
	for _, o := range f.w.opens {
		if o.Lanes != 4 || o.Pipeline != laneID("p", o.Lane) {
			t.Errorf("sink opened with pipeline %q, lane %d of %d", o.Pipeline, o.Lane, o.Lanes)
		}
		lanesOpened[o.Lane] = true
	}
	if len(lanesOpened) != 4 {
		t.Errorf("lanes opened: %v, want 0..3", lanesOpened)
	}
	if f.acked != 20000 {
		t.Errorf("buffer acknowledged through %d records, want 20000", f.acked)
	}
	if got := p.Status().Lanes; got != 4 {
		t.Errorf("status shows %d lanes, want 4", got)
	}
}

// Records go to the lane of the key the sink writes: the key sink_transforms give them.
func TestLanesDispatchByTheSinkKey(t *testing.T) {
	f := newLaneFixture(5000, 97)
	f.sinkSteps = compile(t, transforms.Step{Kind: transforms.Key, Expr: transforms.Expr{Text: `string(seq % 7)`}})
	f.sinkKey = func(seq uint64) string { return strconv.FormatUint(seq%7, 10) }
	run(t, f.pipeline(4))
	f.check(t, 4)
}

// A lane's sink fails mid-run: the pipeline restarts, reads the buffer from the smallest lane position,
// and every lane skips what it holds: nothing is written twice or lost, and each key stays in order.
func TestLanesRestartSkipsWhatLanesHold(t *testing.T) {
	f := newLaneFixture(20000, 97)
	f.w.failID, f.w.failAt = laneID("p", 2), 3000
	p := f.pipeline(4)
	run(t, p)
	if p.Stats.Restarts.Load() != 1 {
		t.Fatalf("Restarts = %d, want 1", p.Stats.Restarts.Load())
	}
	f.check(t, 4)
}

// A new host process (a new Pipeline) resumes lanes from their sinks' checkpoints alone.
func TestLanesResumeInNewProcess(t *testing.T) {
	f := newLaneFixture(10000, 31)
	// The first failure ends the run, as a killed host would.
	f.w.failID, f.w.failAt, f.w.failErr = laneID("p", 1), 1500, sdk.Permanentf("host killed")
	p := f.pipeline(3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Run(ctx); err == nil {
		t.Fatal("Run succeeded; the lane's sink should have failed it")
	}
	f.acked = 0 // the buffer lost its acknowledgements: the lanes' positions alone must do
	run(t, f.pipeline(3))
	f.check(t, 3)
}

func TestLanesRefuseChangedLanes(t *testing.T) {
	f := newLaneFixture(5000, 13)
	f.w.failID, f.w.failAt, f.w.failErr = laneID("p", 0), 300, sdk.Permanentf("host killed")
	p := f.pipeline(4)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = p.Run(ctx)
	// The buffer still holds records: another number of lanes, or ordered, is refused.
	for _, lanes := range []int{2, 0} {
		err := f.pipeline(lanes).Run(ctx)
		if !errors.Is(err, errLanesChanged) || !strings.Contains(err.Error(), "lanes: 4") {
			t.Fatalf("lanes %d after lanes 4 with records in the buffer: %v, want a refusal naming lanes: 4", lanes, err)
		}
	}
	// With the same number it completes; then the buffer is empty and the number may change.
	run(t, f.pipeline(4))
	f.check(t, 4)
	run(t, f.pipeline(2)) // the source is done: it only starts and completes
	f.check(t, 4)
}

func TestLanesNeedComparingBuffer(t *testing.T) {
	f := newLaneFixture(100, 3)
	f.compares = false
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := f.pipeline(2).Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "compares its positions") || !isPermanent(err) {
		t.Fatalf("Run with a buffer that does not compare positions: %v, want a permanent refusal", err)
	}
}

// seqCmp orders the test's positions (8-byte sequence numbers), counting calls.
type seqCmp struct{ calls int }

func (c *seqCmp) compare(_ context.Context, a, b record.Position) (int, error) {
	c.calls++
	if len(a) != 8 || len(b) != 8 {
		return 0, fmt.Errorf("bad position %x / %x", a, b)
	}
	return cmp.Compare(seqOf(a), seqOf(b)), nil
}

func TestResumeLanes(t *testing.T) {
	lp := func(lanes int, n uint64) record.Position { return lanePosition(lanes, pos(n)) }
	for _, tc := range []struct {
		name    string
		cps     []record.Position
		stored  []record.Position
		after   record.Position
		changed string
	}{
		{"new", []record.Position{nil, nil, nil}, []record.Position{nil, nil, nil}, nil, ""},
		{"all stored", []record.Position{lp(3, 9), lp(3, 4), lp(3, 7)}, []record.Position{pos(9), pos(4), pos(7)}, pos(4), ""},
		{"one lane never wrote", []record.Position{lp(3, 9), nil, lp(3, 7)}, []record.Position{pos(9), nil, pos(7)}, nil, ""},
		// The pipeline ran ordered: lane 0 holds the ordered sink's bare position, a floor for every lane.
		{"after ordered", []record.Position{pos(50), nil, lp(3, 20)}, []record.Position{pos(50), pos(50), pos(50)}, pos(50), ""},
		{"after ordered, a lane ahead", []record.Position{pos(50), lp(3, 80), nil}, []record.Position{pos(50), pos(80), pos(50)}, pos(50), ""},
		{"other lanes", []record.Position{lp(4, 9), nil, lp(3, 7)}, []record.Position{pos(9), nil, pos(7)}, nil, "lanes: 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c seqCmp
			r, err := resumeLanes(context.Background(), c.compare, 3, tc.cps)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(r.stored, tc.stored, record.Position.Equal) || !r.after.Equal(tc.after) || r.changed != tc.changed {
				t.Errorf("resumeLanes = stored %x after %x changed %q; want %x %x %q", r.stored, r.after, r.changed, tc.stored, tc.after, tc.changed)
			}
		})
	}
}

func TestLanePosition(t *testing.T) {
	p := lanePosition(7, record.Position("1700000000000-5.3"))
	n, bp, ok := parseLanePosition(p)
	if !ok || n != 7 || string(bp) != "1700000000000-5.3" {
		t.Errorf("parseLanePosition(lanePosition(7, …)) = %d %q %v", n, bp, ok)
	}
	for _, bare := range []record.Position{record.Position("1700000000000-5"), pos(3), nil, lanePrefix} {
		if _, got, ok := parseLanePosition(bare); ok || !got.Equal(bare) {
			t.Errorf("parseLanePosition(%x) = %x, %v; want a bare position", bare, got, ok)
		}
	}
}

// fakeUpstream is a buffer's read stream for the dispatcher: batches to hand out, acks received.
type fakeUpstream struct {
	mu      sync.Mutex
	batches []*protocol.Batch
	acks    []uint64
}

func (u *fakeUpstream) Recv() (*protocol.Batch, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.batches) == 0 {
		return nil, io.EOF
	}
	b := u.batches[0]
	u.batches = u.batches[1:]
	return b, nil
}

func (u *fakeUpstream) Ack(seq uint64) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.acks = append(u.acks, seq)
	return nil
}

// batchOf returns buffer batch seq holding the records at positions from..to, keys given by key.
func batchOf(seq uint64, from, to uint64, key func(uint64) string) *protocol.Batch {
	var recs []record.Record
	for i := from; i <= to; i++ {
		recs = append(recs, record.Record{Position: pos(i), Key: []byte(key(i)), Payload: []byte("x")})
	}
	b := protocol.NewBatch(recs, pos(to))
	b.Seq = seq
	return b
}

// keyFor returns a key that the hash puts in lane among lanes.
func keyFor(lane, lanes int) string {
	for i := 0; ; i++ {
		k := "key" + strconv.Itoa(i)
		if laneOf(fnv.New32a(), []byte(k), lanes) == lane {
			return k
		}
	}
}

func TestDispatcherLowWaterMark(t *testing.T) {
	k0, k1 := keyFor(0, 2), keyFor(1, 2)
	up := &fakeUpstream{}
	d := newDispatcher(up, nil, 2, make(chan struct{}), make(chan struct{}))
	var acked []uint64
	d.acked = func(p record.Position) { acked = append(acked, seqOf(p)) }
	ctx := context.Background()
	// Batch 1: both lanes; batch 2: lane 1 only; batch 3: lane 0 only.
	batches := []*protocol.Batch{
		batchOf(1, 0, 3, func(i uint64) string { return []string{k0, k1}[i%2] }),
		batchOf(2, 4, 5, func(uint64) string { return k1 }),
		batchOf(3, 6, 7, func(uint64) string { return k0 }),
	}
	for _, b := range batches {
		subs, err := d.split(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.dispatch(ctx, b, subs); err != nil {
			t.Fatal(err)
		}
		for lane, s := range subs {
			if s == nil {
				continue
			}
			got := <-d.lanes[lane].ch
			if n, p, _ := parseLanePosition(got.Position); n != 2 || seqOf(p) != seqOf(b.Position) || got.Seq != b.Seq {
				t.Fatalf("lane %d got batch seq %d position %x; want seq %d, the batch's position", lane, got.Seq, got.Position, b.Seq)
			}
		}
	}
	step := func(lane int, seq uint64, wantAcks ...uint64) {
		t.Helper()
		if err := d.lanes[lane].Ack(seq); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(up.acks, wantAcks) {
			t.Fatalf("after lane %d acked %d: buffer acked %v, want %v", lane, seq, up.acks, wantAcks)
		}
	}
	step(1, 2)    // lane 1 holds batches 1 and 2, lane 0 nothing yet: batch 1 is not complete
	step(0, 1, 2) // lane 0 holds batch 1: batches 1 and 2 are complete, acknowledged at once
	step(0, 3, 2, 3)
	if !slices.Equal(acked, []uint64{5, 7}) {
		t.Errorf("positions acknowledged %v, want [5 7]", acked)
	}
}

func TestDispatcherSkips(t *testing.T) {
	lanes := 3
	keys := []string{keyFor(0, lanes), keyFor(1, lanes), keyFor(2, lanes)}
	key := func(i uint64) string { return keys[i%3] }
	up := &fakeUpstream{}
	d := newDispatcher(up, nil, lanes, make(chan struct{}), make(chan struct{}))
	var c seqCmp
	d.cmp = c.compare
	// Lane 0 holds through 105 (straddling batch 2), lane 1 through 99 (the end of batch 1), lane 2 nothing.
	d.skip = []record.Position{pos(105), pos(99), nil}
	ctx := context.Background()
	got := make([][]uint64, lanes)
	for seq, r := range [][2]uint64{{90, 99}, {100, 119}, {120, 129}} {
		b := batchOf(uint64(seq+1), r[0], r[1], key)
		subs, err := d.split(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		for l, s := range subs {
			if s == nil {
				continue
			}
			recs, _ := s.Records()
			for _, rec := range recs {
				got[l] = append(got[l], seqOf(rec.Position))
			}
		}
	}
	for l := range lanes {
		for _, s := range got[l] {
			if int(s%3) != l {
				t.Fatalf("lane %d got record %d of another lane", l, s)
			}
			if (l == 0 && s <= 105) || (l == 1 && s <= 99) {
				t.Fatalf("lane %d got record %d, which it holds", l, s)
			}
		}
	}
	if want := (129-105)/3 + 0; len(got[0]) != want {
		t.Errorf("lane 0 got %d records (%v), want %d", len(got[0]), got[0], want)
	}
	if want := (129 - 99) / 3; len(got[1]) != want {
		t.Errorf("lane 1 got %d records, want %d", len(got[1]), want)
	}
	if want := (129 - 90 + 1) / 3; len(got[2]) != want {
		t.Errorf("lane 2 got %d records, want %d", len(got[2]), want)
	}
	if d.skipping() {
		t.Error("still skipping after every lane got past its position")
	}
	// Batch 1: 2 compares (lane 0 and lane 1 last), batch 2: lane 0 first/last and a binary search of 20
	// records, lane 1 last+first; batch 3: none.
	if c.calls > 14 {
		t.Errorf("%d comparisons, want a handful per batch while skipping", c.calls)
	}
}

// BenchmarkDispatcherSplit measures what the dispatcher adds per record: splitting a buffer's batch of
// 1024 records of about 200 bytes among 4 lanes and encoding each lane's part, as the lanes' Sends do.
func BenchmarkDispatcherSplit(b *testing.B) {
	recs := make([]record.Record, 1024)
	payload := []byte(`{"seq":123456,"pad":"` + strings.Repeat("x", 170) + `"}`)
	for i := range recs {
		recs[i] = record.Record{Position: []byte(fmt.Sprintf("1796086609022-%d.%d", i/64, i%64)), Op: record.OpInsert,
			Key: strconv.AppendInt(nil, int64(i*7919), 10), Payload: payload, Encoding: record.EncodingJSON,
			Time: time.Now()}
	}
	wire := record.Encode(nil, recs)
	d := newDispatcher(&fakeUpstream{}, nil, 4, make(chan struct{}), make(chan struct{}))
	ctx := context.Background()
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		in := protocol.NewEncodedBatch(wire, len(recs), recs[len(recs)-1].Position)
		subs, err := d.split(ctx, in)
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range subs {
			if s != nil {
				_ = s.Encoded()
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
}
