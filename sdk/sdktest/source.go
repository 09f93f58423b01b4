package sdktest

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
)

// SourceConfig configures the acceptance checks of a source.
type SourceConfig struct {
	// Settings returns the settings for one check, as a connector file would give them (the suite applies
	// the spec's defaults). It is called once per check, and every instance a check starts gets the same
	// settings: a source whose data lives elsewhere (a file, a database) prepares it here, with at least
	// Records records. Nil means no settings.
	Settings func(t *testing.T) map[string]any
	// Records is how many records each check reads (default 100, at least 4).
	Records int
	// Done says the source, with these settings, ends (sdk.ErrDone) after exactly Records records. The
	// checks then also require the stream to end, and only once every batch is acknowledged. Without
	// Done, the checks stop the source after Records records, as a host stops a stage.
	Done bool
	// Same compares a record read after resuming with the record read at that place the first time, and
	// says how they differ. Default: Same, which requires equal positions and data; a source whose records
	// are not reproducible (a change stream that stamps read times) provides a looser comparison.
	Same func(want, got record.Record) error
	// Binary is the path of the plugin's binary (see Build). When set, every check also runs against the
	// binary as a subprocess, over mutual TLS, exactly as the host starts it.
	Binary string
	// Env is added to the minimal environment (PATH, HOME, TMPDIR, TZ) the binary runs with.
	Env []string
}

// Source runs the source acceptance checks against p, in process ("local") and, when cfg.Binary is set,
// as a subprocess ("process"). Each check is a subtest:
//
//   - spec: the plugin serves a valid spec that declares a source, the same spec the library returns,
//     with every default readable as its setting's type.
//   - read: Open, then Read Records records in batches of at most MaxBatchRecords (7), each record with
//     a non-empty position distinct from the others and each batch accounting through its last record;
//     acks are cumulative (every other batch is acknowledged). A Done source then ends the stream, but
//     only after the last batch is acknowledged. Close succeeds and no goroutine is left behind.
//   - resume: a fresh instance opened with After = the position of record Records/2 reads exactly the
//     records after it, compared with Same.
//   - restart: an instance acknowledges the batches through about half the records and is aborted
//     (a crash: no Close; a subprocess is killed with SIGKILL); a fresh one opened after the last
//     acknowledged position reads the rest.
//
// Source must not run in parallel with other tests of the same package: the leak check looks at every
// goroutine of the process.
func Source(t *testing.T, p sdk.Plugin, cfg SourceConfig) {
	t.Helper()
	requireStage(t, p, sdk.KindSource)
	if cfg.Records == 0 {
		cfg.Records = 100
	}
	if cfg.Records < 4 {
		t.Fatalf("SourceConfig.Records is %d; the checks need at least 4", cfg.Records)
	}
	if cfg.Same == nil {
		cfg.Same = Same
	}
	for _, m := range modes(p, cfg.Binary, cfg.Env) {
		t.Run(m.name, func(t *testing.T) {
			t.Run("spec", func(t *testing.T) { checkSpec(t, m, p, sdk.KindSource) })
			s := sourceCheck{p: p, cfg: cfg, m: m}
			t.Run("read", s.read)
			t.Run("resume", s.resume)
			t.Run("restart", s.restart)
		})
	}
}

type sourceCheck struct {
	p   sdk.Plugin
	cfg SourceConfig
	m   mode
}

// open starts an instance and opens its source after after.
func (s *sourceCheck) open(t *testing.T, ctx context.Context, settings map[string]any, after record.Position) (*protocol.Conn, *protocol.Source) {
	t.Helper()
	c := s.m.start(t)
	src := c.Source()
	err := src.Open(ctx, protocol.OpenRequest{Pipeline: "sdktest", Settings: settings, After: after, MaxBatchRecords: batchRecords})
	if err != nil {
		t.Fatalf("Open(after %x): %v", []byte(after), err)
	}
	return c, src
}

// readAll reads n records from a fresh instance opened after after, acknowledging batches as ack says,
// runs check (if not nil) on them, then ends the read (a Done source ends its stream; any other is
// stopped) and closes the source.
func (s *sourceCheck) readAll(t *testing.T, ctx context.Context, settings map[string]any, after record.Position, n int,
	ack func(int) bool, check func([]record.Record)) *received {
	t.Helper()
	_, src := s.open(t, ctx, settings, after)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rs, err := src.Read(sctx)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	r := &received{}
	recv(t, rs, r, n, ack)
	if check != nil {
		check(r.recs)
	}
	if s.cfg.Done {
		expectEnd(t, rs, r)
	} else {
		r.ackAll(t, rs)
		stopStream(cancel, rs)
	}
	if err := src.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return r
}

func (s *sourceCheck) read(t *testing.T) {
	ctx := begin(t)
	settings := settingsFor(t, s.p, sdk.KindSource, s.cfg.Settings)
	r := s.readAll(t, ctx, settings, nil, s.cfg.Records, func(i int) bool { return i%2 == 1 }, nil)
	if s.cfg.Done && len(r.recs) != s.cfg.Records {
		t.Fatalf("read %d records; the config says the source has %d", len(r.recs), s.cfg.Records)
	}
}

func (s *sourceCheck) resume(t *testing.T) {
	ctx := begin(t)
	settings := settingsFor(t, s.p, sdk.KindSource, s.cfg.Settings)
	n := s.cfg.Records
	first := s.readAll(t, ctx, settings, nil, n, func(int) bool { return true }, nil)
	k := n/2 - 1
	s.readAll(t, ctx, settings, first.recs[k].Position, n-k-1, func(int) bool { return true }, func(got []record.Record) {
		s.compare(t, first.recs[k+1:n], got, k+1)
	})
}

func (s *sourceCheck) restart(t *testing.T) {
	ctx := begin(t)
	settings := settingsFor(t, s.p, sdk.KindSource, s.cfg.Settings)
	n := s.cfg.Records
	c, src := s.open(t, ctx, settings, nil)
	rs, err := src.Read(ctx)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	first := &received{}
	recv(t, rs, first, n, func(i int) bool { return first.ends[i] <= n/2 })
	c.Abort() // a crash: no Close
	var after record.Position
	from := 0
	if first.acked > 0 {
		from = first.ends[first.acked-1]
		after = first.recs[from-1].Position
	}
	s.readAll(t, ctx, settings, after, n-from, func(int) bool { return true }, func(got []record.Record) {
		s.compare(t, first.recs[from:n], got, from)
	})
}

// compare checks records read after a resume against the first read.
func (s *sourceCheck) compare(t *testing.T, want, got []record.Record, offset int) {
	t.Helper()
	for i := range want {
		if err := s.cfg.Same(want[i], got[i]); err != nil {
			t.Fatalf("record %d, read again after resuming: %v", offset+i, err)
		}
	}
}
