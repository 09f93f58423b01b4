package kafka

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/sdk/sdktest"
	"github.com/sluicehq/sluice/services"
)

var pluginBinary string

// The real Kafka node is shared by the package's tests: it starts on first use (several seconds) and
// stops after the last test.
var (
	realOnce sync.Once
	realNode *services.Kafka
	realErr  error
	realDir  string
	// realCAFile is the CA (PEM) that signed the real node's TLS certificate, for 127.0.0.1.
	realCAFile string
)

const (
	scramUser     = "sluice-test"
	scramPassword = "scram-secret-for-tests"
)

func TestMain(m *testing.M) {
	if pipeline := os.Getenv(envHelper); pipeline != "" {
		midTransaction(pipeline) // the process TestRestartAfterKill kills
	}
	bin, remove, err := sdktest.Build("./cmd/kafka")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBinary = bin
	code := m.Run()
	if realNode != nil {
		_ = realNode.Stop(30 * time.Second)
	}
	if realDir != "" {
		_ = os.RemoveAll(realDir)
	}
	remove()
	os.Exit(code)
}

func realKafka(t testing.TB) *services.Kafka {
	t.Helper()
	realOnce.Do(func() {
		if realDir, realErr = os.MkdirTemp("", "sluice-kafka-test-"); realErr != nil {
			return
		}
		// TLS listeners (SSL, and SASL_SSL for SCRAM over TLS) with a certificate from a CA of the test's.
		ca, caKey := newCert(t, nil, nil, "sluice test CA")
		srv, srvKey := newCert(t, ca, caKey, "127.0.0.1")
		realCAFile = filepath.Join(realDir, "ca.pem")
		if realErr = os.WriteFile(realCAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o600); realErr != nil {
			return
		}
		key, err := x509.MarshalPKCS8PrivateKey(srvKey)
		if err != nil {
			realErr = err
			return
		}
		if realNode, realErr = services.NewKafka(filepath.Join(realDir, "kafka"), services.KafkaSCRAM(scramUser, scramPassword),
			services.KafkaTLS(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Raw}),
				pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key})),
			// ACLs, for the authorization tests: the PLAINTEXT listeners' principal (ANONYMOUS) may do
			// anything, and so may everyone on a resource without ACLs; those tests deny the SCRAM user
			// some resources of their own.
			services.KafkaProperty("authorizer.class.name", "org.apache.kafka.metadata.authorizer.StandardAuthorizer"),
			services.KafkaProperty("super.users", "User:ANONYMOUS"),
			services.KafkaProperty("allow.everyone.if.no.acl.found", "true")); realErr != nil {
			return
		}
		if realErr = realNode.Start(); realErr != nil {
			realNode = nil
		}
	})
	if realErr != nil {
		t.Fatal(realErr)
	}
	return realNode
}

// backend is a Kafka to test against: kfake in this process, or a real Apache Kafka node.
type backend struct {
	name    string
	brokers []string
	// restart stops the broker and starts it again with its data; crash kills it (SIGKILL for real
	// Kafka) and starts it again.
	restart, crash func(t *testing.T)
}

// eachBackend runs f as a subtest against kfake and against real Kafka.
func eachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	t.Run("kfake", func(t *testing.T) { f(t, fakeBackend(t)) })
	t.Run("kafka", func(t *testing.T) {
		k := realKafka(t)
		f(t, backend{name: "kafka", brokers: k.Brokers,
			restart: func(t *testing.T) {
				if err := k.Restart(); err != nil {
					t.Error(err)
				}
			},
			crash: func(t *testing.T) {
				if err := k.Crash(); err != nil {
					t.Error(err)
				}
			}})
	})
}

// fakeBackend starts a kfake cluster for the test, persisting to a directory so that restart keeps the
// data.
func fakeBackend(t *testing.T) backend {
	t.Helper()
	dir := t.TempDir()
	opts := func(ports ...int) []kfake.Opt {
		return []kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(1), kfake.DataDir(dir), kfake.Ports(ports...)}
	}
	var mu sync.Mutex
	c, err := kfake.NewCluster(opts()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mu.Lock(); c.Close(); mu.Unlock() })
	addrs := c.ListenAddrs()
	var port int
	if _, err := fmt.Sscanf(addrs[0][len("127.0.0.1:"):], "%d", &port); err != nil {
		t.Fatalf("kfake address %s: %v", addrs[0], err)
	}
	restart := func(t *testing.T) {
		mu.Lock()
		defer mu.Unlock()
		c.Close()
		var err error
		for range 50 { // the port may take a moment to be free again
			if c, err = kfake.NewCluster(opts(port)...); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Error(err)
	}
	return backend{name: "kfake", brokers: addrs, restart: restart, crash: restart}
}

var topicSeq atomic.Int64

// newTopic creates a topic with a name unique to the test run and returns the name.
func newTopic(t testing.TB, brokers []string, partitions int32) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%d", time.Now().UnixNano()%1e9, topicSeq.Add(1))
	createTopic(t, name, partitions, kgo.SeedBrokers(brokers...))
	return name
}

// createTopic creates topic name through a client with opts (the brokers, and credentials if needed).
func createTopic(t testing.TB, name string, partitions int32, opts ...kgo.Opt) {
	t.Helper()
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, nil, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("creating topic %s: %v", name, err)
	}
}

// settingsFor returns sink settings writing to topic with a progress topic of its own.
func settingsFor(b backend, topic string, extra map[string]any) map[string]any {
	s := map[string]any{"brokers": toAny(b.brokers), "topic": topic, "progress_topic": topic + "-progress"}
	for k, v := range extra {
		s[k] = v
	}
	return s
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// openSink opens a Sink in this process, as the SDK would, and closes it when the test ends.
func openSink(t testing.TB, pipeline string, settings map[string]any, deadLetter bool) *Sink {
	t.Helper()
	s := &Sink{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.Open(ctx, sdk.OpenRequest{Pipeline: pipeline, Settings: sdk.Settings(settings), DeadLetter: deadLetter}); err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func checkpoint(t testing.TB, s *Sink) record.Position {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pos, err := s.Checkpoint(ctx)
	if err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	return pos
}

// makeBatch returns n records numbered from first, with positions "p<number>", and the batch position of
// the last one.
func makeBatch(first, n int) record.Batch {
	var b record.Batch
	for i := first; i < first+n; i++ {
		r := sdktest.DefaultRecord(i)
		r.Position = pos(i)
		b.Records = append(b.Records, r)
	}
	b.Position = pos(first + n - 1)
	return b
}

func pos(i int) record.Position { return record.Position(fmt.Sprintf("p%08d", i)) }

// consume reads topic from the start with read_committed, up to its end, and returns the data messages.
// It waits until no transaction is open on the topic first (up to 60 s).
func consume(t testing.TB, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var ends kadm.ListedOffsets
	for {
		if ends, err = adm.ListEndOffsets(ctx, topic); err != nil {
			t.Fatal(err)
		}
		stable, err := adm.ListCommittedOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		open := false
		ends.Each(func(o kadm.ListedOffset) {
			if s, _ := stable.Lookup(o.Topic, o.Partition); s.Offset < o.Offset {
				open = true
			}
		})
		if !open {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("transactions on %s still open after 60s", topic)
		case <-time.After(100 * time.Millisecond):
		}
	}
	remaining := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			remaining[o.Partition] = o.Offset
		}
	})
	var out []*kgo.Record
	for len(remaining) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consuming %s: %v (still to read: %v)", topic, ctx.Err(), remaining)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("consuming %s: %v", topic, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if end, ok := remaining[r.Partition]; ok && r.Offset >= end-1 {
				delete(remaining, r.Partition)
			}
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
		})
	}
	return out
}

// verify checks that topic holds exactly the data records of want (heartbeats excluded), in order, once.
func verify(t testing.TB, brokers []string, topic string, want []record.Record) {
	t.Helper()
	got := consume(t, brokers, topic)
	var data []record.Record
	for _, r := range want {
		if r.Op != record.OpHeartbeat {
			data = append(data, r)
		}
	}
	if len(got) != len(data) {
		t.Fatalf("topic %s holds %d messages, want %d", topic, len(got), len(data))
	}
	for i, m := range got {
		w := data[i]
		if string(m.Key) != string(w.Key) || string(m.Value) != string(w.Payload) {
			t.Fatalf("message %d: key %q value %q, want key %q value %q", i, m.Key, m.Value, w.Key, w.Payload)
		}
	}
}
