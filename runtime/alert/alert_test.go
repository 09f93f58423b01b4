package alert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/services"
)

// receiver is a local webhook endpoint that records what it is sent and answers with the statuses it is
// told to, in order (200 once they run out).
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	posts    []Payload
	headers  []http.Header
	statuses []int
	attempts int
	got      chan struct{}
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	r := &receiver{statuses: statuses, got: make(chan struct{}, 1000)}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.attempts++
		code := http.StatusOK
		if len(r.statuses) > 0 {
			code, r.statuses = r.statuses[0], r.statuses[1:]
		}
		if code == http.StatusOK {
			var p Payload
			if err := json.Unmarshal(body, &p); err != nil {
				t.Errorf("body is not a payload: %v: %s", err, body)
			}
			r.posts = append(r.posts, p)
			r.headers = append(r.headers, req.Header.Clone())
		}
		r.mu.Unlock()
		if code != http.StatusOK {
			http.Error(w, "try again later", code)
			return
		}
		r.got <- struct{}{}
	}))
	t.Cleanup(r.Close)
	return r
}

// wait waits for n accepted posts in all and returns them.
func (r *receiver) wait(t *testing.T, n int) []Payload {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		have := len(r.posts)
		r.mu.Unlock()
		if have >= n {
			break
		}
		select {
		case <-r.got:
		case <-deadline:
			t.Fatalf("%d posts, want %d", have, n)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Payload(nil), r.posts...)
}

// quiet checks that no more than n posts arrive within a moment.
func (r *receiver) quiet(t *testing.T, n int) {
	t.Helper()
	time.Sleep(200 * time.Millisecond)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.posts) != n {
		t.Fatalf("%d posts, want %d: %+v", len(r.posts), n, r.posts)
	}
}

// logs collects a Notifier's log lines.
type logs struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newNotifier(t *testing.T, l *logs) *Notifier {
	n := New(Options{Instance: "host-1", UserAgent: "sluice/test", Logger: slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})),
		RetryInitial: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond, GiveUpAfter: time.Second})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n.Close(ctx)
	})
	return n
}

func target(url string, events ...Event) Target {
	return Target{Name: "test.yaml:3:5 " + Host(url), URL: url, Events: events, BufferHigh: DefaultBufferHigh, LagHigh: DefaultLagHigh}
}

func failed(id string, err error) pipeline.Event {
	return pipeline.Event{Pipeline: id, Kind: pipeline.EventFailed, Time: time.Now(), Err: err, Stage: "sink file (pid 42)"}
}

func restarting(id string, attempt int) pipeline.Event {
	return pipeline.Event{Pipeline: id, Kind: pipeline.EventRestarting, Time: time.Now(), Err: errors.New("connection reset"),
		Attempt: attempt, Wait: 1500 * time.Millisecond}
}

// Events reach the targets of their pipeline that subscribe to them, with every payload field and the
// target's headers.
func TestNotifyPosts(t *testing.T) {
	r := newReceiver(t)
	n := newNotifier(t, &logs{})
	tg := target(r.URL, PipelineFailed, PipelineRestarting)
	tg.Headers = map[string]string{"Authorization": "Bearer abc", "X-Team": "data"}
	n.Route(map[string][]Target{"orders": {tg}, "billing": {target(r.URL, PluginCrashed)}})

	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.FixedZone("CET", 3600))
	n.Notify(pipeline.Event{Pipeline: "orders", Kind: pipeline.EventRestarting, Time: at, Err: errors.New("connection reset"), Attempt: 2, Wait: 1500 * time.Millisecond})
	n.Notify(pipeline.Event{Pipeline: "orders", Kind: pipeline.EventPluginCrashed, Time: at, Err: errors.New("crashed")}) // not subscribed
	n.Notify(pipeline.Event{Pipeline: "billing", Kind: pipeline.EventFailed, Time: at, Err: errors.New("x")})             // not subscribed
	n.Notify(pipeline.Event{Pipeline: "unknown", Kind: pipeline.EventFailed, Time: at, Err: errors.New("x")})             // no route
	n.Notify(failed("orders", errors.New("topic missing")))
	posts := r.wait(t, 2)
	r.quiet(t, 2)
	want := Payload{Pipeline: "orders", Event: PipelineRestarting, Error: "connection reset", Time: at.UTC(), Instance: "host-1",
		Attempt: 2, RetryInSeconds: 1.5}
	if fmt.Sprint(posts[0]) != fmt.Sprint(want) {
		t.Errorf("post %+v\nwant %+v", posts[0], want)
	}
	if p := posts[1]; p.Event != PipelineFailed || p.Error != "topic missing" || p.Stage != "sink file (pid 42)" || p.Attempt != 0 {
		t.Errorf("post %+v", p)
	}
	h := r.headers[0]
	if h.Get("Authorization") != "Bearer abc" || h.Get("X-Team") != "data" || h.Get("Content-Type") != "application/json" || h.Get("User-Agent") != "sluice/test" {
		t.Errorf("headers %v", h)
	}
}

// The body is exactly the documented JSON: field names and their presence.
func TestPayloadJSON(t *testing.T) {
	e := pipeline.Event{Pipeline: "orders", Kind: pipeline.EventFailed, Time: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC),
		Err: sdk.HistoryLost(errors.New("gone")), Stage: "source mongodb (pid 7)"}
	ps := fromEvent(e, "host-1")
	if len(ps) != 2 || ps[0].Event != PipelineFailed || ps[1].Event != HistoryLost {
		t.Fatalf("payloads %+v, want pipeline_failed then history_lost", ps)
	}
	b, _ := json.Marshal(ps[1])
	if want := `{"pipeline":"orders","event":"history_lost","error":"gone","time":"2026-11-30T12:00:00Z","instance":"host-1","stage":"source mongodb (pid 7)"}`; string(b) != want {
		t.Errorf("JSON %s\nwant %s", b, want)
	}
	st := pipeline.Status{ID: "orders", Buffer: &pipeline.BufferFill{Entries: 900, Bytes: 9000, Fraction: 0.9}}
	b, _ = json.Marshal(bufferHigh(&st, 0.8, e.Time, "host-1"))
	if want := `{"pipeline":"orders","event":"buffer_high","error":"buffer 90% full (900 entries, 9000 bytes); the alert is at 80%","time":"2026-11-30T12:00:00Z","instance":"host-1","buffer_fill":0.9,"buffer_high":0.8}`; string(b) != want {
		t.Errorf("JSON %s\nwant %s", b, want)
	}
	st.LastEventTime = e.Time.Add(-7 * time.Minute)
	b, _ = json.Marshal(lagHigh(&st, 7*time.Minute, 5*time.Minute, e.Time, "host-1"))
	if want := `{"pipeline":"orders","event":"lag_high","error":"source lag 7m0s (last event at 2026-11-30T11:53:00Z); the alert is at 5m0s","time":"2026-11-30T12:00:00Z","instance":"host-1","lag_seconds":420,"lag_high_seconds":300}`; string(b) != want {
		t.Errorf("JSON %s\nwant %s", b, want)
	}
}

// lease_lost and lease_takeover are posted to the targets that subscribe to them; a takeover names the
// instance it took over from and how long that instance's lease had gone unrenewed.
func TestLeaseEvents(t *testing.T) {
	r := newReceiver(t)
	n := newNotifier(t, &logs{})
	n.Route(map[string][]Target{"orders": {target(r.URL, LeaseLost, LeaseTakeover)}})
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	n.Notify(pipeline.Event{Pipeline: "orders", Kind: pipeline.EventLeaseLost, Time: at,
		Err: fmt.Errorf("%w: the lease on pipeline orders could not be renewed for 7.5s", pipeline.ErrLeaseLost)})
	n.Notify(pipeline.Event{Pipeline: "orders", Kind: pipeline.EventLeaseTakeover, Time: at,
		Err: errors.New("took pipeline orders over from etl-2, whose lease went unrenewed for 10.4s"), Previous: "etl-2", Wait: 10400 * time.Millisecond})
	n.Notify(restarting("orders", 1)) // not subscribed
	posts := r.wait(t, 2)
	r.quiet(t, 2)
	b, _ := json.Marshal(posts[0])
	if want := `{"pipeline":"orders","event":"lease_lost","error":"lease lost: the lease on pipeline orders could not be renewed for 7.5s","time":"2026-11-30T12:00:00Z","instance":"host-1"}`; string(b) != want {
		t.Errorf("JSON %s\nwant %s", b, want)
	}
	b, _ = json.Marshal(posts[1])
	if want := `{"pipeline":"orders","event":"lease_takeover","error":"took pipeline orders over from etl-2, whose lease went unrenewed for 10.4s","time":"2026-11-30T12:00:00Z","instance":"host-1","previous_instance":"etl-2","unrenewed_seconds":10.4}`; string(b) != want {
		t.Errorf("JSON %s\nwant %s", b, want)
	}
}

// A failure whose error is sdk.ErrHistoryLost is posted as pipeline_failed and as history_lost, to the
// targets subscribing to each; other failures are not history_lost.
func TestHistoryLost(t *testing.T) {
	both, lostOnly := newReceiver(t), newReceiver(t)
	n := newNotifier(t, &logs{})
	n.Route(map[string][]Target{"orders": {target(both.URL, PipelineFailed, HistoryLost), target(lostOnly.URL, HistoryLost)}})
	n.Notify(failed("orders", errors.New("topic missing")))
	n.Notify(failed("orders", fmt.Errorf("source mongodb (pid 7): opening: %w", sdk.HistoryLost(errors.New("no longer in the oplog")))))
	posts := both.wait(t, 3)
	both.quiet(t, 3)
	if posts[0].Event != PipelineFailed || posts[1].Event != PipelineFailed || posts[2].Event != HistoryLost ||
		posts[2].Error != "source mongodb (pid 7): opening: no longer in the oplog" {
		t.Errorf("posts %+v", posts)
	}
	if p := lostOnly.wait(t, 1); p[0].Event != HistoryLost {
		t.Errorf("posts %+v", p)
	}
	lostOnly.quiet(t, 1)
}

// min_interval limits posts per (target, pipeline, event); the next post counts those held back.
func TestMinInterval(t *testing.T) {
	r := newReceiver(t)
	n := newNotifier(t, &logs{})
	now := time.Now()
	n.now = func() time.Time { return now }
	tg := target(r.URL, PipelineRestarting, PipelineFailed)
	tg.MinInterval = time.Minute
	n.Route(map[string][]Target{"a": {tg}, "b": {tg}})
	for i := 1; i <= 5; i++ {
		n.Notify(restarting("a", i))
		now = now.Add(10 * time.Second)
	}
	n.Notify(restarting("b", 1))                        // another pipeline
	n.Notify(failed("a", errors.New("gave up")))        // another event
	n.Notify(failed("a", errors.New("gave up, again"))) // held back
	r.wait(t, 3)
	r.quiet(t, 3)
	now = now.Add(time.Minute)
	n.Notify(restarting("a", 6))
	posts := r.wait(t, 4)
	r.quiet(t, 4)
	if posts[0].Attempt != 1 || posts[0].Suppressed != 0 || posts[1].Pipeline != "b" || posts[2].Event != PipelineFailed {
		t.Errorf("posts %+v", posts)
	}
	if p := posts[3]; p.Attempt != 6 || p.Suppressed != 4 {
		t.Errorf("after the interval: attempt %d, suppressed %d; want 6, 4", p.Attempt, p.Suppressed)
	}
}

// A receiver that fails with 5xx or 429 is retried with backoff until it accepts; one that refuses the
// alert with another 4xx is not retried, and the loss is logged.
func TestRetries(t *testing.T) {
	t.Run("transient", func(t *testing.T) {
		r := newReceiver(t, 503, 429, 500)
		l := &logs{}
		n := newNotifier(t, l)
		n.Route(map[string][]Target{"a": {target(r.URL, PipelineFailed)}})
		n.Notify(failed("a", errors.New("boom")))
		r.wait(t, 1)
		r.quiet(t, 1)
		r.mu.Lock()
		if r.attempts != 4 {
			t.Errorf("%d attempts, want 4", r.attempts)
		}
		r.mu.Unlock()
		if !strings.Contains(l.String(), `msg="alert not delivered; retrying" alert="test.yaml:3:5 `+Host(r.URL)+`" pipeline=a event=pipeline_failed attempt=1`) ||
			!strings.Contains(l.String(), `msg="alert delivered"`) {
			t.Errorf("logs:\n%s", l)
		}
	})
	t.Run("refused", func(t *testing.T) {
		r := newReceiver(t, 400)
		l := &logs{}
		n := newNotifier(t, l)
		n.Route(map[string][]Target{"a": {target(r.URL, PipelineFailed)}})
		n.Notify(failed("a", errors.New("boom")))
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(l.String(), "alert lost") && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if !strings.Contains(l.String(), `msg="alert lost: the receiver did not accept it" alert="test.yaml:3:5 `+Host(r.URL)+`" pipeline=a event=pipeline_failed attempts=1 err="HTTP 400 Bad Request: try again later"`) {
			t.Errorf("logs:\n%s", l)
		}
		r.quiet(t, 0)
	})
	t.Run("gives up", func(t *testing.T) {
		url := "http://" + services.RefusedAddr(t) + "/hook" // nothing listens: every attempt is refused
		l := &logs{}
		n := newNotifier(t, l)
		n.Route(map[string][]Target{"a": {target(url, PipelineFailed)}})
		n.Notify(failed("a", errors.New("boom")))
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(l.String(), "alert lost") && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if !strings.Contains(l.String(), "alert lost") || !strings.Contains(l.String(), "connection refused") {
			t.Errorf("logs:\n%s", l)
		}
	})
}

// Notify never waits for a receiver: with one that hangs, a thousand events are taken at once; the
// queue keeps the newest QueueSize and every drop is counted and logged.
func TestHungReceiverNeverBlocks(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var got []Payload
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var p Payload
		_ = json.NewDecoder(req.Body).Decode(&p)
		<-release
		mu.Lock()
		got = append(got, p)
		mu.Unlock()
	}))
	defer srv.Close()
	defer close(release)
	l := &logs{}
	n := newNotifier(t, l)
	n.Route(map[string][]Target{"a": {target(srv.URL, PipelineRestarting)}})
	n.Notify(restarting("a", 0)) // taken by the sender, which then hangs on it
	waitFor(t, func() bool { s := n.targets("a")[0]; s.mu.Lock(); defer s.mu.Unlock(); return len(s.queue) == 0 })
	done := make(chan struct{})
	go func() {
		for i := 1; i <= 1000; i++ {
			n.Notify(restarting("a", i))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Notify blocked on a hung receiver")
	}
	s := n.targets("a")[0]
	s.mu.Lock()
	queued, dropped, first := len(s.queue), s.dropped, s.queue[0].Attempt
	s.mu.Unlock()
	if queued != QueueSize || dropped != 1000-QueueSize || first != 1000-QueueSize+1 {
		t.Errorf("queued %d, dropped %d, oldest attempt %d; want %d, %d, %d", queued, dropped, first, QueueSize, 1000-QueueSize, 1000-QueueSize+1)
	}
	if c := strings.Count(l.String(), "alert queue full; dropped the oldest alert"); c != 1000-QueueSize ||
		!strings.Contains(l.String(), fmt.Sprintf("dropped=%d queue=%d", 1000-QueueSize, QueueSize)) {
		t.Errorf("%d drop lines:\n%.2000s", c, l)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Neither the URL's path, query and user info nor header values appear in logs, whatever goes wrong.
func TestSecretsNeverLogged(t *testing.T) {
	const secret = "hunter2-T0KEN"
	refuse := newReceiver(t, 401, 503, 503)
	downAddr := services.RefusedAddr(t)
	down := "http://user:" + secret + "@" + downAddr + "/hooks/" + secret + "?token=" + secret
	l := &logs{}
	n := newNotifier(t, l)
	a := target(strings.Replace(refuse.URL, "http://", "http://user:"+secret+"@", 1)+"/services/"+secret+"?token="+secret, PipelineFailed, PipelineRestarting)
	a.Headers = map[string]string{"Authorization": "Bearer " + secret}
	b := target(down, PipelineFailed)
	b.Headers = map[string]string{"X-Secret": secret}
	n.Route(map[string][]Target{"a": {a, b}})
	n.Notify(failed("a", errors.New("boom")))
	n.Notify(restarting("a", 1))
	refuse.wait(t, 1)
	waitFor(t, func() bool { return strings.Count(l.String(), "alert lost") == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n.Close(ctx)
	if out := l.String(); strings.Contains(out, secret) || strings.Contains(out, "/services") || strings.Contains(out, "/hooks") ||
		!strings.Contains(out, "HTTP 401") || !strings.Contains(out, "HTTP 503") || !strings.Contains(out, "connection refused") {
		t.Errorf("logs show a secret or lack the failures:\n%s", out)
	}
	if h := Host(down); h != "http://"+downAddr {
		t.Errorf("Host = %q", h)
	}
}

// Check fires buffer_high and lag_high once when the value reaches the threshold, again only after it
// was below; not for pipelines that ended, nor without a known event time or buffer fill.
func TestThresholds(t *testing.T) {
	r := newReceiver(t)
	n := newNotifier(t, &logs{})
	tg := target(r.URL, BufferHigh, LagHigh)
	tg.BufferHigh, tg.LagHigh = 0.75, time.Minute
	n.Route(map[string][]Target{"a": {tg}, "b": {target(r.URL, PipelineFailed)}})
	now := time.Now()
	st := func(state pipeline.State, fill float64, lag time.Duration) []pipeline.Status {
		s := pipeline.Status{ID: "a", State: state}
		if fill >= 0 {
			s.Buffer = &pipeline.BufferFill{Entries: int64(fill * 1000), Bytes: int64(fill * 1e6), Fraction: fill}
		}
		if lag >= 0 {
			s.LastEventTime = now.Add(-lag)
		}
		// b subscribes to neither threshold event.
		return []pipeline.Status{s, {ID: "b", State: pipeline.Running, Buffer: &pipeline.BufferFill{Fraction: 1}, LastEventTime: now.Add(-time.Hour)}}
	}
	steps := []struct {
		sts  []pipeline.Status
		want []Event // posts this step adds
	}{
		{st(pipeline.Starting, -1, -1), nil},             // nothing known yet
		{st(pipeline.Running, 0.5, 10*time.Second), nil}, // below both
		{st(pipeline.Running, 0.75, time.Minute), []Event{BufferHigh, LagHigh}},
		{st(pipeline.Running, 0.9, 2*time.Minute), nil},                  // still high: once
		{st(pipeline.Restarting, 0.8, 3*time.Minute), nil},               // still high
		{st(pipeline.Running, 0.2, 5*time.Second), nil},                  // below again: re-armed
		{st(pipeline.Running, 0.95, 5*time.Second), []Event{BufferHigh}}, // up again
		{st(pipeline.Running, 0.95, 90*time.Second), []Event{LagHigh}},
		{st(pipeline.Failed, 0.1, time.Second), nil},            // ended: re-armed, nothing posted
		{st(pipeline.Failed, 1, time.Hour), nil},                // ended: never fires
		{st(pipeline.Running, -1, time.Hour), []Event{LagHigh}}, // buffer unknown
	}
	var want []Event
	for i, s := range steps {
		n.Check(now, s.sts)
		want = append(want, s.want...)
		posts := r.wait(t, len(want))
		r.quiet(t, len(want))
		for j, p := range posts {
			if p.Event != want[j] || p.Pipeline != "a" {
				t.Fatalf("step %d: posts %v, want %v", i, posts, want)
			}
		}
	}
	posts := r.wait(t, len(want))
	if p := posts[0]; p.BufferFill == nil || *p.BufferFill != 0.75 || *p.BufferHigh != 0.75 || !strings.HasPrefix(p.Error, "buffer 75% full") {
		t.Errorf("buffer_high post %+v", p)
	}
	if p := posts[1]; p.LagSeconds == nil || *p.LagSeconds != 60 || *p.LagHighSeconds != 60 || !strings.HasPrefix(p.Error, "source lag 1m0s") {
		t.Errorf("lag_high post %+v", p)
	}
}

// Route keeps a target configured as before (its rate limits hold across the reload); a target that is
// removed posts what it holds, then stops.
func TestRoute(t *testing.T) {
	r, old := newReceiver(t), newReceiver(t)
	n := newNotifier(t, &logs{})
	tg := target(r.URL, PipelineRestarting)
	tg.MinInterval = time.Hour
	n.Route(map[string][]Target{"a": {tg, target(old.URL, PipelineRestarting)}})
	n.Notify(restarting("a", 1))
	r.wait(t, 1)
	old.wait(t, 1)
	renamed := tg
	renamed.Name = "moved.yaml:9:5 " + Host(r.URL)
	n.Route(map[string][]Target{"a": {renamed}, "b": {renamed}})
	n.Notify(restarting("a", 2)) // within min_interval: held back
	n.Notify(restarting("b", 1))
	if got := r.wait(t, 2); got[1].Pipeline != "b" {
		t.Errorf("posts %+v", got)
	}
	r.quiet(t, 2)
	old.quiet(t, 1)
	if s := n.targets("a")[0]; s.label() != renamed.Name {
		t.Errorf("name %q, want %q", s.label(), renamed.Name)
	}
	// The removed target's sender ends; the kept one runs on.
	waitFor(t, func() bool { n.mu.Lock(); defer n.mu.Unlock(); return len(n.live) == 1 })
}

// Close posts what is queued; with a receiver that hangs it returns when its context ends and says how
// many alerts were not delivered.
func TestClose(t *testing.T) {
	r := newReceiver(t)
	n := newNotifier(t, &logs{})
	n.Route(map[string][]Target{"a": {target(r.URL, PipelineRestarting)}})
	for i := range 20 {
		n.Notify(restarting("a", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.Close(ctx)
	r.quiet(t, 20)
	n.Notify(restarting("a", 21)) // after Close: nothing
	r.quiet(t, 20)

	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	defer hung.Close()
	defer close(release)
	l := &logs{}
	n = newNotifier(t, l)
	n.Route(map[string][]Target{"a": {target(hung.URL, PipelineRestarting)}})
	for i := range 3 {
		n.Notify(restarting("a", i))
	}
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	begun := time.Now()
	n.Close(ctx)
	if took := time.Since(begun); took > 5*time.Second {
		t.Errorf("Close took %s with a hung receiver", took)
	}
	if !strings.Contains(l.String(), `msg="alerts not delivered: sluice stopped waiting for the receiver"`) || !strings.Contains(l.String(), "alerts=3") {
		t.Errorf("logs:\n%s", l)
	}
}

// Options.Redact is applied to every event's error before it is posted, history_lost included.
func TestRedact(t *testing.T) {
	r := newReceiver(t)
	n := New(Options{Instance: "host-1", Redact: func(s string) string { return strings.ReplaceAll(s, "hunter2", "<redacted>") }})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n.Close(ctx)
	})
	n.Route(map[string][]Target{"orders": {target(r.URL, PipelineFailed, HistoryLost)}})
	n.Notify(failed("orders", sdk.HistoryLost(errors.New("auth as app with hunter2 failed"))))
	for _, p := range r.wait(t, 2) {
		if p.Error != "auth as app with <redacted> failed" {
			t.Errorf("%s posted with error %q", p.Event, p.Error)
		}
	}
}
