package kafka

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/sdk/record"
)

// BenchmarkProduce measures records/s of 1 KB records into the real Kafka node (one partition, acks all):
// the sink transactional with 1024 and 16384 records per Write (one host batch, and the 16 the SDK
// coalesces when the sink is the bottleneck), the sink idempotent-only, and the ceiling: a bare franz-go
// producer loop with the same settings. One op is one record: run with -benchtime 100000x or so.
//
//	go test -run '^$' -bench Produce -benchtime 100000x .
func BenchmarkProduce(b *testing.B) {
	k := realKafka(b)
	value := make([]byte, 1000)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	batchOf := func(first, n int) record.Batch {
		var bt record.Batch
		for i := first; i < first+n; i++ {
			bt.Records = append(bt.Records, record.Record{Position: pos(i), Op: record.OpInsert,
				Key: fmt.Appendf(nil, "key-%d", i), Payload: value, Encoding: record.EncodingRaw})
		}
		bt.Position = pos(first + n - 1)
		return bt
	}
	sink := func(b *testing.B, transactional bool, per int) {
		be := backend{brokers: k.Brokers}
		topic := newTopic(b, k.Brokers, 1)
		s := openSink(b, "bench-"+topic, settingsFor(be, topic, map[string]any{"transactional": transactional}), false)
		ctx := context.Background()
		batches := make([]record.Batch, 4) // reused, as the SDK reuses its buffers
		for i := range batches {
			batches[i] = batchOf(i*per, per)
		}
		b.SetBytes(int64(len(value)))
		b.ResetTimer()
		start := time.Now()
		for done, i := 0, 0; done < b.N; i++ {
			if err := s.Write(ctx, batches[i%len(batches)]); err != nil {
				b.Fatal(err)
			}
			done += per
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
	}
	b.Run("transactional-1024", func(b *testing.B) { sink(b, true, 1024) })
	b.Run("transactional-16384", func(b *testing.B) { sink(b, true, 16384) })
	b.Run("idempotent-1024", func(b *testing.B) { sink(b, false, 1024) })
	b.Run("bare-franz-go", func(b *testing.B) {
		topic := newTopic(b, k.Brokers, 1)
		cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...), kgo.DefaultProduceTopic(topic),
			kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerBatchCompression(kgo.NoCompression()),
			kgo.ProducerLinger(0))
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		ctx := context.Background()
		recs := make([]kgo.Record, b.N) // no reuse, no flush until the end: nothing slows the loop
		for i := range recs {
			recs[i] = kgo.Record{Key: fmt.Appendf(nil, "key-%d", i), Value: value}
		}
		b.SetBytes(int64(len(value)))
		b.ResetTimer()
		start := time.Now()
		for i := range recs {
			cl.Produce(ctx, &recs[i], func(_ *kgo.Record, err error) {
				if err != nil {
					b.Error(err)
				}
			})
		}
		if err := cl.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
	})
}
