package redis_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice/plugins/redis"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/services"
)

// benchBatch returns n records of 1 KiB (a 1000-byte JSON payload and a short key).
func benchBatch(first, n int) record.Batch {
	payload := append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), 1000-10)...)
	payload = append(payload, `"}`...)
	recs := make([]record.Record, n)
	for i := range recs {
		recs[i] = record.Record{Position: record.Position(strconv.Itoa(first + i)), Op: record.OpInsert,
			Encoding: record.EncodingJSON, Key: []byte(strconv.Itoa(first + i)), Payload: payload}
	}
	return record.Batch{Records: recs, Position: recs[n-1].Position}
}

func benchOpen(b *testing.B, srv *services.Redis, batch int) *redis.Buffer {
	b.Helper()
	buf := &redis.Buffer{}
	err := buf.Open(context.Background(), sdk.OpenRequest{Pipeline: "bench", MaxBatchRecords: batch,
		Settings: sdk.Settings{"addr": srv.Addr, "key": freshKey(), "max_entries": float64(0), "max_bytes": float64(0)}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = buf.Close(context.Background()) })
	if _, err := buf.Checkpoint(context.Background()); err != nil {
		b.Fatal(err)
	}
	return buf
}

// BenchmarkAppend appends batches of 1 KiB records to a server with appendfsync always (one fsync per
// Append), acknowledging (trimming) as it goes so that Redis's memory stays bounded.
func BenchmarkAppend(b *testing.B) {
	srv := services.StartRedis(b, services.RedisOptions{})
	for _, n := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			buf := benchOpen(b, srv, n)
			ctx := context.Background()
			bt := benchBatch(0, n)
			b.SetBytes(int64(n) * 1024)
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				for j := range bt.Records {
					bt.Records[j].Position = record.Position(strconv.Itoa(i*n + j))
				}
				bt.Position = bt.Records[n-1].Position
				if err := buf.Append(ctx, bt); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/time.Since(start).Seconds(), "records/s")
		})
	}
}

// BenchmarkRead reads and acknowledges (trims: one fsync per Ack with appendfsync always) batches of
// 1 KiB records appended beforehand.
func BenchmarkRead(b *testing.B) {
	srv := services.StartRedis(b, services.RedisOptions{})
	for _, n := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			buf := benchOpen(b, srv, n)
			ctx := context.Background()
			total := b.N * n
			for i := 0; i < total; i += 512 {
				if err := buf.Append(ctx, benchBatch(i, min(512, total-i))); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(n) * 1024)
			b.ResetTimer()
			start := time.Now()
			for read := 0; read < total; {
				recs, err := buf.Read(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if len(recs) == 0 {
					b.Fatalf("read nothing after %d of %d records", read, total)
				}
				read += len(recs)
				if err := buf.Ack(ctx, recs[len(recs)-1].Position); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(total)/time.Since(start).Seconds(), "records/s")
		})
	}
}
