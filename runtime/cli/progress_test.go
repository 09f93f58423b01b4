package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/runtime/api"
	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/runtime/state"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/sdktest"
)

// These tests drive the ops flags as run.go does — addOpsFlags, begin, serve, stop — over real pipelines
// of the plugins linked into sluice, run in-process.

type linkedStarter struct{}

func (linkedStarter) Start(_ context.Context, name string, _ sdk.Kind, _ bool, _ *slog.Logger) (*protocol.Conn, error) {
	for _, p := range linked {
		if pl := p(); pl.Spec.Name == name {
			return protocol.Local(pl)
		}
	}
	return nil, fmt.Errorf("no linked plugin %q", name)
}

// runOrders runs generate (rate records/s) → discard until the test ends and returns its status func.
func runOrders(t *testing.T, rate float64) func() []pipeline.Status {
	t.Helper()
	store, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := pipeline.New(pipeline.Config{ID: "orders",
		Source: pipeline.Stage{Plugin: "generate", Settings: map[string]any{"rate": rate}},
		Sink:   pipeline.Stage{Plugin: "discard"}}, linkedStarter{}, store, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		store.Close()
	})
	return func() []pipeline.Status { return []pipeline.Status{p.Status()} }
}

// opsFor parses args into run's ops flags and returns them with globals whose stderr (and log) is a buffer.
func opsFor(t *testing.T, args ...string) (*opsFlags, *globals, *sdktest.Output) {
	t.Helper()
	cmd := &cobra.Command{Use: "run"}
	o := addOpsFlags(cmd)
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	stderr := &sdktest.Output{}
	g := &globals{stdout: io.Discard, stderr: stderr, logLevel: "info", logFormat: "text"}
	l, err := newLogger(stderr, g.logLevel, g.logFormat, g.secrets)
	if err != nil {
		t.Fatal(err)
	}
	g.logger = l
	return o, g, stderr
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOpsServeAndLogProgress(t *testing.T) {
	statuses := runOrders(t, 1000)
	o, g, stderr := opsFor(t, "--http", "127.0.0.1:0", "--progress", "log", "--progress-every", "500ms")
	if err := o.begin(g); err != nil {
		t.Fatal(err)
	}
	defer o.stop()
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "sluice_up 1\n") })
	o.serve(statuses, metrics)
	base := "http://" + o.ln.Addr().String()
	if !strings.Contains(stderr.String(), "msg=\"serving the status page and HTTP API\" url="+base+"/") {
		t.Errorf("no log line with the server's URL:\n%s", stderr)
	}

	waitUntil(t, 10*time.Second, "/api/pipelines to show orders delivering", func() bool {
		resp, err := http.Get(base + "/api/pipelines")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var l api.List
		if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
			t.Fatal(err)
		}
		return len(l.Pipelines) == 1 && l.Pipelines[0].State == "running" && l.Pipelines[0].Delivered > 0
	})
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "sluice_up 1\n" {
		t.Errorf("GET /metrics = %q, want the handler given to serve", body)
	}

	waitUntil(t, 10*time.Second, "two progress log lines with a rate", func() bool {
		return strings.Count(stderr.String(), "msg=progress pipeline=orders state=running") >= 2 &&
			strings.Contains(stderr.String(), "delivered_per_second=")
	})
	o.stop()
	logged := stderr.String()
	for _, line := range strings.Split(logged, "\n") {
		if !strings.Contains(line, "msg=progress") || !strings.Contains(line, "delivered_per_second=") {
			continue
		}
		// The rate is measured between reports; the source paces itself at 1000/s (catching up at most
		// 100 records after a stall).
		_, after, _ := strings.Cut(line, "delivered_per_second=")
		v, err := strconv.ParseFloat(strings.Fields(after)[0], 64)
		if err != nil || v <= 0 || v > 1400 {
			t.Errorf("rate in %q: %v %v", line, v, err)
		}
		for _, unknown := range []string{"lag=", "buffer_", "snapshot_", "—"} {
			if strings.Contains(line, unknown) {
				t.Errorf("a value that is not known is logged: %q", line)
			}
		}
	}
	if _, err := net.Dial("tcp", o.ln.Addr().String()); err == nil {
		t.Error("still serving after stop")
	}
	n := strings.Count(logged, "msg=progress")
	time.Sleep(700 * time.Millisecond)
	if m := strings.Count(stderr.String(), "msg=progress"); m != n {
		t.Errorf("%d progress lines after stop", m-n)
	}
}

// screen replays what a terminal would show for out: it interprets \r, \n, ESC[nA (cursor up) and ESC[J
// (erase to the end of the screen), which is all liveWriter writes.
func screen(t *testing.T, out string) []string {
	t.Helper()
	var lines [][]rune
	row, col := 0, 0
	put := func(r rune) {
		for len(lines) <= row {
			lines = append(lines, nil)
		}
		for len(lines[row]) < col {
			lines[row] = append(lines[row], ' ')
		}
		if col < len(lines[row]) {
			lines[row][col] = r
		} else {
			lines[row] = append(lines[row], r)
		}
		col++
	}
	rs := []rune(out)
	for i := 0; i < len(rs); i++ {
		switch r := rs[i]; r {
		case '\r':
			col = 0
		case '\n':
			row, col = row+1, 0
			for len(lines) <= row {
				lines = append(lines, nil)
			}
		case '\x1b':
			j := i + 2
			for j < len(rs) && rs[j] >= '0' && rs[j] <= '9' {
				j++
			}
			if i+1 >= len(rs) || rs[i+1] != '[' || j >= len(rs) {
				t.Fatalf("unexpected escape at %d: %q", i, string(rs[i:min(i+8, len(rs))]))
			}
			n := 1
			if j > i+2 {
				n, _ = strconv.Atoi(string(rs[i+2 : j]))
			}
			switch rs[j] {
			case 'A':
				row = max(row-n, 0)
			case 'J':
				if row < len(lines) {
					if col < len(lines[row]) {
						lines[row] = lines[row][:col]
					}
					lines = lines[:row+1]
				}
			default:
				t.Fatalf("unexpected escape %q", string(rs[i:j+1]))
			}
			i = j
		default:
			put(r)
		}
	}
	var out2 []string
	for _, l := range lines {
		out2 = append(out2, string(l))
	}
	for len(out2) > 0 && out2[len(out2)-1] == "" {
		out2 = out2[:len(out2)-1]
	}
	return out2
}

func TestOpsLiveProgressLine(t *testing.T) {
	statuses := runOrders(t, 1000)
	two := func() []pipeline.Status {
		st := statuses()
		st = append(st, pipeline.Status{ID: "audit", State: pipeline.Failed, LastError: "sink file: opening: not a directory"})
		return st
	}
	o, g, stderr := opsFor(t, "--http", "off", "--progress", "line")
	if err := o.begin(g); err != nil {
		t.Fatal(err)
	}
	defer o.stop()
	if o.ln != nil {
		t.Fatal("--http off: listening")
	}
	o.serve(two, nil)
	var mid []string
	waitUntil(t, 10*time.Second, "the live lines to show a rate", func() bool {
		mid = screen(t, stderr.String())
		return len(mid) == 2 && strings.Contains(mid[0], "/s") && !strings.Contains(mid[0], "—/s")
	})
	g.logger.Info("a log line while the progress shows")
	time.Sleep(2 * liveRefresh)
	mid = screen(t, stderr.String())
	if len(mid) != 3 || !strings.Contains(mid[0], "a log line while the progress shows") ||
		!strings.HasPrefix(mid[1], "orders  running ") || !strings.Contains(mid[1], " delivered  lag —") ||
		mid[2] != "audit   failed: sink file: opening: not a directory" {
		t.Errorf("the screen while running:\n%s", strings.Join(mid, "\n"))
	}
	o.stop()
	end := screen(t, stderr.String())
	if len(end) != 1 || !strings.Contains(end[0], "a log line while the progress shows") {
		t.Errorf("the screen after stop (the progress lines erased, the log line kept):\n%s", strings.Join(end, "\n"))
	}
}

func TestLiveWriterCutsLinesToTheTerminal(t *testing.T) {
	var out bytes.Buffer
	w := &liveWriter{out: &out, width: func() int { return 12 }}
	w.set([]string{"short", "a line much longer than twelve"})
	fmt.Fprint(w, "log without a newline")
	w.set([]string{"é-accented line that is long"})
	got := screen(t, out.String())
	want := []string{"log without a newline", "é-accented…"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("screen %q, want %q (raw %q)", got, want, out.String())
	}
}

func TestOpsHTTPAddressInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()

	// Asked for by --http: run must not start.
	o, g, _ := opsFor(t, "--http", addr, "--progress", "off")
	err = o.begin(g)
	var ex ExitError
	if !errors.As(err, &ex) || ex.Code != ExitInvalid || !strings.Contains(err.Error(), "--http "+addr+": the address is in use (by another sluice?)") {
		t.Errorf("begin with --http %s taken: %v", addr, err)
	}
	o.stop()

	// The default address taken: a warning, and run goes on without a server.
	o, g, stderr := opsFor(t, "--progress", "off")
	o.http = addr // as if it were the default
	if err := o.begin(g); err != nil {
		t.Fatalf("begin with the default address taken: %v", err)
	}
	if o.ln != nil || !strings.Contains(stderr.String(), "level=WARN msg=\"not serving the status page and HTTP API: the default address is taken") ||
		!strings.Contains(stderr.String(), "addr="+addr) {
		t.Errorf("the default address taken: listening %v, log:\n%s", o.ln != nil, stderr)
	}
	o.serve(func() []pipeline.Status { return nil }, nil)
	o.stop()
}

func TestOpsFlagErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--progress", "fancy"}, `--progress: want auto, line, log or off, got "fancy"`},
		{[]string{"--progress-every", "0s"}, "--progress-every: want a duration above 0, got 0s"},
		{[]string{"--http", "7584"}, `--http: want HOST:PORT (such as 127.0.0.1:7584) or off, got "7584"`},
		{[]string{"--http", "127.0.0.1:99999"}, "--http 127.0.0.1:99999: listen tcp: address 99999: invalid port"},
	} {
		o, g, _ := opsFor(t, tt.args...)
		err := o.begin(g)
		var ex ExitError
		if !errors.As(err, &ex) || ex.Code != ExitInvalid || err.Error() != tt.want {
			t.Errorf("%v: %v, want exit 2 and %q", tt.args, err, tt.want)
		}
		o.stop()
	}
}

func TestProgressLines(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	errText := "sink kafka (pid 7): connection refused"
	est := int64(10000)
	etl2 := "etl-2"
	ps := []api.Pipeline{
		{ID: "orders", State: "running", Delivered: 34474, DeliveredPerSecond: f(1523.4), LagSeconds: f(1.234),
			Buffer: &api.Buffer{Entries: 1024, Bytes: 1 << 20, Fraction: f(0.12)}},
		{ID: "snap", State: "running", Delivered: 4000, DeliveredPerSecond: f(8.25), Snapshot: &api.Snapshot{Copied: 4000, Estimated: &est}},
		{ID: "billing", State: "restarting", Restarts: 3, LastError: &errText},
		{ID: "audit", State: "failed", LastError: &errText},
		{ID: "done", State: "completed", Delivered: 100000, DeliveredPerSecond: f(0)},
		{ID: "new", State: "starting"},
		{ID: "other", State: "standby", Lease: &api.Lease{Instance: &etl2}},
		{ID: "free", State: "standby", Lease: &api.Lease{}},
	}
	want := []string{
		"orders   running     1.52k/s  34,474 delivered  lag 1.2s  buffer 12%",
		"snap     running      8.25/s  4,000 delivered  lag —  snapshot 4,000 of ~10,000 documents (40%)",
		"billing  restarting (3 restarts so far): sink kafka (pid 7): connection refused",
		"audit    failed: sink kafka (pid 7): connection refused",
		"done     completed   100,000 delivered",
		"new      starting          —  0 delivered  lag —",
		"other    standby     on etl-2",
		"free     standby     no instance holds it",
	}
	got := progressLines(ps)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("progress lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
