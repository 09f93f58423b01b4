package kafka

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/services"
)

// TestLanesExactlyOnceAcrossHostKill runs the real host with generate → Redis buffer → transactional Kafka
// sink (kfake, 4 partitions) and ordered: false, lanes: 4: four sink processes, each with its own
// transactional id, fed by key hash. It SIGKILLs the host once records are committed, runs it again, and
// checks with a read_committed consumer that every record is in Kafka exactly once and that each key's
// records are in order.
func TestLanesExactlyOnceAcrossHostKill(t *testing.T) {
	const n, keys = 40000, 100
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(4))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	redisSrv := services.StartRedis(t, services.RedisOptions{})
	bin := services.Binaries(t, "generate", "redis", "kafka")
	dir := t.TempDir()
	topic := "lanes-e2e"
	conf := fmt.Sprintf(`version: 1
pipelines:
  - id: lanes-e2e
    source:
      plugin: generate
      settings: { count: %d, rate: 4000, payload_bytes: 100 }
    buffer:
      plugin: redis
      settings: { addr: %q }
    sink_transforms:
      - key: 'string(seq %% %d)'
    sink:
      plugin: kafka
      settings: { brokers: [%q], topic: %q, auto_create_topics: true, transactional_id: lanes-e2e }
    ordered: false
    lanes: 4
    batch_max_records: 200
    retry: { initial: 200ms, max: 2s, give_up_after: never }
`, n, redisSrv.Addr, keys, brokers[0], topic)
	if err := os.WriteFile(filepath.Join(dir, "lanes.yaml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	start := func() (*exec.Cmd, *bytes.Buffer) {
		var out bytes.Buffer
		cmd := exec.Command(filepath.Join(bin, "sluice"), "run", "--data-dir", "state", "lanes.yaml")
		cmd.Dir, cmd.Stdout, cmd.Stderr = dir, &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &out
	}
	// A consumer follows what is committed, to kill the host once a tenth of the records are.
	follow, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer follow.Close()
	host, log1 := start()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for seen := 0; seen < n/10; {
		fs := follow.PollFetches(ctx)
		if ctx.Err() != nil {
			_ = host.Process.Kill()
			t.Fatalf("%d records reached Kafka within a minute; log:\n%s", seen, log1)
		}
		seen += fs.NumRecords()
	}
	_ = host.Process.Signal(syscall.SIGKILL) // its plugins die with it (parent-death signal)
	_ = host.Wait()
	host, log2 := start()
	done := make(chan error, 1)
	go func() { done <- host.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("second run: %v; log:\n%s", err, log2)
		}
	case <-time.After(3 * time.Minute):
		_ = host.Process.Kill()
		t.Fatalf("the second run did not complete; log:\n%s", log2)
	}
	got := committed(t, brokers, topic, 3*time.Second)
	seen := make([]int, n)
	last := map[string]int{}
	partOf := map[string]int32{}
	for _, r := range got {
		var v struct {
			Seq int `json:"seq"`
		}
		if err := json.Unmarshal(r.Value, &v); err != nil || v.Seq < 0 || v.Seq >= n {
			t.Fatalf("record %q: seq %d, %v", r.Value, v.Seq, err)
		}
		seen[v.Seq]++
		k := string(r.Key)
		if k != strconv.Itoa(v.Seq%keys) {
			t.Fatalf("record %d has key %q, want %d", v.Seq, k, v.Seq%keys)
		}
		if p, ok := partOf[k]; ok && p != r.Partition {
			t.Fatalf("key %s in partitions %d and %d", k, p, r.Partition)
		}
		partOf[k] = r.Partition
		if prev, ok := last[k]; ok && prev >= v.Seq {
			t.Fatalf("key %s: record %d after %d: order not kept", k, v.Seq, prev)
		}
		last[k] = v.Seq
	}
	for s, c := range seen {
		if c != 1 {
			t.Fatalf("record %d is in Kafka %d times (log of the second run:\n%s)", s, c, log2)
		}
	}
	parts := map[int32]bool{}
	for _, p := range partOf {
		parts[p] = true
	}
	if len(parts) != 4 {
		t.Errorf("the records are in %d partitions, want 4", len(parts))
	}
	if !bytes.Contains(log2.Bytes(), []byte("lanes=4")) {
		t.Errorf("the second run's log does not say it runs 4 lanes:\n%s", log2)
	}
	if bytes.Contains(log2.Bytes(), []byte("delivered=0")) {
		t.Errorf("the first run delivered everything before it was killed:\n%s", log2)
	}
	if os.Getenv("LANES_LOG") != "" {
		t.Logf("second run:\n%s", log2)
	}
	t.Logf("%d records, each exactly once in Kafka after SIGKILL of the host, in order per key, written by 4 lanes", len(got))
}
