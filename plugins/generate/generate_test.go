package generate_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice/plugins/generate"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/sdk/sdktest"
)

var pluginBinary string

func TestMain(m *testing.M) { sdktest.Main(m, "./cmd/generate", &pluginBinary) }

func TestAcceptance(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings map[string]any
		done     bool
	}{
		{"unlimited", map[string]any{}, false},
		{"count", map[string]any{"count": 100, "payload_bytes": 64}, true},
		{"rate", map[string]any{"rate": 5000}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sdktest.Source(t, generate.Plugin(), sdktest.SourceConfig{
				Settings: func(*testing.T) map[string]any { return tc.settings },
				Records:  100,
				Done:     tc.done,
				Binary:   pluginBinary,
			})
		})
	}
}

// open opens a generate source directly (no protocol) with the host's defaults applied to settings.
func open(t testing.TB, settings map[string]any, after record.Position, maxBatch int) *generate.Source {
	t.Helper()
	s := &generate.Source{}
	full := sdk.Settings{"count": 0.0, "rate": 0.0, "payload_bytes": 200.0}
	for k, v := range settings {
		full[k] = v
	}
	if err := s.Open(context.Background(), sdk.OpenRequest{Settings: full, After: after, MaxBatchRecords: maxBatch}); err != nil {
		t.Fatal(err)
	}
	return s
}

func pos(seq uint64) record.Position { return binary.BigEndian.AppendUint64(nil, seq) }

func TestRecords(t *testing.T) {
	for _, tc := range []struct {
		name      string
		settings  map[string]any
		after     record.Position
		maxBatch  int
		wantFirst int64
		wantN     int   // records until ErrDone (-1: read 3 batches, no end)
		wantSize  []int // payload size per record, for the first records
	}{
		{name: "default size", settings: nil, maxBatch: 10, wantFirst: 0, wantN: -1, wantSize: []int{200, 200}},
		{name: "exact size across digit counts", settings: map[string]any{"count": 12.0, "payload_bytes": 30.0}, maxBatch: 5,
			wantFirst: 0, wantN: 12, wantSize: []int{30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30}},
		{name: "too small to pad", settings: map[string]any{"count": 3.0, "payload_bytes": 1.0}, maxBatch: 5,
			wantFirst: 0, wantN: 3, wantSize: []int{9, 9, 9}},
		{name: "resume after 41", settings: map[string]any{"count": 50.0}, after: pos(41), maxBatch: 4,
			wantFirst: 42, wantN: 8},
		{name: "resume at the end", settings: map[string]any{"count": 50.0}, after: pos(49), maxBatch: 4,
			wantFirst: 50, wantN: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, tc.settings, tc.after, tc.maxBatch)
			next, n := tc.wantFirst, 0
			for batch := 0; tc.wantN >= 0 || batch < 3; batch++ {
				recs, err := s.Read(context.Background())
				if errors.Is(err, sdk.ErrDone) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(recs) == 0 || len(recs) > tc.maxBatch {
					t.Fatalf("batch of %d records, max %d", len(recs), tc.maxBatch)
				}
				for _, r := range recs {
					var v struct {
						Seq *int64 `json:"seq"`
						Pad string `json:"pad"`
					}
					if err := json.Unmarshal(r.Payload, &v); err != nil || v.Seq == nil {
						t.Fatalf("payload %q: %v", r.Payload, err)
					}
					switch {
					case *v.Seq != next:
						t.Fatalf("seq %d, want %d", *v.Seq, next)
					case string(r.Key) != strconv.FormatInt(next, 10):
						t.Fatalf("key %q, want %d", r.Key, next)
					case !r.Position.Equal(pos(uint64(next))):
						t.Fatalf("position %x, want %x", []byte(r.Position), []byte(pos(uint64(next))))
					case r.Op != record.OpInsert || r.Encoding != record.EncodingJSON:
						t.Fatalf("op %s encoding %s", r.Op, r.Encoding)
					}
					if n < len(tc.wantSize) && len(r.Payload) != tc.wantSize[n] {
						t.Fatalf("record %d: payload %d bytes (%s), want %d", n, len(r.Payload), r.Payload, tc.wantSize[n])
					}
					next++
					n++
				}
			}
			if tc.wantN >= 0 && n != tc.wantN {
				t.Fatalf("%d records before ErrDone, want %d", n, tc.wantN)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings sdk.Settings
		after    record.Position
		invalid  bool // a settings error (sdk.ErrInvalidSettings), which no retry fixes
	}{
		{"negative count", sdk.Settings{"count": -1.0}, nil, true},
		{"negative rate", sdk.Settings{"rate": -2.0}, nil, true},
		{"fractional count", sdk.Settings{"count": 1.5}, nil, true},
		{"negative payload", sdk.Settings{"payload_bytes": -1.0}, nil, true},
		{"payload over the cap", sdk.Settings{"payload_bytes": float64(generate.MaxPayloadBytes + 1)}, nil, true},
		{"foreign position", sdk.Settings{}, record.Position("0-1"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := (&generate.Source{}).Open(context.Background(), sdk.OpenRequest{Settings: tc.settings, After: tc.after, MaxBatchRecords: 10})
			if err == nil {
				t.Fatal("Open succeeded")
			}
			if got := errors.Is(err, sdk.ErrInvalidSettings); got != tc.invalid {
				t.Errorf("errors.Is(%v, ErrInvalidSettings) = %v, want %v", err, got, tc.invalid)
			}
		})
	}
}

// TestLargePayloadReads checks that a Read of large payloads builds about a batch's bytes, not
// MaxBatchRecords of them (1024 records of 16 MiB would be 16 GiB).
func TestLargePayloadReads(t *testing.T) {
	s := &generate.Source{}
	settings := sdk.Settings{"count": 0.0, "rate": 0.0, "payload_bytes": float64(generate.MaxPayloadBytes)}
	if err := s.Open(context.Background(), sdk.OpenRequest{Settings: settings, MaxBatchRecords: 1024, MaxBatchBytes: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	recs, err := s.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || len(recs[0].Payload) != generate.MaxPayloadBytes {
		t.Fatalf("Read returned %d records (first of %d bytes), want one of %d bytes", len(recs), len(recs[0].Payload), generate.MaxPayloadBytes)
	}
	s = &generate.Source{}
	settings["payload_bytes"] = 1000.0
	if err := s.Open(context.Background(), sdk.OpenRequest{Settings: settings, MaxBatchRecords: 1024, MaxBatchBytes: 100 << 10}); err != nil {
		t.Fatal(err)
	}
	if recs, err = s.Read(context.Background()); err != nil || len(recs) != 96 {
		t.Fatalf("Read of 1000-byte payloads with 100 KiB batches: %d records, %v; want 96 (102400 / 1056 bytes, rounded down)", len(recs), err)
	}
}

// TestRate checks that records are spread evenly — no Read returns much more than a millisecond's worth —
// and that the long-run rate is the one configured.
func TestRate(t *testing.T) {
	for _, tc := range []struct {
		rate    float64
		maxRead int
	}{
		{200, 2},
		{20000, 60},   // ~20 per millisecond
		{100000, 256}, // ~100 per millisecond, more after a late timer
	} {
		t.Run(strconv.FormatFloat(tc.rate, 'f', -1, 64), func(t *testing.T) {
			s := open(t, map[string]any{"rate": tc.rate}, nil, 256)
			start := time.Now()
			n := 0
			var sizes []int
			for time.Since(start) < 300*time.Millisecond {
				recs, err := s.Read(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				sizes = append(sizes, len(recs))
				n += len(recs)
			}
			// Smooth, not bursty: the typical Read is small. A loaded machine may stall a few Reads (the
			// source then catches up with a larger one), so the median is checked, not the maximum.
			slices.Sort(sizes)
			if median := sizes[len(sizes)/2]; median > tc.maxRead {
				t.Fatalf("the median Read returned %d records; want at most %d", median, tc.maxRead)
			}
			want := tc.rate * time.Since(start).Seconds()
			if float64(n) < want*0.8 || float64(n) > want*1.1+1 {
				t.Fatalf("%d records in %v at %v/s, want about %.0f", n, time.Since(start), tc.rate, want)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	slow := open(t, map[string]any{"rate": 0.1}, nil, 100)
	if _, err := slow.Read(ctx); err != nil { // the first record is due at once
		t.Fatal(err)
	}
	if _, err := slow.Read(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Read with a cancelled context while waiting: %v, want context.Canceled", err)
	}
}

// BenchmarkRead measures the source alone (Read calls, as the SDK makes them) and through the protocol
// in process (the SDK's encoding and an in-memory gRPC stream), with 200-byte payloads in batches of 1024.
func BenchmarkRead(b *testing.B) {
	b.Run("direct", func(b *testing.B) {
		s := open(b, nil, nil, 1024)
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			recs, err := s.Read(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			n += len(recs)
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/record")
	})
	b.Run("protocol-local", func(b *testing.B) {
		c, err := protocol.Local(generate.Plugin())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Kill()
		ctx := context.Background()
		src := c.Source()
		settings := map[string]any{"count": 0, "rate": 0, "payload_bytes": 200}
		if err := src.Open(ctx, protocol.OpenRequest{Settings: settings, MaxBatchRecords: 1024}); err != nil {
			b.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		rs, err := src.Read(rctx)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			batch, err := rs.Recv()
			if err != nil {
				b.Fatal(err)
			}
			n += batch.Len()
			if err := rs.Ack(batch.Seq); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/record")
	})
}
