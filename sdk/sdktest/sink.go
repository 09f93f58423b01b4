package sdktest

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
)

// SinkConfig configures the acceptance checks of a sink.
type SinkConfig struct {
	// Settings returns the settings for one check (the suite applies the spec's defaults). It is called
	// once per check and every instance of the check gets the same settings; each call must name a fresh,
	// empty destination (a new file, topic or table), so that a sink with AtomicPosition starts without a
	// checkpoint. Nil means no settings.
	Settings func(t *testing.T) map[string]any
	// Records is how many data records each check writes (default 100).
	Records int
	// Record returns the i-th record to write; the suite sets its position. Default: DefaultRecord.
	Record func(i int) record.Record
	// Verify, when set, is called at the end of each check with the check's settings and the data
	// records written, in order (heartbeats excluded), and checks that the destination holds them.
	Verify func(t *testing.T, settings map[string]any, written []record.Record)
	// Binary is the path of the plugin's binary (see Build); when set, every check also runs against it
	// as a subprocess.
	Binary string
	// Env is added to the minimal environment the binary runs with.
	Env []string
}

// Sink runs the sink acceptance checks against p, in process ("local") and, when cfg.Binary is set, as a
// subprocess ("process"). Each check is a subtest:
//
//   - spec: as for Source, for a sink.
//   - write: Open, then one Write stream carrying batches of 1 to 16 records, a heartbeat record, a batch
//     accounting through a position past its last record, and a final batch with no records that only
//     advances the position. Acks arrive in order and cover every batch, and the stream ends after
//     CloseSend. With AtomicPosition, Checkpoint is nil before the first write and equals the last
//     batch's position after. Close succeeds, Verify sees the records, and no goroutine is left behind.
//   - restart: an instance writes half the batches, waits for their acks and is aborted (a crash: no
//     Close; a subprocess is killed with SIGKILL); a fresh instance with the same settings (with
//     AtomicPosition: whose Checkpoint is the last acked batch's position) writes the rest. Verify sees
//     every record once.
//
// Sink must not run in parallel with other tests of the same package (see Source).
func Sink(t *testing.T, p sdk.Plugin, cfg SinkConfig) {
	t.Helper()
	requireStage(t, p, sdk.KindSink)
	if cfg.Records <= 0 {
		cfg.Records = 100
	}
	if cfg.Record == nil {
		cfg.Record = DefaultRecord
	}
	for _, m := range modes(p, cfg.Binary, cfg.Env) {
		t.Run(m.name, func(t *testing.T) {
			t.Run("spec", func(t *testing.T) { checkSpec(t, m, p, sdk.KindSink) })
			s := sinkCheck{p: p, cfg: cfg, m: m, atomic: p.Spec.Sink.Capabilities.AtomicPosition}
			t.Run("write", s.write)
			t.Run("restart", s.restart)
		})
	}
}

type sinkCheck struct {
	p      sdk.Plugin
	cfg    SinkConfig
	m      mode
	atomic bool
}

func (s *sinkCheck) open(t *testing.T, ctx context.Context, settings map[string]any) (*protocol.Conn, *protocol.Sink) {
	t.Helper()
	c := s.m.start(t)
	snk := c.Sink()
	if err := snk.Open(ctx, protocol.OpenRequest{Pipeline: "sdktest", Settings: settings}); err != nil {
		t.Fatalf("Open: %v", err)
	}
	return c, snk
}

// checkpoint checks, for a sink with AtomicPosition, that Checkpoint returns want.
func (s *sinkCheck) checkpoint(t *testing.T, ctx context.Context, snk *protocol.Sink, want record.Position, when string) {
	t.Helper()
	if !s.atomic {
		return
	}
	got, err := snk.Checkpoint(ctx)
	if err != nil {
		t.Fatalf("Checkpoint %s: %v", when, err)
	}
	if !got.Equal(want) {
		t.Fatalf("Checkpoint %s = %x, want %x", when, []byte(got), []byte(want))
	}
}

func (s *sinkCheck) write(t *testing.T) {
	ctx := begin(t)
	settings := settingsFor(t, s.p, sdk.KindSink, s.cfg.Settings)
	pl := makePlan(s.cfg.Records, s.cfg.Record)
	_, snk := s.open(t, ctx, settings)
	s.checkpoint(t, ctx, snk, nil, "before any write")
	ws, err := snk.Write(ctx)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	w := watchAcks(ws)
	w.send(t, pl.batches)
	w.close(t)
	s.checkpoint(t, ctx, snk, pl.batches[len(pl.batches)-1].Position, "after the last batch")
	if err := snk.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if s.cfg.Verify != nil {
		s.cfg.Verify(t, settings, pl.data)
	}
}

func (s *sinkCheck) restart(t *testing.T) {
	ctx := begin(t)
	settings := settingsFor(t, s.p, sdk.KindSink, s.cfg.Settings)
	pl := makePlan(s.cfg.Records, s.cfg.Record)
	half := len(pl.batches) / 2

	c, snk := s.open(t, ctx, settings)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ws, err := snk.Write(wctx)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	w := watchAcks(ws)
	w.send(t, pl.batches[:half])
	w.waitAcked(t)
	stored := pl.batches[half-1].Position
	s.checkpoint(t, ctx, snk, stored, "after half the batches")
	c.Abort() // a crash: no CloseSend, no Close

	_, snk = s.open(t, ctx, settings)
	s.checkpoint(t, ctx, snk, stored, "after a restart")
	ws, err = snk.Write(ctx)
	if err != nil {
		t.Fatalf("Write after a restart: %v", err)
	}
	w = watchAcks(ws)
	w.send(t, pl.batches[half:])
	w.close(t)
	s.checkpoint(t, ctx, snk, pl.batches[len(pl.batches)-1].Position, "after the last batch")
	if err := snk.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if s.cfg.Verify != nil {
		s.cfg.Verify(t, settings, pl.data)
	}
}
