package kafka

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/sdktest"
)

// The test binary is also the process killed mid-transaction: started with envHelper set to a pipeline
// id and envHelperSettings to the sink's settings (JSON), it writes batch 0..4, says "ready" on stdout,
// waits for a line on stdin, produces batch 5..9, says "open" before committing it, and waits to be
// killed.
const (
	envHelper         = "KAFKA_TEST_MID_TRANSACTION"
	envHelperSettings = "KAFKA_TEST_MID_TRANSACTION_SETTINGS"
)

// midTransaction is the helper process's body; it never returns.
func midTransaction(pipeline string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "mid-transaction helper:", err)
		os.Exit(2)
	}
	var settings map[string]any
	if err := json.Unmarshal([]byte(os.Getenv(envHelperSettings)), &settings); err != nil {
		fail(err)
	}
	ctx := context.Background()
	s := &Sink{}
	if err := s.Open(ctx, sdk.OpenRequest{Pipeline: pipeline, Settings: sdk.Settings(settings)}); err != nil {
		fail(err)
	}
	if _, err := s.Checkpoint(ctx); err != nil {
		fail(err)
	}
	if err := s.Write(ctx, makeBatch(0, 5)); err != nil {
		fail(err)
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fail(err)
	}
	s.beforeCommit = func() {
		fmt.Println("open")
		select {}
	}
	fail(s.Write(ctx, makeBatch(5, 5)))
}

// sinkRun names a pipeline's sink and its settings.
type sinkRun struct {
	pipeline string
	settings map[string]any
}

// killMidTransaction runs each sink in a process of its own until all of them hold a transaction open
// (batch 0..4 committed, batch 5..9 produced and not committed) and kills them with SIGKILL. They write
// their first batch before any opens its transaction: none has to wait for another's at its start.
func killMidTransaction(t testing.TB, sinks ...sinkRun) {
	t.Helper()
	type helper struct {
		cmd    *exec.Cmd
		in     io.WriteCloser
		out    *bufio.Reader
		stderr *strings.Builder
	}
	var helpers []helper
	defer func() {
		for _, h := range helpers {
			_ = h.cmd.Process.Signal(syscall.SIGKILL)
			_ = h.cmd.Wait()
		}
	}()
	for _, s := range sinks {
		js, err := json.Marshal(s.settings)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envHelper+"="+s.pipeline, envHelperSettings+"="+string(js))
		h := helper{cmd: cmd, stderr: &strings.Builder{}}
		cmd.Stderr = h.stderr
		if h.in, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		h.out = bufio.NewReader(out)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		helpers = append(helpers, h)
	}
	expect := func(want string) {
		for i, h := range helpers {
			if line, err := h.out.ReadString('\n'); line != want+"\n" {
				t.Fatalf("the process of %s said %q (%v), want %q; stderr:\n%s", sinks[i].pipeline, line, err, want, h.stderr)
			}
		}
	}
	expect("ready")
	for _, h := range helpers {
		if _, err := io.WriteString(h.in, "go\n"); err != nil {
			t.Fatal(err)
		}
	}
	expect("open")
}

// stableLag returns how far the last stable offset of the progress topic's partition part lags behind
// its end: more than 0 while a transaction is open there.
func stableLag(t testing.TB, brokers []string, topic string, part int32) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	stable, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := ends.Lookup(topic, part)
	s, _ := stable.Lookup(topic, part)
	return e.Offset - s.Offset
}

// TestRestartAfterKill: two pipelines share a progress topic (one partition); both are killed with
// SIGKILL mid-transaction. The restarted one logs the transaction it waits for (its own), resumes after
// its last committed batch although the other's transaction is still open on the progress partition, and
// goes on writing; the other, restarted in turn, resumes after its own.
func TestRestartAfterKill(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		topicA, topicB := newTopic(t, b.brokers, 1), newTopic(t, b.brokers, 1)
		progress := topicA + "-shared-progress"
		settingsA := settingsFor(b, topicA, map[string]any{"progress_topic": progress})
		// The other pipeline's transaction stays open for the whole test unless someone waits for it.
		settingsB := settingsFor(b, topicB, map[string]any{"progress_topic": progress, "transaction_timeout": "10m"})
		killMidTransaction(t, sinkRun{"kill-other", settingsB}, sinkRun{"kill-restarted", settingsA})

		var logs sdktest.Output
		s := &Sink{}
		octx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		began := time.Now()
		if err := s.Open(octx, sdk.OpenRequest{Pipeline: "kill-restarted", Settings: sdk.Settings(settingsA),
			Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
			t.Fatal(err)
		}
		defer s.Close(ctx)
		cp, err := s.Checkpoint(octx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Open and Checkpoint after SIGKILL: %s; log:\n%s", time.Since(began).Round(time.Millisecond), logs.String())
		if !cp.Equal(pos(4)) {
			t.Fatalf("Checkpoint = %q, want %q", cp, pos(4))
		}
		for _, want := range []string{"an earlier instance of this sink left a transaction open", "transactional_id=sluice-kill-restarted",
			"state=", "expected=\"under a second"} {
			if !strings.Contains(logs.String(), want) {
				t.Fatalf("the log does not say %q:\n%s", want, logs.String())
			}
		}
		if lag := stableLag(t, b.brokers, progress, s.progressPart); lag <= 0 {
			t.Fatalf("no transaction is open on %s any more: the test shows nothing", progress)
		}
		if err := s.Write(ctx, makeBatch(5, 5)); err != nil {
			t.Fatal(err)
		}
		verify(t, b.brokers, topicA, makeBatch(0, 10).Records)

		other := openSink(t, "kill-other", settingsB, false)
		if got := checkpoint(t, other); !got.Equal(pos(4)) {
			t.Fatalf("Checkpoint of the other pipeline = %q, want %q", got, pos(4))
		}
		verify(t, b.brokers, topicB, makeBatch(0, 5).Records)
	})
}

// BenchmarkRestartAfterKill measures what a restart after SIGKILL costs — Open and Checkpoint of a sink
// whose previous instance was killed mid-transaction — while another pipeline sharing its progress topic,
// killed mid-transaction at the same time and not restarted, holds a transaction open there (for its
// transaction_timeout, the default 1m). Real Kafka:
//
//	go test -run '^$' -bench RestartAfterKill -benchtime 3x .
func BenchmarkRestartAfterKill(b *testing.B) {
	k := realKafka(b)
	be := backend{brokers: k.Brokers}
	progress := newTopic(b, k.Brokers, 1) + "-shared-progress"
	ctx := context.Background()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		topicA, topicB := newTopic(b, k.Brokers, 1), newTopic(b, k.Brokers, 1)
		settingsA := settingsFor(be, topicA, map[string]any{"progress_topic": progress})
		killMidTransaction(b, sinkRun{topicB, settingsFor(be, topicB, map[string]any{"progress_topic": progress})}, sinkRun{topicA, settingsA})
		s := &Sink{}
		b.StartTimer()
		began := time.Now()
		if err := s.Open(ctx, sdk.OpenRequest{Pipeline: topicA, Settings: sdk.Settings(settingsA)}); err != nil {
			b.Fatal(err)
		}
		cp, err := s.Checkpoint(ctx)
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(began)
		b.StopTimer()
		total += took
		b.Logf("restart %d: Open and Checkpoint took %s", i, took.Round(time.Millisecond))
		if !cp.Equal(pos(4)) {
			b.Fatalf("Checkpoint = %q, want %q", cp, pos(4))
		}
		_ = s.Close(ctx)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/restart")
}
