package memory_test

import (
	"context"
	"encoding/binary"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice/plugins/memory"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/sdk/sdktest"
)

var pluginBinary string

func TestMain(m *testing.M) { sdktest.Main(m, "./cmd/memory", &pluginBinary) }

func TestAcceptance(t *testing.T) {
	sdktest.Buffer(t, memory.Plugin(), sdktest.BufferConfig{
		Settings: func(*testing.T) map[string]any { return map[string]any{"max_records": 1000} },
		Volatile: true,
		Binary:   pluginBinary,
	})
}

func pos(n uint64) record.Position { return binary.BigEndian.AppendUint64(nil, n) }

func open(t *testing.T, maxRecords int, after record.Position) *memory.Buffer {
	t.Helper()
	b := &memory.Buffer{}
	err := b.Open(context.Background(), sdk.OpenRequest{
		Settings: sdk.Settings{"max_records": float64(maxRecords)}, After: after, MaxBatchRecords: 100})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

func TestOpenInvalidSettings(t *testing.T) {
	err := (&memory.Buffer{}).Open(context.Background(), sdk.OpenRequest{Settings: sdk.Settings{"max_records": 0.0}})
	if !errors.Is(err, sdk.ErrInvalidSettings) {
		t.Fatalf("Open with max_records 0 = %v, want an ErrInvalidSettings", err)
	}
}

// batch returns a batch of n records with payloads "first".."first+n-1", accounting through source
// position last.
func batch(first, n int, last uint64) record.Batch {
	recs := make([]record.Record, n)
	for i := range recs {
		recs[i] = record.Record{Position: pos(uint64(first + i)), Op: record.OpInsert, Payload: []byte(strconv.Itoa(first + i))}
	}
	return record.Batch{Records: recs, Position: pos(last)}
}

// appendAsync runs Append in a goroutine and returns a channel that receives its result.
func appendAsync(ctx context.Context, b *memory.Buffer, bt record.Batch) <-chan error {
	done := make(chan error, 1)
	go func() { done <- b.Append(ctx, bt) }()
	return done
}

func blocked(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("Append returned (%v) while the buffer is full", err)
	case <-time.After(50 * time.Millisecond):
	}
}

func returns(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Append still blocked")
	}
}

func readAll(t *testing.T, b *memory.Buffer) []record.Record {
	t.Helper()
	recs, err := b.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestBackpressure(t *testing.T) {
	for _, tc := range []struct {
		name       string
		max        int
		fill       int // records appended first
		next       int // records in the batch that must wait
		ackThrough uint64
		stillFull  bool // after the ack the batch still does not fit
	}{
		{name: "full until an ack makes room", max: 10, fill: 10, next: 1, ackThrough: 5},
		{name: "one ack is not enough", max: 10, fill: 10, next: 6, ackThrough: 3, stillFull: true},
		{name: "oversized batch waits for an empty queue", max: 10, fill: 4, next: 12, ackThrough: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := open(t, tc.max, nil)
			ctx := context.Background()
			if err := b.Append(ctx, batch(0, tc.fill, 100)); err != nil {
				t.Fatal(err)
			}
			readAll(t, b)
			done := appendAsync(ctx, b, batch(tc.fill, tc.next, 200))
			blocked(t, done)
			if err := b.Ack(ctx, pos(tc.ackThrough)); err != nil {
				t.Fatal(err)
			}
			if tc.stillFull {
				blocked(t, done)
				if err := b.Ack(ctx, pos(uint64(tc.fill))); err != nil {
					t.Fatal(err)
				}
			}
			returns(t, done)
			cp, _ := b.Checkpoint(ctx)
			if !cp.Equal(pos(200)) {
				t.Fatalf("Checkpoint = %x, want the last batch's position", []byte(cp))
			}
		})
	}
}

func TestAppendCancelledWhileFull(t *testing.T) {
	b := open(t, 2, nil)
	if err := b.Append(context.Background(), batch(0, 2, 1)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := appendAsync(ctx, b, batch(2, 1, 2))
	blocked(t, done)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Append = %v, want context.Canceled", err)
	}
	if cp, _ := b.Checkpoint(ctx); !cp.Equal(pos(1)) {
		t.Fatalf("a cancelled Append moved the checkpoint to %x", []byte(cp))
	}
	// Close wakes a blocked Append too.
	done = appendAsync(context.Background(), b, batch(2, 1, 2))
	blocked(t, done)
	_ = b.Close(context.Background())
	if err := <-done; err == nil {
		t.Fatal("Append on a closed buffer succeeded")
	}
}

func TestReadPositionsAndReopen(t *testing.T) {
	for _, tc := range []struct {
		name      string
		after     record.Position
		wantFirst uint64
	}{
		{"new", nil, 1},
		{"reopened after 41: numbering continues, nothing is skipped", pos(41), 42},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := open(t, 100, tc.after)
			ctx := context.Background()
			bt := batch(0, 3, 7)
			bt.Records = append(bt.Records[:1], append([]record.Record{{Position: pos(99), Op: record.OpHeartbeat}}, bt.Records[1:]...)...)
			if err := b.Append(ctx, bt); err != nil {
				t.Fatal(err)
			}
			// A position-only batch moves the checkpoint and stores nothing.
			if err := b.Append(ctx, record.Batch{Position: pos(9)}); err != nil {
				t.Fatal(err)
			}
			recs := readAll(t, b)
			if len(recs) != 3 {
				t.Fatalf("read %d records, want 3 (the heartbeat is not stored)", len(recs))
			}
			for i, r := range recs {
				if !r.Position.Equal(pos(tc.wantFirst+uint64(i))) || string(r.Payload) != strconv.Itoa(i) {
					t.Fatalf("record %d: position %x payload %q", i, []byte(r.Position), r.Payload)
				}
			}
			if cp, _ := b.Checkpoint(ctx); !cp.Equal(pos(9)) {
				t.Fatalf("Checkpoint = %x, want 9", []byte(cp))
			}
			start := time.Now()
			if recs := readAll(t, b); len(recs) != 0 {
				t.Fatalf("second Read returned %d records", len(recs))
			}
			if d := time.Since(start); d < 150*time.Millisecond || d > 3*time.Second { // generous: a loaded CI machine
				t.Fatalf("an empty Read took %v, want about 200ms", d)
			}
			if err := b.Ack(ctx, pos(tc.wantFirst+2)); err != nil {
				t.Fatal(err)
			}
			if n := b.Len(); n != 0 {
				t.Fatalf("%d records queued after acking all", n)
			}
		})
	}
}

// TestCopies checks that the buffer keeps its own copy of appended bytes: the SDK reuses a batch's memory
// once Append returns.
func TestCopies(t *testing.T) {
	b := open(t, 100, nil)
	payload := []byte("original")
	if err := b.Append(context.Background(), record.Batch{Records: []record.Record{{Position: pos(1), Payload: payload, Key: payload}}, Position: pos(1)}); err != nil {
		t.Fatal(err)
	}
	copy(payload, "XXXXXXXX")
	recs := readAll(t, b)
	if string(recs[0].Payload) != "original" || string(recs[0].Key) != "original" {
		t.Fatalf("stored record changed with the caller's memory: %q %q", recs[0].Payload, recs[0].Key)
	}
}

// TestAppendWithoutPosition: a batch without position is stored and leaves the checkpoint as it was.
func TestAppendWithoutPosition(t *testing.T) {
	ctx := context.Background()
	b := open(t, 100, nil)
	if err := b.Append(ctx, record.Batch{Position: pos(7), Records: []record.Record{{Position: pos(7), Payload: []byte("a")}}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Append(ctx, record.Batch{Records: []record.Record{{Payload: []byte("b")}}}); err != nil {
		t.Fatal(err)
	}
	if cp, _ := b.Checkpoint(ctx); !cp.Equal(pos(7)) {
		t.Fatalf("checkpoint %x after a batch without position, want 7", []byte(cp))
	}
	recs, err := b.Read(ctx)
	if err != nil || len(recs) != 2 || string(recs[1].Payload) != "b" {
		t.Fatalf("read %d records (%v), want both", len(recs), err)
	}
}
