package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// progressTopic is the Kafka sink's default progress topic, which the harness's pipelines use.
const progressTopic = "sluice-progress"

// diagnoseKafka explains a hang on Kafka's side, when there is one to see: the partitions of topics whose
// last stable offset is behind their end (a transaction holds read_committed readers back there), the
// producer whose open transaction it is, and what the transaction coordinator says of that producer's
// transactional id. An open transaction the coordinator no longer knows as ongoing is a hanging one: its
// markers were never written and nothing will end it; the Kafka sink, which waits for the progress
// partition to be stable before reading its checkpoint, then waits for ever.
func diagnoseKafka(ctx context.Context, brokers, topics []string) []string {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return []string{fmt.Sprintf("kafka diagnosis: %v", err)}
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topics = append(topics, progressTopic)
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return []string{fmt.Sprintf("kafka diagnosis: listing end offsets: %v", err)}
	}
	stable, err := adm.ListCommittedOffsets(ctx, topics...)
	if err != nil {
		return []string{fmt.Sprintf("kafka diagnosis: listing last stable offsets: %v", err)}
	}
	behind := kadm.TopicsSet{}
	lso := map[string]map[int32]int64{}
	ends.Each(func(e kadm.ListedOffset) {
		s, ok := stable.Lookup(e.Topic, e.Partition)
		if ok && s.Err == nil && e.Err == nil && s.Offset < e.Offset {
			behind.Add(e.Topic, e.Partition)
			if lso[e.Topic] == nil {
				lso[e.Topic] = map[int32]int64{}
			}
			lso[e.Topic][e.Partition] = s.Offset
		}
	})
	if len(behind) == 0 {
		return nil
	}
	producers, err := adm.DescribeProducers(ctx, behind)
	if err != nil {
		return []string{fmt.Sprintf("kafka diagnosis: describing producers of %v: %v", behind, err)}
	}
	// The coordinator's view of every transactional id, by producer id.
	coordinator := map[int64]kadm.DescribedTransaction{}
	if txns, err := adm.DescribeTransactions(ctx); err == nil {
		txns.Each(func(t kadm.DescribedTransaction) { coordinator[t.ProducerID] = t })
	}
	// One line per producer holding partitions back.
	type holder struct {
		epoch int16
		since int64
		parts []string
	}
	held := map[int64]*holder{}
	var order []int64
	for _, p := range producers.SortedProducers() {
		if p.CurrentTxnStartOffset < 0 || p.CurrentTxnStartOffset != lso[p.Topic][p.Partition] {
			continue
		}
		h := held[p.ProducerID]
		if h == nil {
			h = &holder{epoch: p.ProducerEpoch}
			held[p.ProducerID] = h
			order = append(order, p.ProducerID)
		}
		h.since = max(h.since, p.LastTimestamp)
		h.parts = append(h.parts, fmt.Sprintf("%s/%d@%d", p.Topic, p.Partition, p.CurrentTxnStartOffset))
	}
	var out []string
	for _, id := range order {
		h := held[id]
		line := fmt.Sprintf("kafka: an open transaction of producer %d epoch %d, last written %s, holds read_committed readers back on %s",
			id, h.epoch, time.UnixMilli(h.since).UTC().Format(time.RFC3339Nano), strings.Join(h.parts, ", "))
		if t, ok := coordinator[id]; ok {
			line += fmt.Sprintf("; its transaction coordinator has transactional id %s at epoch %d, %s", t.TxnID, t.ProducerEpoch, t.State)
			if t.ProducerEpoch > h.epoch && t.State != "Ongoing" && t.State != "PrepareCommit" && t.State != "PrepareAbort" {
				line += ": a hanging transaction (Kafka never wrote its markers, and nothing will)"
			}
		}
		out = append(out, line)
	}
	return out
}
