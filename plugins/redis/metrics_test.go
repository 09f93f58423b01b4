package redis_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/sluicehq/sluice/plugins/redis"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/services"
)

// TestFillAndEventTimes: the buffer reports its fill against max_entries and max_bytes, and records keep
// their event times through it.
func TestFillAndEventTimes(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	ctx := context.Background()
	m := sdk.NewMetrics()
	b := &redis.Buffer{}
	err := b.Open(ctx, sdk.OpenRequest{Pipeline: "test", MaxBatchRecords: 100, Metrics: m,
		Settings: sdk.Settings{"addr": srv.Addr, "key": freshKey(), "max_entries": float64(40), "max_bytes": float64(1 << 20)}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	if _, err := b.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	in := batch(0, 10)
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for i := range in.Records {
		in.Records[i].Time = at.Add(time.Duration(i) * time.Second)
	}
	if err := b.Append(ctx, in); err != nil {
		t.Fatal(err)
	}
	_, fill, err := m.Text()
	if err != nil {
		t.Fatal(err)
	}
	entries, bytes := b.Fill()
	if fill == nil || fill.Entries != 10 || fill.Entries != entries || fill.Bytes != bytes || fill.Fraction != 0.25 {
		t.Fatalf("fill %+v (the buffer holds %d entries, %d bytes), want 10 entries at 0.25 of max_entries", fill, entries, bytes)
	}
	got := readN(t, b, 10)
	for i, r := range got {
		if !r.Time.Equal(in.Records[i].Time) {
			t.Fatalf("record %d: time %v, want %v", i, r.Time, in.Records[i].Time)
		}
	}
	if err := b.Ack(ctx, got[9].Position); err != nil {
		t.Fatal(err)
	}
	if _, fill, _ = m.Text(); fill.Entries != 0 || fill.Bytes != 0 || fill.Fraction != 0 {
		t.Fatalf("fill after the sink caught up: %+v", fill)
	}
}

// TestFillOverTheProtocol: the plugin binary reports its fill to a host over gRPC.
func TestFillOverTheProtocol(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := protocol.Launch(protocol.LaunchConfig{Path: pluginBinary, Env: []string{"PATH=" + os.Getenv("PATH")}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Kill()
	buf := conn.Buffer()
	if err := buf.Open(ctx, protocol.OpenRequest{Pipeline: "test", Settings: map[string]any{"addr": srv.Addr, "key": freshKey(),
		"max_entries": 0, "max_bytes": 1000}}); err != nil {
		t.Fatal(err)
	}
	if _, err := buf.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := buf.Append(ctx)
	if err != nil {
		t.Fatal(err)
	}
	in := batch(0, 5)
	if err := out.Send(protocol.NewBatch(in.Records, in.Position)); err != nil {
		t.Fatal(err)
	}
	if _, err := out.Recv(); err != nil {
		t.Fatal(err)
	}
	m, err := conn.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	size := 0
	for i := range in.Records {
		r := in.Records[i]
		r.Position = nil // the buffer stores records without their source positions
		size += record.EncodedSize(&r)
	}
	if m.Fill == nil || m.Fill.Entries != 5 || m.Fill.Bytes != int64(size) || m.Fill.Fraction != float64(size)/1000 {
		t.Fatalf("fill %+v, want 5 entries, %d bytes, %v of max_bytes", m.Fill, size, float64(size)/1000)
	}
}
