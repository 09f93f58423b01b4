package cluster_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/sluicehq/sluice/runtime/api"
	"github.com/sluicehq/sluice/sdk/sdktest"
	"github.com/sluicehq/sluice/services"
)

// e2eTTL is the lease TTL of the end-to-end tests.
const e2eTTL = 3 * time.Second

// host is one sluice instance run by a test: the real binary, serving its API on a port of its own, in a
// directory the instances share (as machines would share the connector files).
type host struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	out  *sdktest.Output
	done chan struct{}
}

func startHost(t testing.TB, bin, dir, conf, name string) *host {
	t.Helper()
	h := &host{t: t, name: name, out: &sdktest.Output{}, done: make(chan struct{})}
	// Port 0: the host takes a free port itself and logs its URL (addr), so no other process can have
	// bound it between a choice made here and the host's start.
	h.cmd = exec.Command(filepath.Join(bin, "sluice"), "run", "--instance", name, "--http", "127.0.0.1:0", "--progress", "off", conf)
	h.cmd.Dir, h.cmd.Stdout, h.cmd.Stderr = dir, h.out, h.out
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = h.cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		h.kill()
		if t.Failed() {
			t.Logf("output of %s (pid %d):\n%s", name, h.cmd.Process.Pid, tail(h.out.String(), 60))
		}
	})
	return h
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (h *host) running() bool {
	select {
	case <-h.done:
		return false
	default:
		return true
	}
}

// kill ends the host with SIGKILL (its plugins die with it: parent-death signal).
func (h *host) kill() {
	if h.running() {
		_ = h.cmd.Process.Signal(syscall.SIGKILL)
		<-h.done
	}
}

// stop asks the host to stop (SIGTERM: drain, release its leases) and waits for it.
func (h *host) stop() {
	if !h.running() {
		return
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(90 * time.Second):
		h.t.Errorf("%s did not stop within 90s of SIGTERM", h.name)
		h.kill()
	}
}

// servingURL matches the line sluice logs when it serves HTTP, and captures the address.
var servingURL = regexp.MustCompile(`msg="serving the status page and HTTP API" url=http://([0-9.]+:[0-9]+)/`)

// addr returns the address the host serves HTTP on, once it has logged it.
func (h *host) addr() (string, error) {
	m := servingURL.FindStringSubmatch(h.out.String())
	if m == nil {
		return "", fmt.Errorf("%s has not said where it serves HTTP yet", h.name)
	}
	return m[1], nil
}

// list asks the host for its pipelines.
func (h *host) list() (*api.List, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	addr, err := h.addr()
	if err != nil {
		return nil, err
	}
	resp, err := c.Get("http://" + addr + "/api/pipelines")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var l api.List
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return nil, err
	}
	return &l, nil
}

// runs returns the host's view of pipeline id when the host itself runs it: state running, under its own
// lease.
func (h *host) runs(id string) (api.Pipeline, bool) {
	if !h.running() {
		return api.Pipeline{}, false
	}
	l, err := h.list()
	if err != nil {
		return api.Pipeline{}, false
	}
	for _, p := range l.Pipelines {
		if p.ID == id && p.State == "running" && p.Lease != nil && p.Lease.Here {
			return p, true
		}
	}
	return api.Pipeline{}, false
}

// held counts the pipelines the host runs.
func (h *host) held() int {
	l, err := h.list()
	if err != nil {
		return 0
	}
	n := 0
	for _, p := range l.Pipelines {
		if p.Lease != nil && p.Lease.Here {
			n++
		}
	}
	return n
}

func waitUntil(t testing.TB, timeout time.Duration, what string, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > timeout {
			t.Fatalf("not within %s: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// committed reads every record of topic committed to Kafka (read_committed), stopping after idle without
// new ones.
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
			out = append(out, r)
			got++
		})
		if got == 0 {
			return out
		}
	}
}

// changeIDs counts the change events in records by their resume token (the event's _id).
func changeIDs(t *testing.T, recs []*kgo.Record) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for _, r := range recs {
		var ev struct {
			ID json.RawMessage `json:"_id"`
		}
		if err := json.Unmarshal(r.Value, &ev); err != nil || len(ev.ID) == 0 {
			t.Fatalf("record %s is not a change event: %v", r.Value, err)
		}
		seen[string(ev.ID)]++
	}
	return seen
}

// seqs reads the seq of every line of a generate → file output.
func seqs(t *testing.T, path string) []int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []int
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r struct {
			Seq *int `json:"seq"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.Seq == nil {
			t.Fatalf("%s: line %q is not a generate record: %v", path, sc.Text(), err)
		}
		out = append(out, *r.Seq)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkSeqs checks that path holds every seq from 0 to its largest, each once when exact; it returns how
// many lines it has and how many are duplicates.
func checkSeqs(t *testing.T, path string, exact bool) (n, dups int) {
	t.Helper()
	all := seqs(t, path)
	if len(all) == 0 {
		t.Fatalf("%s is empty", path)
	}
	count := map[int]int{}
	top := 0
	for _, s := range all {
		count[s]++
		top = max(top, s)
	}
	for s := 0; s <= top; s++ {
		switch c := count[s]; {
		case c == 0:
			t.Fatalf("%s: seq %d is missing (%d lines, up to seq %d)", path, s, len(all), top)
		case c > 1 && exact:
			t.Fatalf("%s: seq %d is there %d times (exactly-once)", path, s, c)
		}
		dups += max(count[s]-1, 0)
	}
	return len(all), dups
}

// chain is the connector file of the tests: mongodb → redis → kafka (exactly-once), two generate → redis
// → file-atomic (exactly-once) and a generate → file whose positions the host keeps in Redis
// (at-least-once).
func chain(redisAddr, mongoURI, collection string, brokers []string, topic string) string {
	return fmt.Sprintf(`version: 1
cluster:
  redis: { addr: %[1]q }
  lease_ttl: %[6]s
pipelines:
  - id: orders
    source:
      plugin: mongodb
      settings: { uri: %[2]q, database: shop, collection: %[3]q, max_await: 200ms, start_at: %[7]q }
    transforms:
      - route: '%[5]q'
    buffer: { plugin: redis, settings: { addr: %[1]q } }
    sink: { plugin: kafka, settings: { brokers: [%[4]q], auto_create_topics: true } }
    batch_max_records: 50
  - id: gen-a
    source: { plugin: generate, settings: { rate: 300 } }
    buffer: { plugin: redis, settings: { addr: %[1]q } }
    sink: { plugin: file-atomic, settings: { path: out/gen-a.jsonl } }
  - id: gen-b
    source: { plugin: generate, settings: { rate: 300 } }
    buffer: { plugin: redis, settings: { addr: %[1]q } }
    sink: { plugin: file-atomic, settings: { path: out/gen-b.jsonl } }
  - id: gen-c
    source: { plugin: generate, settings: { rate: 300 } }
    sink: { plugin: file, settings: { path: out/gen-c.jsonl } }
`, redisAddr, mongoURI, collection, brokers[0], topic, e2eTTL, time.Now().Add(-time.Minute).UTC().Format(time.RFC3339))
}

// writerMax bounds what a writer inserts (200 documents a second), so that Kafka's catching up after a
// slow phase stays bounded too.
const writerMax = 10000

// writer inserts documents into a collection until stopped (or writerMax), and counts them.
type writer struct {
	n    atomic.Int64
	stop chan struct{}
	done chan error
}

func startWriter(t *testing.T, uri, collection string) *writer {
	t.Helper()
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	coll := client.Database("shop").Collection(collection)
	w := &writer{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		for i := 0; ; i += 20 {
			select {
			case <-w.stop:
				w.done <- nil
				return
			default:
			}
			if i >= writerMax {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			docs := make([]any, 20)
			for j := range docs {
				docs[j] = bson.D{{Key: "_id", Value: i + j}, {Key: "n", Value: i + j}}
			}
			if _, err := coll.InsertMany(context.Background(), docs); err != nil {
				w.done <- err
				return
			}
			w.n.Add(20)
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return w
}

func (w *writer) finish(t *testing.T) int {
	t.Helper()
	close(w.stop)
	if err := <-w.done; err != nil {
		t.Fatal(err)
	}
	return int(w.n.Load())
}

// TestSeveralInstances runs the real sluice as several instances sharing the pipelines of one connector
// file, with real redis-server, mongo-java-server and Kafka:
//
//   - failover: three instances share four pipelines (mongodb → redis → kafka, two generate → redis →
//     file-atomic, generate → file); the instance running the MongoDB pipeline is killed with SIGKILL,
//     again and again, and started again each time. Another instance takes the pipeline over within
//     about the lease TTL, the returning instance gets pipelines back, and in the end Kafka holds every
//     change exactly once (read_committed, counted by resume token), the exactly-once files every record
//     once, and the at-least-once file every record.
//   - zombie: the instance running the pipelines is frozen (SIGSTOP) past its lease TTL; another takes
//     them over; the first is let go on (SIGCONT). It stops its pipelines at once, and nothing it does
//     reaches Redis (the buffer's fencing token and the state store's positions stay the new holder's),
//     Kafka (every change exactly once) or the state store.
//   - renewal: Redis is frozen under an instance: it kills its pipeline's plugins before the lease can
//     expire, and runs the pipeline again once Redis is back.
func TestSeveralInstances(t *testing.T) {
	kafkaNode := services.StartKafka(t)
	mongoSrv := services.StartMongo(t)
	bin := services.Binaries(t, "mongodb", "redis", "kafka", "generate", "file", "file-atomic")
	t.Run("failover", func(t *testing.T) { failover(t, bin, kafkaNode.Brokers, mongoSrv.URI) })
	t.Run("zombie", func(t *testing.T) { zombie(t, bin, kafkaNode.Brokers, mongoSrv.URI) })
	t.Run("renewal", func(t *testing.T) { renewal(t, bin) })
}

// renewal freezes Redis (SIGSTOP) under an instance running a pipeline: the instance cannot renew the
// lease, and kills the pipeline's plugin processes before Redis could expire the lease (by the lease's
// last renewal that Redis applied, plus the TTL). With Redis back, it takes the lease again, with a new
// token, and the pipeline goes on where its stored position says.
func renewal(t *testing.T, bin string) {
	redisSrv := services.StartRedis(t, services.RedisOptions{})
	rdb := goredis.NewClient(&goredis.Options{Addr: redisSrv.Addr})
	defer rdb.Close()
	dir := t.TempDir()
	conf := fmt.Sprintf(`version: 1
cluster: { redis: { addr: %q }, lease_ttl: %s }
pipelines:
  - id: gen
    source: { plugin: generate, settings: { rate: 500 } }
    sink: { plugin: file, settings: { path: out/gen.jsonl } }
`, redisSrv.Addr, e2eTTL)
	if err := os.WriteFile(filepath.Join(dir, "gen.yaml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startHost(t, bin, dir, "gen.yaml", "renew-a")
	var before api.Pipeline
	waitUntil(t, 60*time.Second, "a running gen", func() bool {
		var ok bool
		before, ok = a.runs("gen")
		return ok && len(before.Stages) == 2
	})
	time.Sleep(time.Second)
	// The last renewal Redis applied before it froze: the lease expires a TTL after it. (Read after the
	// freeze, the field would show a renewal that was sent before and applied after it: Redis runs what
	// was waiting in its sockets when it wakes up.)
	renewed, err := rdb.HGet(context.Background(), "sluice:lease:{gen}:info", "renewed").Int64()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(redisSrv.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	gone := func() bool {
		for _, st := range before.Stages {
			if syscall.Kill(*st.Pid, 0) == nil {
				return false
			}
		}
		return true
	}
	waitUntil(t, 4*e2eTTL, "the pipeline's plugin processes gone while Redis is frozen", gone)
	dead := time.Now()
	if err := syscall.Kill(redisSrv.Pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	expiry := time.UnixMilli(renewed).Add(e2eTTL)
	if !dead.Before(expiry) {
		t.Fatalf("the plugins were gone %s after the lease could expire", dead.Sub(expiry))
	}
	t.Logf("Redis frozen %s after the last renewal it applied; the pipeline's plugins were gone %s later, %s before the lease could expire",
		frozen.Sub(time.UnixMilli(renewed)).Round(time.Millisecond), dead.Sub(frozen).Round(time.Millisecond), expiry.Sub(dead).Round(time.Millisecond))
	waitUntil(t, 10*e2eTTL, "a running gen again under a new lease", func() bool {
		p, ok := a.runs("gen")
		return ok && *p.Lease.Token > *before.Lease.Token
	})
	if !strings.Contains(a.out.String(), `msg="cluster: lease lost; stopping the pipeline at once" pipeline=gen`) {
		t.Error("a did not log that it lost the lease")
	}
	time.Sleep(time.Second)
	a.stop()
	n, dups := checkSeqs(t, filepath.Join(dir, "out", "gen.jsonl"), false)
	t.Logf("gen: %d records, none missing, %d delivered twice", n, dups)
}

func failover(t *testing.T, bin string, brokers []string, mongoURI string) {
	redisSrv := services.StartRedis(t, services.RedisOptions{})
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "out"), 0o755); err != nil {
		t.Fatal(err)
	}
	topic := fmt.Sprintf("orders-failover-%d", time.Now().UnixNano()%1e9)
	if err := os.WriteFile(filepath.Join(dir, "chain.yaml"), []byte(chain(redisSrv.Addr, mongoURI, "failover", brokers, topic)), 0o644); err != nil {
		t.Fatal(err)
	}
	names := []string{"etl-1", "etl-2", "etl-3"}
	hosts := map[string]*host{}
	for _, n := range names {
		hosts[n] = startHost(t, bin, dir, "chain.yaml", n)
	}
	// Four pipelines over three instances: 2, 1, 1.
	waitUntil(t, 90*time.Second, "every pipeline running, spread over the three instances", func() bool {
		total, most := 0, 0
		for _, h := range hosts {
			n := h.held()
			total, most = total+n, max(most, n)
		}
		return total == 4 && most == 2
	})
	w := startWriter(t, mongoURI, "failover")
	waitUntil(t, 60*time.Second, "changes arriving in Kafka", func() bool { return len(committed(t, brokers, topic, time.Second)) > 0 })

	var takeovers, rebalances []time.Duration
	for round := 1; round <= 4; round++ {
		var victim *host
		var before api.Pipeline
		waitUntil(t, 60*time.Second, "an instance running orders", func() bool {
			for _, h := range hosts {
				if p, ok := h.runs("orders"); ok {
					victim, before = h, p
					return true
				}
			}
			return false
		})
		victim.kill()
		killed := time.Now()
		var next *host
		waitUntil(t, 20*e2eTTL, "another instance running orders after SIGKILL of "+victim.name, func() bool {
			for _, h := range hosts {
				if p, ok := h.runs("orders"); ok && h != victim && *p.Lease.Token > *before.Lease.Token {
					next = h
					return true
				}
			}
			return false
		})
		took := time.Since(killed)
		takeovers = append(takeovers, took)
		t.Logf("round %d: killed %s (token %d); %s runs orders %s later", round, victim.name, *before.Lease.Token, next.name,
			took.Round(time.Millisecond))
		// The killed instance comes back and gets pipelines again.
		back := startHost(t, bin, dir, "chain.yaml", victim.name)
		hosts[victim.name] = back
		returned := time.Now()
		waitUntil(t, 30*e2eTTL, victim.name+" running pipelines again after it returned", func() bool { return back.held() > 0 })
		rebalances = append(rebalances, time.Since(returned))
		time.Sleep(2 * time.Second)
	}
	inserted := w.finish(t)

	var got []*kgo.Record
	waitUntil(t, 3*time.Minute, fmt.Sprintf("%d changes in Kafka", inserted), func() bool {
		got = committed(t, brokers, topic, 3*time.Second)
		return len(got) >= inserted
	})
	for _, h := range hosts {
		h.stop()
	}
	got = committed(t, brokers, topic, 3*time.Second)
	ids := changeIDs(t, got)
	for id, n := range ids {
		if n != 1 {
			t.Fatalf("change %s is in Kafka %d times", id, n)
		}
	}
	if len(got) != inserted || len(ids) != inserted {
		t.Fatalf("Kafka holds %d changes (%d distinct), want %d: every change exactly once", len(got), len(ids), inserted)
	}
	for _, name := range []string{"gen-a", "gen-b"} {
		n, _ := checkSeqs(t, filepath.Join(dir, "out", name+".jsonl"), true)
		t.Logf("%s: %d records, each once", name, n)
	}
	n, dups := checkSeqs(t, filepath.Join(dir, "out", "gen-c.jsonl"), false)
	t.Logf("gen-c (at-least-once, positions in Redis): %d records, none missing, %d delivered twice", n, dups)
	slices.Sort(takeovers)
	slices.Sort(rebalances)
	t.Logf("%d changes exactly once in Kafka across %d SIGKILLs; takeover (SIGKILL to running elsewhere) median %s, worst %s, lease TTL %s; an instance that returned ran pipelines again after median %s, worst %s",
		inserted, len(takeovers), takeovers[len(takeovers)/2].Round(time.Millisecond), takeovers[len(takeovers)-1].Round(time.Millisecond),
		e2eTTL, rebalances[len(rebalances)/2].Round(time.Millisecond), rebalances[len(rebalances)-1].Round(time.Millisecond))
}

func zombie(t *testing.T, bin string, brokers []string, mongoURI string) {
	redisSrv := services.StartRedis(t, services.RedisOptions{})
	rdb := goredis.NewClient(&goredis.Options{Addr: redisSrv.Addr})
	defer rdb.Close()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "out"), 0o755); err != nil {
		t.Fatal(err)
	}
	topic := fmt.Sprintf("orders-zombie-%d", time.Now().UnixNano()%1e9)
	if err := os.WriteFile(filepath.Join(dir, "chain.yaml"), []byte(chain(redisSrv.Addr, mongoURI, "zombie", brokers, topic)), 0o644); err != nil {
		t.Fatal(err)
	}
	w := startWriter(t, mongoURI, "zombie")
	a := startHost(t, bin, dir, "chain.yaml", "zombie-a")
	ids := []string{"orders", "gen-a", "gen-b", "gen-c"}
	waitUntil(t, 90*time.Second, "a running every pipeline", func() bool { return a.held() == 4 })
	waitUntil(t, 60*time.Second, "changes arriving in Kafka", func() bool { return len(committed(t, brokers, topic, time.Second)) > 0 })
	before := map[string]int64{}
	for _, id := range ids {
		p, _ := a.runs(id)
		before[id] = *p.Lease.Token
	}

	// Freeze a; b takes everything over once a's leases have expired.
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	b := startHost(t, bin, dir, "chain.yaml", "zombie-b")
	tokens := map[string]int64{}
	waitUntil(t, 20*e2eTTL, "b running every pipeline", func() bool {
		for _, id := range ids {
			p, ok := b.runs(id)
			if !ok {
				return false
			}
			tokens[id] = *p.Lease.Token
		}
		return true
	})
	for _, id := range ids {
		if tokens[id] <= before[id] {
			t.Fatalf("%s: b's token %d is not greater than a's %d", id, tokens[id], before[id])
		}
	}
	time.Sleep(2 * time.Second) // b writes under its leases
	t.Logf("a frozen for %s; b runs every pipeline", time.Since(frozen).Round(time.Millisecond))

	// Let a go on. Whatever it still had in hand must not reach Redis, Kafka or the state store: it runs
	// nothing more under its old leases. (It may get pipelines again under new leases: b, holding all
	// four, hands some over to it.)
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	resumed := time.Now()
	for time.Since(resumed) < 4*e2eTTL {
		for _, id := range []string{"orders", "gen-a", "gen-b"} {
			fence, err := rdb.HGet(ctx, "sluice:{"+id+"}:meta", "fence").Int64()
			if err != nil || fence < tokens[id] {
				t.Fatalf("%s: the buffer's fencing token is %d (%v), older than b's %d", id, fence, err, tokens[id])
			}
		}
		tok, err := rdb.HGet(ctx, "sluice:state:{gen-c}", "source:token").Int64()
		if err != nil || tok < tokens["gen-c"] {
			t.Fatalf("gen-c: the stored position was written under token %d (%v), older than b's %d", tok, err, tokens["gen-c"])
		}
		// What a shows: once its overdue lease timers have run (they fire as soon as it runs again; half a
		// second allows for a loaded machine), no pipeline running, and no lease claimed, under an old lease.
		// A pipeline being torn down shows stopped or failed meanwhile.
		if l, err := a.list(); err == nil && time.Since(resumed) > 500*time.Millisecond {
			for _, p := range l.Pipelines {
				newer := p.Lease != nil && p.Lease.Token != nil && *p.Lease.Token > tokens[p.ID]
				if !newer && (p.State == "running" || p.Lease != nil && p.Lease.Here) {
					t.Fatalf("a, unfrozen for %s, shows %s %s with lease %+v (here %t): running or held under a lease no newer than b's",
						time.Since(resumed).Round(time.Millisecond), p.ID, p.State, p.Lease, p.Lease != nil && p.Lease.Here)
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, id := range ids {
		if !strings.Contains(a.out.String(), `msg="cluster: lease lost; stopping the pipeline at once" pipeline=`+id) {
			t.Errorf("a did not log that it lost the lease of %s", id)
		}
	}
	inserted := w.finish(t)
	var got []*kgo.Record
	waitUntil(t, 3*time.Minute, fmt.Sprintf("%d changes in Kafka", inserted), func() bool {
		got = committed(t, brokers, topic, 3*time.Second)
		return len(got) >= inserted
	})
	a.stop()
	b.stop()
	got = committed(t, brokers, topic, 3*time.Second)
	seen := changeIDs(t, got)
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("change %s is in Kafka %d times", id, n)
		}
	}
	if len(got) != inserted {
		t.Fatalf("Kafka holds %d changes, want %d: every change exactly once", len(got), inserted)
	}
	for _, name := range []string{"gen-a", "gen-b"} {
		checkSeqs(t, filepath.Join(dir, "out", name+".jsonl"), true)
	}
	_, dups := checkSeqs(t, filepath.Join(dir, "out", "gen-c.jsonl"), false)
	refused := strings.Count(a.out.String(), "fenced") + strings.Count(a.out.String(), "position not stored")
	t.Logf("a unfrozen: it stopped its pipelines at once; nothing it did under its old leases reached Redis, Kafka or the state store (%d writes refused in its log); %d changes exactly once in Kafka; gen-c %d duplicates",
		refused, inserted, dups)
}
