package sdktest

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
)

// BufferConfig configures the acceptance checks of a buffer.
type BufferConfig struct {
	// Settings returns the settings for one check (the suite applies the spec's defaults). It is called
	// once per check and every instance of the check gets the same settings; each call must name a fresh,
	// empty queue (a new stream key, directory…). Nil means no settings.
	Settings func(t *testing.T) map[string]any
	// Records is how many data records each check appends (default 100). The buffer must hold them all
	// at once: the checks append everything before reading.
	Records int
	// Record returns the i-th record to append; the suite sets its position. Default: DefaultRecord.
	Record func(i int) record.Record
	// Volatile says the buffer's contents die with its instance (an in-memory queue): the resume and
	// restart checks, which reopen the buffer in a fresh instance, are skipped.
	Volatile bool
	// Binary is the path of the plugin's binary (see Build); when set, every check also runs against it
	// as a subprocess.
	Binary string
	// Env is added to the minimal environment the binary runs with.
	Env []string
}

// Buffer runs the buffer acceptance checks against p, in process ("local") and, when cfg.Binary is set,
// as a subprocess ("process"). Each check is a subtest:
//
//   - spec: as for Source, for a buffer.
//   - flow: Open; Checkpoint is nil; a Read stream opened before anything is appended; an Append stream
//     carrying the batches the Sink checks write (with a heartbeat and a position-only batch) gets an ack
//     for every batch, in order; Checkpoint then equals the last appended batch's position. After
//     CloseSend on Append, the Read stream yields every data record, in order, with the buffer's own
//     positions (non-empty, distinct) in batches of at most MaxBatchRecords, and ends once everything is
//     acknowledged. Heartbeat records may or may not be stored; they are not compared. Close succeeds and
//     no goroutine is left behind.
//   - resume: an instance acknowledges the batches through about half the records and is closed; a fresh
//     one opened with After = the last acknowledged buffer position has the same Checkpoint and reads
//     exactly the records after it, with the same positions.
//   - restart: the same, with the first instance aborted (a crash: no Close; a subprocess is killed with
//     SIGKILL).
//
// Resume and restart are skipped for a Volatile buffer. Buffer must not run in parallel with other tests
// of the same package (see Source).
func Buffer(t *testing.T, p sdk.Plugin, cfg BufferConfig) {
	t.Helper()
	requireStage(t, p, sdk.KindBuffer)
	if cfg.Records <= 0 {
		cfg.Records = 100
	}
	if cfg.Record == nil {
		cfg.Record = DefaultRecord
	}
	for _, m := range modes(p, cfg.Binary, cfg.Env) {
		t.Run(m.name, func(t *testing.T) {
			t.Run("spec", func(t *testing.T) { checkSpec(t, m, p, sdk.KindBuffer) })
			b := bufferCheck{p: p, cfg: cfg, m: m}
			t.Run("flow", b.flow)
			t.Run("resume", func(t *testing.T) { b.reopen(t, false) })
			t.Run("restart", func(t *testing.T) { b.reopen(t, true) })
		})
	}
}

type bufferCheck struct {
	p   sdk.Plugin
	cfg BufferConfig
	m   mode
}

func (b *bufferCheck) open(t *testing.T, ctx context.Context, settings map[string]any, after record.Position) (*protocol.Conn, *protocol.Buffer) {
	t.Helper()
	c := b.m.start(t)
	buf := c.Buffer()
	err := buf.Open(ctx, protocol.OpenRequest{Pipeline: "sdktest", Settings: settings, After: after, MaxBatchRecords: batchRecords})
	if err != nil {
		t.Fatalf("Open(after %x): %v", []byte(after), err)
	}
	return c, buf
}

func (b *bufferCheck) checkpoint(t *testing.T, ctx context.Context, buf *protocol.Buffer, want record.Position, when string) {
	t.Helper()
	got, err := buf.Checkpoint(ctx)
	if err != nil {
		t.Fatalf("Checkpoint %s: %v", when, err)
	}
	if !got.Equal(want) {
		t.Fatalf("Checkpoint %s = %x, want %x", when, []byte(got), []byte(want))
	}
}

// appendAll appends batches on a new Append stream and closes it, checking the acks.
func appendAll(t *testing.T, ctx context.Context, buf *protocol.Buffer, batches []record.Batch) {
	t.Helper()
	ws, err := buf.Append(ctx)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	w := watchAcks(ws)
	w.send(t, batches)
	w.waitAcked(t)
	w.close(t)
}

// readData receives from rs until n data records (heartbeats not counted) have arrived.
func readData(t *testing.T, rs *protocol.ReadStream, r *received, n int, ack func(int) bool) []record.Record {
	t.Helper()
	for {
		data := dataOf(r.recs)
		if len(data) >= n {
			return data
		}
		recv(t, rs, r, len(r.recs)+n-len(data), ack)
	}
}

func dataOf(recs []record.Record) []record.Record {
	var out []record.Record
	for _, r := range recs {
		if r.Op != record.OpHeartbeat {
			out = append(out, r)
		}
	}
	return out
}

func (b *bufferCheck) flow(t *testing.T) {
	ctx := begin(t)
	settings := settingsFor(t, b.p, sdk.KindBuffer, b.cfg.Settings)
	pl := makePlan(b.cfg.Records, b.cfg.Record)
	_, buf := b.open(t, ctx, settings, nil)
	b.checkpoint(t, ctx, buf, nil, "of a new buffer")
	rs, err := buf.Read(ctx)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	appendAll(t, ctx, buf, pl.batches)
	b.checkpoint(t, ctx, buf, pl.batches[len(pl.batches)-1].Position, "after the last append")
	r := &received{}
	got := readData(t, rs, r, len(pl.data), func(int) bool { return true })
	compareData(t, pl.data, got, 0)
	expectEnd(t, rs, r)
	if err := buf.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// reopen runs the resume (crash false) and restart (crash true) checks.
func (b *bufferCheck) reopen(t *testing.T, crash bool) {
	if b.cfg.Volatile {
		t.Skip("BufferConfig.Volatile: the buffer's contents die with its instance, so there is nothing to reopen")
	}
	ctx := begin(t)
	settings := settingsFor(t, b.p, sdk.KindBuffer, b.cfg.Settings)
	pl := makePlan(b.cfg.Records, b.cfg.Record)
	last := pl.batches[len(pl.batches)-1].Position

	c, buf := b.open(t, ctx, settings, nil)
	appendAll(t, ctx, buf, pl.batches)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rs, err := buf.Read(rctx)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	first := &received{}
	half := len(pl.data) / 2
	all := readData(t, rs, first, len(pl.data), func(i int) bool { return len(dataOf(first.recs[:first.ends[i]])) <= half })
	var after record.Position
	from := 0
	if first.acked > 0 {
		acked := first.recs[:first.ends[first.acked-1]]
		after, from = acked[len(acked)-1].Position, len(dataOf(acked))
	}
	if crash {
		c.Abort() // a crash: no Close
	} else {
		stopStream(cancel, rs)
		if err := buf.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}

	_, buf = b.open(t, ctx, settings, after)
	b.checkpoint(t, ctx, buf, last, "after reopening")
	rs, err = buf.Read(ctx)
	if err != nil {
		t.Fatalf("Read after reopening: %v", err)
	}
	appendAll(t, ctx, buf, nil) // the input has ended: the read stream ends once drained
	rest := &received{}
	got := readData(t, rs, rest, len(pl.data)-from, func(int) bool { return true })
	compareData(t, pl.data[from:], got, from)
	for i := range got {
		if want := all[from+i].Position; !got[i].Position.Equal(want) {
			t.Fatalf("record %d has buffer position %x after reopening, %x before", from+i, []byte(got[i].Position), []byte(want))
		}
	}
	expectEnd(t, rs, rest)
	if err := buf.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// compareData checks that got holds exactly the data of want, in order.
func compareData(t *testing.T, want, got []record.Record, offset int) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("read %d data records, want %d", len(got), len(want))
	}
	for i := range want {
		if err := sameData(want[i], got[i]); err != nil {
			t.Fatalf("record %d: %v", offset+i, err)
		}
	}
}
