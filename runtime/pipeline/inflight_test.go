package pipeline

import (
	"context"
	"log/slog"
	"maps"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// inflightStore is a memStore that also keeps in-flight counts, as state.Store does.
type inflightStore struct {
	memStore
	counts map[string]int64
}

func (s *inflightStore) LoadInFlight(p, st string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[p+"/"+st], nil
}

func (s *inflightStore) StoreInFlight(p, st string, n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.counts == nil {
		s.counts = map[string]int64{}
	}
	s.counts[p+"/"+st] = n
	return nil
}

// image is what a host killed now would leave behind: a copy of the store.
func (s *inflightStore) image() *inflightStore {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &inflightStore{counts: maps.Clone(s.counts)}
	c.m = map[string]record.Position{}
	for k, v := range s.m {
		c.m[k] = v.Clone()
	}
	return c
}

// stallSink writes like worldSink until the world holds stallAfter records; the batch that gets it there is
// written and never acknowledged, and so is everything after it: records written that a restart sends
// again.
type stallSink struct {
	worldSink
	stallAfter int
}

func (s *stallSink) Write(ctx context.Context, b record.Batch) error {
	if len(s.w.seqs()) >= s.stallAfter {
		<-ctx.Done()
		return ctx.Err()
	}
	if err := s.worldSink.Write(ctx, b); err != nil {
		return err
	}
	if len(s.w.seqs()) >= s.stallAfter {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// TestRedeliveredAfterHostCrash: a host killed while records it sent to a sink without atomic positions are
// unacknowledged leaves their count in the store; the next host reads it, counts those records as
// redelivered, and so reports at least as many as the duplicates the crash causes.
func TestRedeliveredAfterHostCrash(t *testing.T) {
	const n, stallAfter = 3000, 1000
	f := newFixture(n)
	store := &inflightStore{}
	cfg := config(false, false)
	stalling := &fakeStarter{plugins: map[string]func() sdk.Plugin{"t": func() sdk.Plugin {
		return sdk.Plugin{Spec: spec("t", false),
			NewSource: func() sdk.Source { return f.src() },
			NewBuffer: func() sdk.Buffer { return &memBuffer{w: f.bw} }, // unused: the spec has a buffer stage
			NewSink:   func() sdk.Sink { return &stallSink{worldSink: worldSink{w: f.w}, stallAfter: stallAfter} }}
	}}}
	first := New(cfg, stalling, store, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()

	// Wait until the sink has stalled and the count has settled: the host sent everything it could.
	var left int64
	deadline := time.Now().Add(20 * time.Second)
	for stable := 0; stable < 5; {
		if time.Now().After(deadline) {
			t.Fatalf("the sink did not stall with records in flight (world holds %d, count %d)", len(f.w.seqs()), left)
		}
		time.Sleep(50 * time.Millisecond)
		now, _ := store.LoadInFlight("p", stateSource)
		if len(f.w.seqs()) >= stallAfter && now > 0 && now == left {
			stable++
		} else {
			stable, left = 0, now
		}
	}
	crashed := store.image() // the host dies here: nothing it does from now on reaches the disk
	cancel()
	<-done

	second := New(cfg, f.starter(false), crashed, slog.New(slog.DiscardHandler))
	run(t, second)
	dups := checkAll(t, f.w.seqs(), n, false)
	if dups == 0 {
		t.Fatal("the sink wrote nothing that was not acknowledged; the test wants duplicates")
	}
	if got := second.Stats.Redelivered.Load(); got != left || got < int64(dups) {
		t.Fatalf("redelivered %d, want the %d records the crashed host left in flight, at least the %d duplicates", got, left, dups)
	}
	if after, _ := crashed.LoadInFlight("p", stateSource); after != 0 {
		t.Errorf("in-flight count after a completed run: %d, want 0", after)
	}
	t.Logf("%d records in flight at the crash, %d duplicates", left, dups)
}
