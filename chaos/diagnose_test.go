package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/services"
)

// TestDiagnoseKafka: against a real broker, a transaction left open names the partition it holds back,
// its producer and what the coordinator says (Ongoing: not a hanging one); with none open there is nothing
// to say. (A hanging transaction, one the coordinator has forgotten, cannot be made on purpose: the harness
// met one when Kafka dropped the markers of a commit during a restart.)
func TestDiagnoseKafka(t *testing.T) {
	k := services.StartKafka(t)
	ctx := context.Background()
	if err := createTopics(ctx, k.Brokers, []string{"d.data"}, 2); err != nil {
		t.Fatal(err)
	}
	if got := diagnoseKafka(ctx, k.Brokers, []string{"d.data"}); len(got) != 0 {
		t.Fatalf("nothing open, diagnosis %q", got)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...), kgo.TransactionalID("diag"), kgo.DefaultProduceTopic("d.data"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Partition: 1, Value: []byte("open")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	got := diagnoseKafka(ctx, k.Brokers, []string{"d.data"})
	if len(got) != 1 || !strings.Contains(got[0], "holds read_committed readers back on d.data/1@0") ||
		!strings.Contains(got[0], "transactional id diag") || !strings.Contains(got[0], "Ongoing") || strings.Contains(got[0], "hanging") {
		t.Fatalf("diagnosis of an open transaction: %q", got)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	// The commit's markers are written after EndTransaction returns: the diagnosis clears soon after.
	deadline := time.Now().Add(30 * time.Second)
	for got = diagnoseKafka(ctx, k.Brokers, []string{"d.data"}); len(got) != 0; got = diagnoseKafka(ctx, k.Brokers, []string{"d.data"}) {
		if time.Now().After(deadline) {
			t.Fatalf("30s after the commit, diagnosis %q", got)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
