package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms"
)

// deadSink keeps every record it is given, with its metadata: the dead-letter sink of these tests.
type deadSink struct {
	sdk.UnimplementedSink
	mu   *sync.Mutex
	recs *[]record.Record
}

func (s *deadSink) Open(context.Context, sdk.OpenRequest) error { return nil }
func (s *deadSink) Write(_ context.Context, b record.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range b.Records {
		r.Payload = append([]byte(nil), r.Payload...)
		r.Meta = append(record.Meta(nil), r.Meta...)
		*s.recs = append(*s.recs, r)
	}
	return nil
}

// rejectingSink is worldSink that rejects the records whose seq is in reject.
type rejectingSink struct {
	worldSink
	reject map[uint64]bool
	dlq    bool
}

func (s *rejectingSink) Open(_ context.Context, req sdk.OpenRequest) error {
	s.dlq = req.DeadLetter
	return nil
}

func (s *rejectingSink) Write(ctx context.Context, b record.Batch) error {
	var keep []record.Record
	var rej []sdk.Rejection
	for i, r := range b.Records {
		var seq uint64
		_, _ = fmt.Sscanf(string(r.Payload), `{"seq":%d}`, &seq) // only seq is wanted: the rest may not match
		if s.reject[seq] {
			if !s.dlq {
				return sdk.Permanentf("record %d is too large and there is no dead-letter sink", seq)
			}
			rej = append(rej, sdk.Rejection{Index: i, Reason: fmt.Sprintf("seq %d is too large", seq)})
			continue
		}
		keep = append(keep, r)
	}
	if err := s.worldSink.Write(ctx, record.Batch{Records: keep, Position: b.Position}); err != nil {
		return err
	}
	if rej != nil {
		return &sdk.RejectError{Rejections: rej}
	}
	return nil
}

// markingSource is countSource that marks the records in dead as dead letters.
type markingSource struct {
	*countSource
	dead map[uint64]bool
}

func (s *markingSource) Read(ctx context.Context) ([]record.Record, error) {
	recs, err := s.countSource.Read(ctx)
	for i := range recs {
		if s.dead[seqOf(recs[i].Position)] {
			recs[i].Meta = recs[i].Meta.Set(record.MetaError, "event too large")
		}
	}
	return recs, err
}

type stepsFixture struct {
	*fixture
	mu     sync.Mutex
	dead   []record.Record
	reject map[uint64]bool
	marked map[uint64]bool
}

func (f *stepsFixture) deadSeqs() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []uint64
	for _, r := range f.dead {
		out = append(out, seqOf(r.Position))
	}
	return out
}

func (f *stepsFixture) pipeline(t *testing.T, cfg Config) *Pipeline {
	t.Helper()
	plugins := f.starter(cfg.Sink.Atomic).plugins
	base := plugins["t"]
	plugins["t"] = func() sdk.Plugin {
		p := base()
		if f.reject != nil {
			p.NewSink = func() sdk.Sink { return &rejectingSink{worldSink: worldSink{w: f.w}, reject: f.reject} }
		}
		if f.marked != nil {
			p.NewSource = func() sdk.Source { return &markingSource{countSource: f.src(), dead: f.marked} }
		}
		return p
	}
	plugins["dlq"] = func() sdk.Plugin {
		return sdk.Plugin{Spec: sdk.Spec{Name: "dlq", Version: "0", Summary: "test", Sink: &sdk.Stage{Summary: "d"}},
			NewSink: func() sdk.Sink { return &deadSink{mu: &f.mu, recs: &f.dead} }}
	}
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 10 * time.Millisecond}
	return New(cfg, &fakeStarter{plugins: plugins}, f.store, slog.New(slog.DiscardHandler))
}

func compile(t *testing.T, steps ...transforms.Step) *transforms.Program {
	t.Helper()
	p, err := transforms.Compile(steps)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStepsFilterAndSet(t *testing.T) {
	for _, buffered := range []bool{false, true} {
		t.Run(fmt.Sprintf("buffered=%v", buffered), func(t *testing.T) {
			f := &stepsFixture{fixture: newFixture(1001)}
			cfg := config(true, buffered)
			steps := []transforms.Step{
				{Kind: transforms.Filter, Expr: transforms.Expr{Text: "seq % 2 == 0"}},
				{Kind: transforms.Set, Fields: []transforms.Field{{Path: "seq", Expr: transforms.Expr{Text: "seq / 2"}}}},
			}
			toInt := transforms.Step{Kind: transforms.Set,
				Fields: []transforms.Field{{Path: "seq", Expr: transforms.Expr{Text: "int(seq)"}}}}
			if buffered {
				cfg.SinkSteps = compile(t, toInt) // seq / 2 is a float (expr's division)
			} else {
				steps = append(steps, toInt)
			}
			cfg.Steps = compile(t, steps...)
			p := f.pipeline(t, cfg)
			run(t, p)
			checkAll(t, f.w.seqs(), 501, true)
			// The last source record (1000) passed; the stored position is the last one read either way.
			want := pos(1000)
			if buffered {
				want = pos(500) // the buffer's own position of the 501st entry
			}
			if !f.w.stored.Equal(want) {
				t.Fatalf("stored position %x, want %x", []byte(f.w.stored), []byte(want))
			}
		})
	}
}

func TestFilteredRecordsAdvancePositions(t *testing.T) {
	f := &stepsFixture{fixture: newFixture(300)}
	cfg := config(true, false)
	cfg.Steps = compile(t, transforms.Step{Kind: transforms.Filter, Expr: transforms.Expr{Text: "seq < 10"}})
	run(t, f.pipeline(t, cfg))
	checkAll(t, f.w.seqs(), 10, true)
	if !f.w.stored.Equal(pos(299)) {
		t.Fatalf("stored position %x, want the last source position even though it was filtered", []byte(f.w.stored))
	}
}

// failing fails on seq 57 only, and changes no record.
var failing = transforms.Step{Kind: transforms.Filter, Expr: transforms.Expr{Text: `seq == 57 ? int("not a number") > 0 : true`}}

func TestOnErrorStop(t *testing.T) {
	f := &stepsFixture{fixture: newFixture(200)}
	cfg := config(true, false)
	cfg.Steps = compile(t, failing)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := f.pipeline(t, cfg).Run(ctx)
	if err == nil || !isPermanent(err) {
		t.Fatalf("Run = %v, want a permanent failure", err)
	}
	for _, want := range []string{"transforms[0].filter", "position 0000000000000039", `"not a number"`, "on_error: stop"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	for _, s := range f.w.seqs() {
		if s >= 57 {
			t.Fatalf("seq %d was delivered after the failing record", s)
		}
	}
}

func TestOnErrorDLQ(t *testing.T) {
	f := &stepsFixture{fixture: newFixture(200)}
	cfg := config(true, false)
	cfg.Steps = compile(t, failing)
	cfg.OnError, cfg.DeadLetter = OnErrorDLQ, &Stage{Plugin: "dlq"}
	p := f.pipeline(t, cfg)
	run(t, p)
	got := f.w.seqs()
	if len(got) != 199 {
		t.Fatalf("sink got %d records, want 199", len(got))
	}
	if d := f.deadSeqs(); len(d) != 1 || d[0] != 57 {
		t.Fatalf("dead letters %v, want [57]", d)
	}
	r := f.dead[0]
	if string(r.Payload) != `{"seq":57}` {
		t.Errorf("dead letter payload %s, want the original", r.Payload)
	}
	for k, want := range map[string]string{record.MetaErrorStage: "transforms[0].filter", record.MetaPipeline: "p"} {
		if v, _ := r.Meta.Get(k); v != want {
			t.Errorf("dead letter %s = %q, want %q", k, v, want)
		}
	}
	if e, _ := r.Meta.Get(record.MetaError); !strings.Contains(e, "not a number") {
		t.Errorf("dead letter error %q", e)
	}
	if p.Stats.DeadLetters.Load() != 1 {
		t.Errorf("DeadLetters = %d", p.Stats.DeadLetters.Load())
	}
}

func TestSinkRejectsGoToDLQ(t *testing.T) {
	f := &stepsFixture{fixture: newFixture(500), reject: map[uint64]bool{3: true, 250: true, 499: true}}
	cfg := config(true, false)
	cfg.DeadLetter = &Stage{Plugin: "dlq"}
	p := f.pipeline(t, cfg)
	run(t, p)
	if n := len(f.w.seqs()); n != 497 {
		t.Fatalf("sink wrote %d records, want 497", n)
	}
	d := f.deadSeqs()
	if fmt.Sprint(d) != "[3 250 499]" {
		t.Fatalf("dead letters %v, want [3 250 499]", d)
	}
	if st, _ := f.dead[0].Meta.Get(record.MetaErrorStage); st != "sink" {
		t.Errorf("stage %q, want sink", st)
	}
	if got := p.Stats.Delivered.Load(); got != 497 {
		t.Errorf("Delivered = %d, want 497", got)
	}
}

func TestSinkRejectWithoutDLQFails(t *testing.T) {
	f := &stepsFixture{fixture: newFixture(100), reject: map[uint64]bool{3: true}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := f.pipeline(t, config(true, false))
	err := p.Run(ctx)
	// The sink cannot write record 3 and there is no dead-letter sink: the pipeline fails at once, without
	// dropping it and without restarting in vain.
	if !errors.Is(err, sdk.ErrPermanent) || !strings.Contains(err.Error(), "record 3 is too large") {
		t.Fatalf("Run = %v, want the sink's permanent error", err)
	}
	for _, s := range f.w.seqs() {
		if s >= 3 {
			t.Fatalf("seq %d delivered past the unwritable record (err %v)", s, err)
		}
	}
	if n := p.Stats.Restarts.Load(); n != 0 {
		t.Fatalf("%d restarts for a permanent failure", n)
	}
	if p.State() != Failed {
		t.Fatalf("state %v, want failed", p.State())
	}
}

func TestSourceDeadLetters(t *testing.T) {
	f := &stepsFixture{fixture: newFixture(300), marked: map[uint64]bool{10: true, 11: true}}
	cfg := config(false, true)
	cfg.DeadLetter = &Stage{Plugin: "dlq"}
	run(t, f.pipeline(t, cfg))
	if n := len(f.w.seqs()); n != 298 {
		t.Fatalf("sink wrote %d, want 298", n)
	}
	if d := f.deadSeqs(); fmt.Sprint(d) != "[10 11]" {
		t.Fatalf("dead letters %v", d)
	}
	if st, _ := f.dead[0].Meta.Get(record.MetaErrorStage); st != "source" {
		t.Errorf("stage %q, want source", st)
	}
}
