package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/sdk/sdktest"
)

func TestAcceptance(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		t.Run("transactional", func(t *testing.T) {
			sdktest.Sink(t, Plugin(), sdktest.SinkConfig{
				Settings: func(t *testing.T) map[string]any { return settingsFor(b, newTopic(t, b.brokers, 1), nil) },
				Verify: func(t *testing.T, settings map[string]any, written []record.Record) {
					verify(t, b.brokers, settings["topic"].(string), written)
				},
				Binary: pluginBinary,
			})
		})
		t.Run("idempotent", func(t *testing.T) {
			// The same plugin configured transactional: false stores no positions, as the host sees from
			// AtomicPositionSetting; the suite only reads AtomicPosition, so this variant clears it.
			p := Plugin()
			stage := *p.Spec.Sink
			stage.Capabilities = sdk.Capabilities{}
			p.Spec.Sink = &stage
			sdktest.Sink(t, p, sdktest.SinkConfig{
				Settings: func(t *testing.T) map[string]any {
					return settingsFor(b, newTopic(t, b.brokers, 1), map[string]any{"transactional": false})
				},
				// At-least-once: the restart check may write the killed instance's unacknowledged batches
				// again, so compare what is there without duplicates.
				Verify: func(t *testing.T, settings map[string]any, written []record.Record) {
					got := consume(t, b.brokers, settings["topic"].(string))
					seen := map[string]bool{}
					for _, m := range got {
						seen[string(m.Key)] = true
					}
					for _, r := range written {
						if !seen[string(r.Key)] {
							t.Fatalf("record with key %q is missing", r.Key)
						}
					}
				},
			})
		})
	})
}

// TestCommitAndAbort: a write whose transaction fails after some of its messages were produced leaves
// nothing a read_committed consumer sees, and the next instance's checkpoint is the last committed batch.
func TestCommitAndAbort(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		topic := newTopic(t, b.brokers, 2)
		settings := settingsFor(b, topic, map[string]any{"max_message_bytes": 2000000})
		s := openSink(t, "commit-abort", settings, false)
		if got := checkpoint(t, s); got != nil {
			t.Fatalf("Checkpoint of a new pipeline = %q, want nil", got)
		}
		first := makeBatch(0, 10)
		if err := s.Write(ctx, first); err != nil {
			t.Fatal(err)
		}
		// One record of the second batch is larger than the topic's max.message.bytes (1048588), which
		// max_message_bytes lets through: the broker refuses its partition's messages, the other
		// partition's are produced inside the transaction, then the write fails and nothing is committed.
		second := makeBatch(10, 10)
		payload := second.Records[5].Payload
		second.Records[5].Payload = make([]byte, 1500000)
		wantClass(t, s.Write(ctx, second), sdk.ErrPermanent, "MESSAGE_TOO_LARGE")

		s2 := openSink(t, "commit-abort", settings, false)
		if got := checkpoint(t, s2); !got.Equal(first.Position) {
			t.Fatalf("Checkpoint after the failed write = %q, want %q", got, first.Position)
		}
		second.Records[5].Payload = payload
		if err := s2.Write(ctx, second); err != nil {
			t.Fatal(err)
		}
		got := consume(t, b.brokers, topic)
		if len(got) != 20 {
			t.Fatalf("read_committed sees %d messages, want 20 (10 committed twice would be 30)", len(got))
		}
		keys := map[string]int{}
		for _, m := range got {
			keys[string(m.Key)]++
		}
		for k, n := range keys {
			if n != 1 {
				t.Fatalf("key %s seen %d times", k, n)
			}
		}
		if got := checkpoint(t, s2); !got.Equal(second.Position) {
			t.Fatalf("Checkpoint = %q, want %q", got, second.Position)
		}
	})
}

// TestFencing: a second instance of the pipeline, started while the first is in the middle of a
// transaction (a zombie), aborts that transaction, resumes from the last committed position, and the
// zombie's commit fails with an error saying it was fenced.
func TestFencing(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		topic := newTopic(t, b.brokers, 1)
		settings := settingsFor(b, topic, nil)
		zombie := openSink(t, "fencing", settings, false)
		if err := zombie.Write(ctx, makeBatch(0, 5)); err != nil {
			t.Fatal(err)
		}
		paused, resume := make(chan struct{}), make(chan struct{})
		zombie.beforeCommit = func() { close(paused); <-resume }
		zerr := make(chan error, 1)
		go func() { zerr <- zombie.Write(ctx, makeBatch(5, 5)) }()
		<-paused // the zombie's second batch is produced, not committed

		s := openSink(t, "fencing", settings, false)
		if got := checkpoint(t, s); !got.Equal(pos(4)) {
			t.Fatalf("Checkpoint = %q, want %q (the zombie's open transaction must not count)", got, pos(4))
		}
		if got := consume(t, b.brokers, topic); len(got) != 5 {
			t.Fatalf("read_committed sees %d messages, want 5", len(got))
		}
		close(resume)
		err := <-zerr
		switch {
		case err == nil:
			t.Fatal("the zombie's Write succeeded")
		case b.name == "kfake" && strings.Contains(err.Error(), "INVALID_TXN_STATE"):
			// kfake answers a fenced producer's EndTxn with INVALID_TXN_STATE where Kafka says
			// PRODUCER_FENCED; what matters, that nothing of the zombie's is committed, is checked below.
		case !strings.Contains(err.Error(), "fenced"):
			t.Fatalf("the zombie's Write returned %v, want a fenced error", err)
		}
		t.Logf("zombie: %v", err)
		if err := s.Write(ctx, makeBatch(5, 5)); err != nil {
			t.Fatal(err)
		}
		verify(t, b.brokers, topic, makeBatch(0, 10).Records)
		if got := checkpoint(t, s); !got.Equal(pos(9)) {
			t.Fatalf("Checkpoint = %q, want %q", got, pos(9))
		}
	})
}

// TestBrokerRestart writes batches the way the host does — on an error, a new instance resumes after
// its checkpoint — while the broker restarts (gracefully, then killed), and checks every record arrives
// once, in order.
func TestBrokerRestart(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		t.Run("restart", func(t *testing.T) { brokerRestart(t, b, b.restart) })
		t.Run("crash", func(t *testing.T) { brokerRestart(t, b, b.crash) })
	})
}

func brokerRestart(t *testing.T, b backend, restart func(*testing.T)) {
	topic := newTopic(t, b.brokers, 1)
	settings := settingsFor(b, topic, map[string]any{"transaction_timeout": "20s"})
	const batches, size = 40, 25
	var (
		restartOnce sync.Once
		restarted   = make(chan struct{})
	)
	s := openSink(t, "restart", settings, false)
	// One context for all writes, as the SDK passes the host stream's context: the producer lives on
	// across the broker's restart.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	next, failures := 0, 0
	var longest time.Duration
	for {
		if isClosed(restarted) {
			if next >= batches {
				break
			}
		} else if next >= batches/2 {
			// Keep writing, a batch every 50ms, until the broker is back: writes span the outage.
			restartOnce.Do(func() {
				go func() { restart(t); close(restarted) }()
			})
			time.Sleep(50 * time.Millisecond)
		}
		began := time.Now()
		err := s.Write(ctx, makeBatch(next*size, size))
		longest = max(longest, time.Since(began))
		if err == nil {
			next++
			continue
		}
		failures++
		if failures > 20 {
			t.Fatalf("too many failures; last: %v", err)
		}
		t.Logf("batch %d: %v; restarting the sink", next, err)
		_ = s.Close(context.Background())
		for {
			time.Sleep(500 * time.Millisecond)
			s = &Sink{}
			octx, ocancel := context.WithTimeout(context.Background(), 30*time.Second)
			err = s.Open(octx, sdk.OpenRequest{Pipeline: "restart", Settings: settings})
			var cp record.Position
			if err == nil {
				cp, err = s.Checkpoint(octx)
			}
			ocancel()
			if err != nil {
				t.Logf("reopening: %v", err)
				_ = s.Close(context.Background())
				continue
			}
			// Resume after the checkpoint, as the host does.
			next = 0
			if cp != nil {
				var n int
				if _, err := fmt.Sscanf(string(cp), "p%d", &n); err != nil {
					t.Fatalf("checkpoint %q: %v", cp, err)
				}
				next = (n + 1) / size
			}
			break
		}
	}
	_ = s.Close(context.Background())
	t.Logf("%d batches written, %d failed writes, the longest write took %s", next, failures, longest)
	verify(t, b.brokers, topic, makeBatch(0, next*size).Records)
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// TestSCRAM writes through the real broker's SCRAM-SHA-512 listener, and a wrong password fails Open
// with a permanent error, without the password in it.
func TestSCRAM(t *testing.T) {
	k := realKafka(t)
	b := backend{name: "kafka", brokers: k.SCRAMBrokers}
	topic := newTopic(t, k.Brokers, 1)
	settings := settingsFor(b, topic, map[string]any{
		"sasl_mechanism": "SCRAM-SHA-512", "sasl_username": scramUser, "sasl_password": scramPassword,
		"progress_topic": topic + "-progress"})
	s := openSink(t, "scram", settings, false)
	if err := s.Write(context.Background(), makeBatch(0, 10)); err != nil {
		t.Fatal(err)
	}
	if got := checkpoint(t, s); !got.Equal(pos(9)) {
		t.Fatalf("Checkpoint = %q, want %q", got, pos(9))
	}
	verify(t, k.Brokers, topic, makeBatch(0, 10).Records)

	settings["sasl_password"] = "wrong-password-xyz"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bad := &Sink{}
	err := bad.Open(ctx, sdk.OpenRequest{Pipeline: "scram-bad", Settings: sdk.Settings(settings)})
	_ = bad.Close(ctx)
	// kfake closes the connection of a client that fails to authenticate (an EOF: transient), where
	// Kafka answers SASL_AUTHENTICATION_FAILED: this check needs the real broker.
	wantClass(t, err, sdk.ErrPermanent, "kafka: authentication failed at "+k.SCRAMBrokers[0], fmt.Sprintf("sasl_username %q", scramUser),
		"SASL_AUTHENTICATION_FAILED")
	if strings.Contains(err.Error(), "wrong-password-xyz") {
		t.Fatalf("the error shows the password: %v", err)
	}
}

// TestOversize: a record larger than max_message_bytes is rejected (the rest of the batch and its
// position committed) with a dead-letter sink, and fails the write with a permanent error naming its
// position, its size and max_message_bytes, committing nothing, without one.
func TestOversize(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		topic := newTopic(t, b.brokers, 1)
		settings := settingsFor(b, topic, map[string]any{"max_message_bytes": 200})
		batch := makeBatch(0, 6)
		batch.Records[2].Payload = []byte(strings.Repeat("x", 300))
		batch.Records[4].Meta = batch.Records[4].Meta.Set(record.MetaRoute, "bad/topic")

		strict := openSink(t, "oversize-strict", settings, false)
		wantClass(t, strict.Write(ctx, batch), sdk.ErrPermanent, fmt.Sprintf(
			"kafka: record at position %x cannot be written: message of 305 bytes (key + value + headers) is larger than max_message_bytes (200) (and 1 more record of the batch cannot be written); the pipeline has no dead-letter sink (dlq:)",
			[]byte(pos(2))))
		if got := checkpoint(t, strict); got != nil {
			t.Fatalf("Checkpoint after the failed write = %q, want nil", got)
		}

		s := openSink(t, "oversize", settings, true)
		err := s.Write(ctx, batch)
		var rej *sdk.RejectError
		if !errors.As(err, &rej) {
			t.Fatalf("Write = %v, want a *sdk.RejectError", err)
		}
		if len(rej.Rejections) != 2 || rej.Rejections[0].Index != 2 || rej.Rejections[1].Index != 4 {
			t.Fatalf("rejections = %+v, want records 2 and 4", rej.Rejections)
		}
		t.Logf("rejections: %+v", rej.Rejections)
		if got := checkpoint(t, s); !got.Equal(batch.Position) {
			t.Fatalf("Checkpoint = %q, want %q", got, batch.Position)
		}
		want := []record.Record{batch.Records[0], batch.Records[1], batch.Records[3], batch.Records[5]}
		verify(t, b.brokers, topic, want)
	})
}

// TestRouteAndHeaders: a record's route names its topic; selected metadata become headers; a record
// without payload is a tombstone.
func TestRouteAndHeaders(t *testing.T) {
	b := fakeBackend(t)
	ctx := context.Background()
	topic, other := newTopic(t, b.brokers, 1), newTopic(t, b.brokers, 1)
	s := openSink(t, "route", settingsFor(b, topic, map[string]any{"headers": []any{"sdktest.i", "extra"}}), false)
	batch := makeBatch(0, 4)
	batch.Records[1].Meta = batch.Records[1].Meta.Set(record.MetaRoute, other).Set("extra", "x").Set("ignored", "y")
	batch.Records[2].Payload = nil
	if err := s.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	main, routed := consume(t, b.brokers, topic), consume(t, b.brokers, other)
	if len(main) != 3 || len(routed) != 1 {
		t.Fatalf("%d messages in %s and %d in %s, want 3 and 1", len(main), topic, len(routed), other)
	}
	hdr := map[string]string{}
	for _, h := range routed[0].Headers {
		hdr[h.Key] = string(h.Value)
	}
	if hdr["sdktest.i"] != "1" || hdr["extra"] != "x" || len(hdr) != 2 {
		t.Fatalf("headers of the routed message: %v, want sdktest.i=1 and extra=x only", hdr)
	}
	if main[1].Value != nil {
		t.Fatalf("the record without payload has value %q, want a tombstone", main[1].Value)
	}
}

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings map[string]any
		want     string // substring of the error; empty: valid
	}{
		{"minimal", map[string]any{"brokers": []any{"b:9092"}}, ""},
		{"no brokers", map[string]any{"brokers": []any{}}, "at least one broker"},
		{"bad topic", map[string]any{"brokers": []any{"b:9092"}, "topic": "a/b"}, "not allowed"},
		{"acks with transactions", map[string]any{"brokers": []any{"b:9092"}, "acks": "leader"}, "need acks all"},
		{"acks without transactions", map[string]any{"brokers": []any{"b:9092"}, "acks": "leader", "transactional": false}, ""},
		{"sasl without user", map[string]any{"brokers": []any{"b:9092"}, "sasl_mechanism": "PLAIN"}, "needs a user name"},
		{"cert without key", map[string]any{"brokers": []any{"b:9092"}, "tls_cert_file": "c.pem"}, "go together"},
		{"tiny batch", map[string]any{"brokers": []any{"b:9092"}, "batch_max_bytes": 10}, "batch_max_bytes"},
		{"wrong type", map[string]any{"brokers": "b:9092", "linger": 5}, "invalid settings"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig(sdk.Settings(tc.settings), "orders")
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			case tc.want != "" && !errors.Is(err, sdk.ErrInvalidSettings):
				t.Fatalf("error %v does not wrap sdk.ErrInvalidSettings", err)
			case tc.want == "" && c.Transactional && c.TransactionalID != "sluice-orders":
				t.Fatalf("transactional id %q, want sluice-orders", c.TransactionalID)
			}
		})
	}
}

func TestProgressPartition(t *testing.T) {
	// Kafka's Java client puts key "sluice-orders" on the same partition: murmur2, positive, mod n.
	p := progressPartition([]byte("sluice-orders"), 12)
	r := &kgo.Record{Key: []byte("sluice-orders")}
	if q := int32(kgo.StickyKeyPartitioner(nil).ForTopic("x").Partition(r, 12)); p != q || p < 0 || p >= 12 {
		t.Fatalf("partition %d, %d", p, q)
	}
	if v, err := decodeProgress(encodeProgress(record.Position("abc"))); err != nil || string(v) != "abc" {
		t.Fatalf("round trip: %q %v", v, err)
	}
	if _, err := decodeProgress([]byte{9, 1}); err == nil {
		t.Fatal("unknown version accepted")
	}
}
