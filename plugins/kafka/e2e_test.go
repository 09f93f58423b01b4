package kafka

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/sluicehq/sluice/services"
)

// TestMongoRedisKafkaExactlyOnce runs the whole chain — MongoDB change stream (mongo-java-server) →
// transforms → Redis buffer → transactional Kafka sink — with the real host, kills the host with SIGKILL
// once changes are arriving in Kafka, runs it again, and checks with a read_committed consumer that every
// change is in Kafka exactly once and that each document's changes are in order.
func TestMongoRedisKafkaExactlyOnce(t *testing.T) {
	kafkaNode := realKafka(t)
	mongoSrv := services.StartMongo(t)
	redisSrv := services.StartRedis(t, services.RedisOptions{})
	bin := services.Binaries(t, "mongodb", "redis", "kafka")
	dir := t.TempDir()
	topic := fmt.Sprintf("shop.orders-%d", time.Now().UnixNano()%1e9)
	conf := fmt.Sprintf(`version: 1
pipelines:
  - id: orders-e2e
    source:
      plugin: mongodb
      settings: { uri: %q, database: shop, collection: orders, max_await: 200ms, start_at: %q }
    transforms:
      - filter: 'operationType in ["insert", "delete"]'
      - route: '%q'
    buffer:
      plugin: redis
      settings: { addr: %q }
    sink:
      plugin: kafka
      settings: { brokers: [%q], auto_create_topics: true }
    batch_max_records: 50
`, mongoSrv.URI, time.Now().Add(-time.Minute).UTC().Format(time.RFC3339), topic, redisSrv.Addr, kafkaNode.Brokers[0])
	if err := os.WriteFile(filepath.Join(dir, "chain.yaml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	start := func() (*exec.Cmd, *bytes.Buffer) {
		var out bytes.Buffer
		cmd := exec.Command(filepath.Join(bin, "sluice"), "run", "--data-dir", "state", "chain.yaml")
		cmd.Dir, cmd.Stdout, cmd.Stderr = dir, &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &out
	}
	host, log1 := start()

	ctx := context.Background()
	client, err := mongo.Connect(options.Client().ApplyURI(mongoSrv.URI))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Disconnect(ctx) }()
	orders := client.Database("shop").Collection("orders")
	const n = 1000
	killed := false
	for i := 0; i < n; i += 25 {
		docs := make([]any, 25)
		for j := range docs {
			docs[j] = bson.D{{Key: "_id", Value: i + j}, {Key: "n", Value: i + j}}
		}
		if _, err := orders.InsertMany(ctx, docs); err != nil {
			t.Fatal(err)
		}
		// Delete every fourth document of the batch: a second change for the same key.
		for j := 0; j < 25; j += 4 {
			if _, err := orders.DeleteOne(ctx, bson.D{{Key: "_id", Value: i + j}}); err != nil {
				t.Fatal(err)
			}
		}
		if !killed && i >= n/2 && len(committed(t, kafkaNode.Brokers, topic, time.Second)) > 0 {
			// Changes are arriving: kill the host (its plugins die with it) and start it again.
			_ = host.Process.Signal(syscall.SIGKILL)
			_ = host.Wait()
			killed = true
			host, _ = start()
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !killed {
		_ = host.Process.Kill()
		t.Fatalf("no change reached Kafka before the inserts ended; first run:\n%s", log1)
	}
	want := n + (n/25)*7 // every insert, and 7 deletes per 25
	var got []*kgo.Record
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got = committed(t, kafkaNode.Brokers, topic, 3*time.Second)
		if len(got) >= want || time.Now().After(deadline) {
			break
		}
	}
	_ = host.Process.Signal(syscall.SIGTERM)
	_ = host.Wait()
	type change struct {
		op string
		n  int
	}
	perKey := map[string][]change{}
	seen := map[string]int{} // resume token → count
	for _, r := range got {
		var ev struct {
			ID            json.RawMessage `json:"_id"`
			OperationType string          `json:"operationType"`
			FullDocument  struct {
				N int `json:"n"`
			} `json:"fullDocument"`
		}
		if err := json.Unmarshal(r.Value, &ev); err != nil {
			t.Fatalf("record %s: %v", r.Value, err)
		}
		seen[string(ev.ID)]++
		perKey[string(r.Key)] = append(perKey[string(r.Key)], change{ev.OperationType, ev.FullDocument.N})
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("change %s is in Kafka %d times", id, c)
		}
	}
	if len(got) != want {
		t.Fatalf("Kafka holds %d changes, want %d (every change exactly once)", len(got), want)
	}
	for k, cs := range perKey {
		if cs[0].op != "insert" || len(cs) > 2 || len(cs) == 2 && cs[1].op != "delete" {
			t.Fatalf("key %s: changes out of order: %v", k, cs)
		}
	}
	t.Logf("%d changes, each exactly once in Kafka after SIGKILL of the host, per-key order kept", len(got))
}

// committed reads every committed record of topic, stopping after idle without new ones.
func committed(t *testing.T, brokers []string, topic string, idle time.Duration) []*kgo.Record {
	t.Helper()
	c, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out []*kgo.Record
	for {
		ctx, cancel := context.WithTimeout(context.Background(), idle)
		fs := c.PollFetches(ctx)
		cancel()
		got := 0
		fs.EachRecord(func(r *kgo.Record) {
			if !strings.HasPrefix(r.Topic, "__") {
				out = append(out, r)
				got++
			}
		})
		if got == 0 {
			return out
		}
	}
}

// TestPermanentFailuresStopTheRun runs the real host with two pipelines that can never succeed — a sink
// topic that does not exist (auto_create_topics false), and records larger than max_message_bytes
// without a dead-letter sink — and checks that the run stops by itself, failed, with messages that say
// what and where, instead of retrying.
func TestPermanentFailuresStopTheRun(t *testing.T) {
	k := realKafka(t)
	bin := services.Binaries(t, "generate", "kafka")
	dir := t.TempDir()
	missing := fmt.Sprintf("missing-e2e-%d", topicSeq.Add(1))
	large := newTopic(t, k.Brokers, 1)
	// The second source is slow: each failed write then reaches the host as the sink's answer, with its
	// message, before the host sends another batch.
	conf := fmt.Sprintf(`version: 1
pipelines:
  - id: missing-topic
    source:
      plugin: generate
      settings: { count: 100 }
    sink:
      plugin: kafka
      settings: { brokers: [%[1]q], topic: %[2]q }
  - id: oversize
    source:
      plugin: generate
      settings: { count: 100, rate: 10, payload_bytes: 2000 }
    sink:
      plugin: kafka
      settings: { brokers: [%[1]q], topic: %[3]q, max_message_bytes: 1000 }
`, k.Brokers[0], missing, large)
	if err := os.WriteFile(filepath.Join(dir, "fail.yaml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "sluice"), "run", "--data-dir", "state", "fail.yaml")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("sluice run: %v, want exit status 1; output:\n%s", err, out)
	}
	for _, want := range []string{
		fmt.Sprintf(`kafka: topic \"%s\" does not exist on the cluster at %s and auto_create_topics is false; create it or set auto_create_topics: true`, missing, k.Brokers[0]),
		"kafka: record at position 0000000000000000 cannot be written: message of 2001 bytes (key + value + headers) is larger than max_message_bytes (1000)",
		"2 of 2 pipelines failed",
	} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("the output does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "restarting") {
		t.Fatalf("a permanent failure was retried:\n%s", out)
	}
	if topicExists(t, k.Brokers, missing) {
		t.Fatalf("the run created %s", missing)
	}
	t.Logf("output:\n%s", out)
}

// TestSCRAMOverTLSRun runs the real host as users do: a connector file whose Kafka sink speaks
// SCRAM-SHA-512 over TLS to the real broker, the password from ${env:…} and the CA from a PEM file, and a
// second pipeline whose tls_ca_file holds another CA. The first delivers every record; the second fails
// at once, permanently, saying that the broker's certificate does not verify. Nothing printed shows the
// password.
func TestSCRAMOverTLSRun(t *testing.T) {
	k := realKafka(t)
	bin := services.Binaries(t, "generate", "kafka")
	dir := t.TempDir()
	topic := newTopic(t, k.Brokers, 1)
	other, _ := newCert(t, nil, nil, "another CA")
	if err := os.WriteFile(filepath.Join(dir, "other-ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`version: 1
pipelines:
  - id: scram-tls
    source: { plugin: generate, settings: { count: 500 } }
    sink:
      plugin: kafka
      settings:
        brokers: [%[1]q]
        topic: %[2]q
        progress_topic: "%[2]s-progress"
        sasl_mechanism: SCRAM-SHA-512
        sasl_username: %[3]q
        sasl_password: ${env:SLUICE_TEST_KAFKA_PASSWORD}
        tls_ca_file: %[4]q
  - id: wrong-ca
    source: { plugin: generate, settings: { count: 500 } }
    sink:
      plugin: kafka
      settings: { brokers: [%[1]q], topic: %[2]q, progress_topic: "%[2]s-wrong", tls_ca_file: other-ca.pem }
`, k.SCRAMTLSBrokers[0], topic, scramUser, realCAFile)
	if err := os.WriteFile(filepath.Join(dir, "tls.yaml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "sluice"), "run", "--data-dir", "state", "--http", "off", "tls.yaml")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SLUICE_TEST_KAFKA_PASSWORD="+scramPassword)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("sluice run: %v, want exit status 1 (one pipeline failed); output:\n%s", err, out)
	}
	for _, want := range []string{
		"pipeline scram-tls: done — 500 records read",
		"pipeline wrong-ca: failed: sink kafka (pid ",
		"kafka: the certificate of a broker at " + k.SCRAMTLSBrokers[0] + " does not verify",
		"1 of 2 pipelines failed",
	} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("the output does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "restarting") || strings.Contains(string(out), scramPassword) {
		t.Fatalf("a permanent failure was retried, or the password shows:\n%s", out)
	}
	got := consume(t, k.Brokers, topic)
	if len(got) != 500 {
		t.Fatalf("topic %s holds %d messages, want 500", topic, len(got))
	}
	for i, m := range got {
		if string(m.Key) != fmt.Sprint(i) {
			t.Fatalf("message %d has key %q, want %q", i, m.Key, fmt.Sprint(i))
		}
	}
	t.Logf("output:\n%s", out)
}
