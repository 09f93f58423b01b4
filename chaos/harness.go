package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mongooptions "go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/sluicehq/sluice/services"
)

// mode is the delivery guarantee a run asks of the Kafka sink.
type mode string

const (
	exactlyOnce mode = "exactly-once"  // kafka transactional: true
	atLeastOnce mode = "at-least-once" // kafka transactional: false: the host stores the buffer's position
	// unordered is exactly-once with ordered: false: each pipeline runs 4 sink lanes (4 Kafka sink
	// processes, each with its own transactional id), fed by key hash. Order holds per key only, which is
	// what the checks judge anyway.
	unordered mode = "unordered"
)

// unorderedLanes is the number of lanes of the unordered mode's pipelines.
const unorderedLanes = 4

func (m mode) transactional() bool { return m != atLeastOnce }

// exact reports whether the mode allows no duplicate.
func (m mode) exact() bool { return m != atLeastOnce }

// ordering is the mode's pipeline keys ordered and lanes, as the connector file writes them.
func (m mode) ordering() string {
	if m == unordered {
		return fmt.Sprintf("ordered: false\n    lanes: %d", unorderedLanes)
	}
	return "ordered: true"
}

// short names the mode in topic, collection and pipeline names.
func (m mode) short() string {
	switch m {
	case exactlyOnce:
		return "eo"
	case unordered:
		return "un"
	}
	return "alo"
}

// The kinds of kill.
const (
	killHost   = "host"
	killPlugin = "plugin"
	killRedis  = "redis"
	killBroker = "broker"
)

var killKinds = []string{killHost, killPlugin, killRedis, killBroker}

// pluginNames are the plugin processes a plugin kill picks from, in turn.
var pluginNames = []string{"mongodb", "redis", "kafka", "generate"}

// options configure a chaos run.
type options struct {
	// records is the number of records both pipelines carry together: a quarter are MongoDB changes, the
	// rest generated.
	records int
	// kills is the number of SIGKILLs, spread evenly over kinds.
	kills int
	// kinds are the kinds of kill to make (default killKinds: host, plugin, redis, broker).
	kinds []string
	// seed makes the kill plan, the kill moments and the writer's changes repeatable.
	seed uint64
	// duration is how long the MongoDB writer and the generate source take to produce their records: their
	// rates are set from it. Kills fall at random moments within it.
	duration time.Duration
	// stall is how long the harness waits for a record to arrive in Kafka, while some are missing, before
	// it calls the run hung.
	stall time.Duration
	// bin holds sluice and plugins/, as `make build` lays them out.
	bin string
	// dir is the work directory: the servers' data, each mode's connector file, state and host logs.
	dir string
	// progress receives the status lines (stderr).
	progress io.Writer
}

// servers are the servers the pipelines run against that the modes of a run share: Redis and Kafka. Each
// mode gets a MongoDB server of its own (startMongo), since mongo-java-server keeps everything in memory.
type servers struct {
	redis *services.Redis
	kafka *services.Kafka
}

// startServers starts redis-server (AOF, appendfsync always) and a Kafka node under dir.
func startServers(dir string, progress io.Writer) (*servers, error) {
	s := &servers{}
	fmt.Fprintln(progress, "chaos: starting redis-server (appendfsync always) and Kafka under", dir)
	var err error
	if s.redis, err = services.NewRedis(filepath.Join(dir, "redis"), services.RedisOptions{Persistence: "always"}); err != nil {
		return nil, err
	}
	if err := s.redis.Start(); err != nil {
		return nil, err
	}
	if s.kafka, err = services.NewKafka(filepath.Join(dir, "kafka")); err == nil {
		err = s.kafka.Start()
	}
	if err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// stop stops the servers that were started.
func (s *servers) stop() {
	if s.kafka != nil {
		_ = s.kafka.Stop(30 * time.Second)
	}
	if s.redis != nil {
		_ = s.redis.Stop(10 * time.Second)
	}
}

// mongoHeap is the test server's heap: it holds every document and every change (its oplog) in memory,
// and the cursors of killed clients; 512 MB ran short with 80,000 changes and a dozen kills.
const mongoHeap = "1g"

// startMongo starts a mongo-java-server under dir.
func startMongo(dir string) (*services.Mongo, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	m, err := services.NewMongo(dir, 0, services.MongoHeap(mongoHeap))
	if err != nil {
		return nil, err
	}
	if err := m.Start(); err != nil {
		_ = m.Kill()
		return nil, err
	}
	return m, nil
}

// result is what one mode's run found.
type result struct {
	mode        mode
	seed        uint64
	verdict     verdict
	kills       map[string]int
	redelivered redeliveries
	hostRuns    int
	took        time.Duration
	dir         string
	// problems are failures other than the verdict's counts: a hang, a host that exited by itself.
	problems []string
}

// killsTotal is the number of kills made.
func (r *result) killsTotal() int {
	n := 0
	for _, c := range r.kills {
		n += c
	}
	return n
}

// Line is the summary line.
func (r *result) Line() string {
	name := "chaos"
	if r.mode != exactlyOnce {
		name += " " + string(r.mode)
	}
	v := r.verdict
	s := fmt.Sprintf("%s: seed=%d records=%d kills=%d (host=%d plugin=%d redis=%d broker=%d) lost=%d duplicated=%d reordered=%d",
		name, r.seed, v.records, r.killsTotal(), r.kills[killHost], r.kills[killPlugin], r.kills[killRedis], r.kills[killBroker],
		v.lost, v.duplicated, v.reordered)
	if r.mode == atLeastOnce {
		s += fmt.Sprintf(" redelivered=%d", r.redelivered.total())
	}
	if v.unexpected > 0 {
		s += fmt.Sprintf(" unexpected=%d", v.unexpected)
	}
	return s
}

// Failures lists why the run failed; none when it passed. Exactly-once fails on any loss, duplicate,
// reorder or unexplained record; at-least-once on any loss, reorder or unexplained record, and on more
// duplicates than the records sluice reported as redelivered.
func (r *result) Failures() []string {
	f := slices.Clone(r.problems)
	v := r.verdict
	if v.lost > 0 {
		f = append(f, fmt.Sprintf("%d records lost", v.lost))
	}
	if v.reordered > 0 {
		f = append(f, fmt.Sprintf("%d records out of order within their key", v.reordered))
	}
	if v.unexpected > 0 {
		f = append(f, fmt.Sprintf("%d records in Kafka that no change explains", v.unexpected))
	}
	switch {
	case r.mode.exact() && v.duplicated > 0:
		f = append(f, fmt.Sprintf("%d duplicates", v.duplicated))
	case r.mode == atLeastOnce && int64(v.duplicated) > r.redelivered.total():
		f = append(f, fmt.Sprintf("%d duplicates, more than the %d records sluice reported as redelivered", v.duplicated, r.redelivered.total()))
	}
	return f
}

// modeRun is one mode's run in progress.
type modeRun struct {
	opts  options
	srv   *servers
	mode  mode
	dir   string
	rng   *rand.Rand
	start time.Time

	host     *host
	consumer *consumer
	writer   *writer
	nGen     int

	mu       sync.Mutex
	kills    map[string]int
	problems []string
	topics   []string // the pipelines' Kafka topics
	plugins  []string // pluginNames in the order plugin kills take them
	nextPlug int
}

// runMode runs the pipelines of one mode under kills and checks what arrived. An error means the harness
// could not do its work (a server did not start, the connector file is invalid); what sluice did wrong is
// in the result.
func runMode(ctx context.Context, opts options, srv *servers, m mode) (*result, error) {
	dir := filepath.Join(opts.dir, string(m))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	stream := map[mode]uint64{exactlyOnce: 1, atLeastOnce: 2, unordered: 3}[m]
	r := &modeRun{opts: opts, srv: srv, mode: m, dir: dir, rng: rand.New(rand.NewPCG(opts.seed, stream)),
		kills: map[string]int{}}
	nMongo := opts.records / 4
	r.nGen = opts.records - nMongo
	secs := opts.duration.Seconds()
	mongoTopic, genTopic := "chaos."+m.short()+".mongo", "chaos."+m.short()+".generate"
	topics := []string{mongoTopic, genTopic}
	r.topics = topics
	if err := createTopics(ctx, srv.kafka.Brokers, topics, 4); err != nil {
		return nil, err
	}

	mongoSrv, err := startMongo(filepath.Join(dir, "mongo"))
	if err != nil {
		return nil, fmt.Errorf("mongo-java-server: %w", err)
	}
	defer func() { _ = mongoSrv.Stop(5 * time.Second) }()
	client, err := mongo.Connect(mongooptions.Client().ApplyURI(mongoSrv.URI))
	if err != nil {
		return nil, err
	}
	defer func() { _ = client.Disconnect(context.Background()) }()
	coll := client.Database("chaos").Collection("orders_" + m.short())
	r.writer = newWriter(coll, r.rng.Uint64(), nMongo, float64(nMongo)/secs)

	conf := connectorFile(connectorParams{mode: m, mongoURI: mongoSrv.URI, database: "chaos", collection: coll.Name(),
		startAt: time.Now().Add(-time.Minute), redisAddr: srv.redis.Addr, brokers: srv.kafka.Brokers,
		mongoTopic: mongoTopic, genTopic: genTopic, generateCount: r.nGen, generateRate: float64(r.nGen) / secs,
		mongoPipe: "chaos-mongo-" + m.short(), generatePipe: "chaos-generate-" + m.short()})
	if err := os.WriteFile(filepath.Join(dir, "chaos.yaml"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	// Check the file and its steps before anything runs.
	for _, args := range [][]string{{"validate", "chaos.yaml"}, {"test", "chaos.yaml"}} {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		cmd := exec.CommandContext(cctx, filepath.Join(opts.bin, "sluice"), args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			return nil, fmt.Errorf("sluice %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
		}
	}

	if r.consumer, err = newConsumer(srv.kafka.Brokers, topics, mongoTopic); err != nil {
		return nil, err
	}
	defer r.consumer.Close()
	r.host = newHost(opts.bin, dir)
	r.start = time.Now()
	r.say("%d MongoDB changes at %.0f/s and %d generated records at %.0f/s over %s; %d kills; work dir %s",
		nMongo, float64(nMongo)/secs, r.nGen, float64(r.nGen)/secs, opts.duration, opts.kills, dir)
	if err := r.host.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = r.host.Stop(10 * time.Second) }()

	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	var writerErr error
	writerDone := make(chan struct{})
	go func() { defer close(writerDone); writerErr = r.writer.run(wctx) }()
	sctx, scancel := context.WithCancel(ctx)
	supervised := make(chan struct{})
	go func() { defer close(supervised); r.supervise(sctx) }()
	defer func() { scancel(); <-supervised }()

	if err := r.killLoop(ctx, writerDone, &writerErr); err != nil {
		return nil, err
	}
	// Let the writer finish: it paces itself over opts.duration; allow it as long again if the server is
	// slow.
	select {
	case <-writerDone:
		if writerErr != nil {
			return nil, writerErr
		}
	case <-time.After(time.Until(r.start.Add(2*opts.duration + time.Minute))):
		wcancel()
		return nil, fmt.Errorf("the MongoDB writer made %d of %d changes in %s: mongo-java-server is too slow for this rate; give a longer -duration",
			r.writer.written.Load(), nMongo, time.Since(r.start).Round(time.Second))
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	want := nMongo + r.nGen
	r.say("writer done; waiting for all %d records to arrive in Kafka", want)
	if err := r.waitFor(ctx, want); err != nil {
		r.problem("%v", err)
		r.diagnose(ctx)
	}
	scancel()
	<-supervised
	if err := r.host.Stop(time.Minute); err != nil {
		r.problem("stopping the host: %v", err)
	}
	r.consumer.Close()

	r.say("reading both topics back with a fresh read_committed consumer")
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Minute)
	msgs, err := readAll(rctx, srv.kafka.Brokers, topics, mongoTopic, 10*time.Second)
	rcancel()
	if err != nil {
		return nil, err
	}
	e := newExpectation()
	for k, vs := range r.writer.versions {
		ids := make([]string, len(vs))
		for i, v := range vs {
			ids[i] = k + "@" + v
		}
		e.add(k, 0, ids...)
	}
	for seq := range r.nGen {
		e.add(strconv.Itoa(seq%generateKeys), seq, "g"+strconv.Itoa(seq))
	}
	res := &result{mode: m, seed: opts.seed, verdict: check(e, msgs), kills: r.kills, hostRuns: len(r.host.Logs()),
		took: time.Since(r.start), dir: dir, problems: r.problems}
	if res.redelivered, err = redelivered(r.host.Logs()); err != nil {
		return nil, err
	}
	return res, nil
}

// killLoop makes the kills at random moments of the writing phase, each once the pipelines have made
// progress since the previous one.
func (r *modeRun) killLoop(ctx context.Context, writerDone <-chan struct{}, writerErr *error) error {
	plan := make([]string, 0, r.opts.kills)
	kinds := r.opts.kinds
	if len(kinds) == 0 {
		kinds = killKinds
	}
	for len(plan) < r.opts.kills {
		round := slices.Clone(kinds)
		r.rng.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		plan = append(plan, round[:min(len(round), r.opts.kills-len(plan))]...)
	}
	at := make([]time.Duration, len(plan))
	for i := range at {
		at[i] = time.Duration((0.05 + 0.9*r.rng.Float64()) * float64(r.opts.duration))
	}
	slices.Sort(at)
	r.plugins = slices.Clone(pluginNames)
	r.rng.Shuffle(len(r.plugins), func(i, j int) { r.plugins[i], r.plugins[j] = r.plugins[j], r.plugins[i] })

	last := 0
	for i, kind := range plan {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(r.start.Add(at[i]))):
		}
		select {
		case <-writerDone:
			if *writerErr != nil {
				return *writerErr
			}
		default:
		}
		// Each kill lands on a running pipeline: wait until something arrived since the previous one.
		if err := r.waitFor(ctx, last+1); err != nil {
			r.problem("before kill %d: %v", i+1, err)
			r.diagnose(ctx)
			return nil
		}
		last = r.consumer.Distinct()
		what, took, err := r.kill(kind)
		if err != nil {
			return fmt.Errorf("kill %d (%s): %w", i+1, what, err)
		}
		r.say("kill %d/%d: %s%s", i+1, len(plan), what, took)
	}
	return nil
}

// waitFor waits until at least n distinct records have arrived in Kafka, or every record expected so far
// has; it gives up (an error: the pipelines hang) when none arrives for opts.stall.
func (r *modeRun) waitFor(ctx context.Context, n int) error {
	got, since := r.consumer.Distinct(), time.Now()
	for {
		now := r.consumer.Distinct()
		if now >= n || now >= int(r.writer.written.Load())+r.nGen {
			return nil
		}
		if now > got {
			got, since = now, time.Now()
		}
		if time.Since(since) > r.opts.stall {
			return fmt.Errorf("hang: no new record arrived in Kafka for %s (%d of %d expected so far); host logs in %s",
				r.opts.stall, now, int(r.writer.written.Load())+r.nGen, r.dir)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// kill makes one kill of the kind and restarts what it killed (sluice restarts plugins itself). It
// returns what it killed and, for servers, how long the restart took.
func (r *modeRun) kill(kind string) (string, string, error) {
	switch kind {
	case killPlugin:
		if name, pid, ok := r.pickPlugin(); ok {
			if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
				r.count(killPlugin)
				return fmt.Sprintf("%s plugin (pid %d)", name, pid), "", nil
			}
		}
		// No plugin process to be found (the host is restarting its pipelines): kill the host instead.
		fallthrough
	case killHost:
		pid, err := r.host.Crash()
		r.count(killHost)
		return fmt.Sprintf("sluice host (pid %d)", pid), "", err
	case killRedis:
		pid, t := r.srv.redis.Pid(), time.Now()
		err := r.srv.redis.Crash()
		r.count(killRedis)
		return fmt.Sprintf("redis-server (pid %d)", pid), fmt.Sprintf(", restarted on its data in %s", time.Since(t).Round(100*time.Millisecond)), err
	case killBroker:
		pid, t := r.srv.kafka.Pid(), time.Now()
		err := r.srv.kafka.Crash()
		r.count(killBroker)
		return fmt.Sprintf("Kafka broker (pid %d)", pid), fmt.Sprintf(", restarted on its data in %s", time.Since(t).Round(100*time.Millisecond)), err
	}
	return kind, "", fmt.Errorf("unknown kill kind %q", kind)
}

// pickPlugin chooses the next plugin process to kill, taking the plugin names in turn and skipping those
// with no process running; it waits up to 30 s for one to be running.
func (r *modeRun) pickPlugin() (string, int, bool) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		running := r.host.Plugins()
		for j := range r.plugins {
			name := r.plugins[(r.nextPlug+j)%len(r.plugins)]
			if pids := running[name]; len(pids) > 0 {
				r.nextPlug = (r.nextPlug + j + 1) % len(r.plugins)
				return name, pids[r.rng.IntN(len(pids))], true
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return "", 0, false
}

// diagnose adds what Kafka shows about a hang to the problems.
func (r *modeRun) diagnose(ctx context.Context) {
	for _, d := range diagnoseKafka(ctx, r.srv.kafka.Brokers, r.topics) {
		r.problem("%s", d)
		r.say("%s", d)
	}
}

func (r *modeRun) count(kind string) {
	r.mu.Lock()
	r.kills[kind]++
	r.mu.Unlock()
}

// supervise restarts a host that exited by itself (noting it as a problem) and prints a status line every
// 10 s.
func (r *modeRun) supervise(ctx context.Context) {
	tick, status := time.NewTicker(500*time.Millisecond), time.NewTicker(10*time.Second)
	defer tick.Stop()
	defer status.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			what, err := r.host.Revive()
			if what != "" {
				r.problem("%s", what)
				r.say("%s; started it again", what)
			}
			if err != nil {
				r.problem("restarting the host: %v", err)
			}
		case <-status.C:
			r.mu.Lock()
			k := fmt.Sprintf("host=%d plugin=%d redis=%d broker=%d", r.kills[killHost], r.kills[killPlugin], r.kills[killRedis], r.kills[killBroker])
			r.mu.Unlock()
			retried := ""
			if n := r.writer.retried.Load(); n > 0 {
				retried = fmt.Sprintf(" (%d retried: the server stalled)", n)
			}
			r.say("MongoDB changes made %d/%d%s; records in Kafka %d/%d; kills %s",
				r.writer.written.Load(), r.writer.total, retried, r.consumer.Distinct(), r.writer.total+r.nGen, k)
		}
	}
}

func (r *modeRun) problem(format string, args ...any) {
	r.mu.Lock()
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// say prints a progress line, with the mode and the time since the run started.
func (r *modeRun) say(format string, args ...any) {
	fmt.Fprintf(r.opts.progress, "chaos %s %s: %s\n", r.mode, time.Since(r.start).Round(time.Second), fmt.Sprintf(format, args...))
}

// createTopics creates topics with the given partitions (replication 1), or checks that they exist.
func createTopics(ctx context.Context, brokers, topics []string, partitions int32) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopics(ctx, partitions, 1, nil, topics...)
	if err != nil {
		return fmt.Errorf("creating topics %v: %w", topics, err)
	}
	for _, t := range resp.Sorted() {
		if t.Err != nil && !errors.Is(t.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("creating topic %s: %w", t.Topic, t.Err)
		}
	}
	return nil
}

// redeliveryWarning is in what the host logs, with a "records" count, when records it sent to a sink that
// keeps no positions itself will be delivered again: after a stage failed (the records not acknowledged),
// or, in the next process, after the host was killed (the in-flight count it left in the data directory).
const redeliveryWarning = "delivered again"

// hostCrashWarning tells the second kind of redelivery warning from the first.
const hostCrashWarning = "previous sluice process"

// redeliveries are the records the host reported as redelivered, summed over the JSON logs of all its runs
// (a run that was killed printed no summary, but logged each warning as it happened).
type redeliveries struct {
	afterFailures, afterCrashes int64
}

func (r redeliveries) total() int64 { return r.afterFailures + r.afterCrashes }

func redelivered(logs []string) (redeliveries, error) {
	var total redeliveries
	for _, path := range logs {
		f, err := os.Open(path)
		if err != nil {
			return total, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line struct {
				Msg     string `json:"msg"`
				Records *int64 `json:"records"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil || line.Records == nil || !strings.Contains(line.Msg, redeliveryWarning) {
				continue
			}
			if strings.Contains(line.Msg, hostCrashWarning) {
				total.afterCrashes += *line.Records
			} else {
				total.afterFailures += *line.Records
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return total, fmt.Errorf("reading %s: %w", path, err)
		}
	}
	return total, nil
}
