package cli_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services"
)

// hook is a local webhook receiver for `sluice run`'s alerts.
type hook struct {
	*httptest.Server
	mu      sync.Mutex
	posts   []map[string]any
	headers []http.Header
}

func newHook(t *testing.T) *hook {
	h := &hook{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var p map[string]any
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("alert body is not JSON: %v: %s", err, body)
		}
		h.mu.Lock()
		h.posts = append(h.posts, p)
		h.headers = append(h.headers, r.Header.Clone())
		h.mu.Unlock()
	}))
	t.Cleanup(h.Close)
	return h
}

// events returns the posts' event names in order.
func (h *hook) events() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, p := range h.posts {
		out = append(out, fmt.Sprint(p["event"]))
	}
	return out
}

func count(ss []string, s string) int {
	n := 0
	for _, x := range ss {
		if x == s {
			n++
		}
	}
	return n
}

// TestAlertsOnFailure runs pipelines whose sink fails in each way, with a receiver subscribed to every
// event: sluice posts exactly the expected alerts (all of them before it exits), with the pipeline, the
// error, the stage, the time and the instance.
func TestAlertsOnFailure(t *testing.T) {
	for _, tt := range []struct {
		name, settings, extra, minInterval string
		// check compares the events posted with the run's summary.
		check func(t *testing.T, events []string, summary string)
	}{
		{"permanent at write", `write: permanent, after: 3000`, ``, `0s`, func(t *testing.T, events []string, _ string) {
			if fmt.Sprint(events) != "[pipeline_failed]" {
				t.Errorf("events %v, want one pipeline_failed", events)
			}
		}},
		{"history lost at open", `open: history_lost`, ``, `0s`, func(t *testing.T, events []string, _ string) {
			if fmt.Sprint(events) != "[pipeline_failed history_lost]" {
				t.Errorf("events %v, want pipeline_failed then history_lost", events)
			}
		}},
		{"crashes until it gives up", `write: exit`, `retry: { initial: 100ms, max: 200ms, give_up_after: 2s }`, `0s`,
			func(t *testing.T, events []string, summary string) {
				m := regexp.MustCompile(`, (\d+) restarts`).FindStringSubmatch(summary)
				if m == nil {
					t.Fatalf("no restarts in the summary:\n%s", summary)
				}
				restarts := atoi(m[1])
				// Each failed attempt: the crash, then the restart; the last: the crash, then the failure.
				if count(events, "pipeline_restarting") != restarts || count(events, "plugin_crashed") != restarts+1 ||
					count(events, "pipeline_failed") != 1 || events[len(events)-1] != "pipeline_failed" || len(events) != 2*restarts+2 {
					t.Errorf("events %v for %d restarts", events, restarts)
				}
			}},
		{"crashes, rate-limited", `write: exit`, `retry: { initial: 100ms, max: 200ms, give_up_after: 2s }`, `1h`,
			func(t *testing.T, events []string, _ string) {
				if fmt.Sprint(events) != "[plugin_crashed pipeline_restarting pipeline_failed]" {
					t.Errorf("events %v, want each event once", events)
				}
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHook(t)
			dir := t.TempDir()
			cfg := filepath.Join(dir, "p.yaml")
			writeFile(t, cfg, fmt.Sprintf(`version: 1
alerts:
  - url: %s/hook
    events: [pipeline_failed, pipeline_restarting, plugin_crashed, history_lost, buffer_high, lag_high]
    min_interval: %s
    headers: { Authorization: "Bearer ${env:HOOK_TOKEN}" }
pipelines:
  - id: p
    source: { plugin: generate, settings: { count: 10000 } }
    sink:   { plugin: misbehave, settings: { path: out.jsonl, %s } }
    %s
`, h.URL, tt.minInterval, tt.settings, tt.extra))
			t.Setenv("HOOK_TOKEN", "tok-3141592")
			cmd, stdout, stderr := startSluice(t, dir, cfg, "--instance", "test-host")
			code, _ := waitExit(t, cmd, 60*time.Second, stdout, stderr)
			if code != 1 {
				t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
			}
			events := h.events()
			tt.check(t, events, stdout.String())
			h.mu.Lock()
			defer h.mu.Unlock()
			for i, p := range h.posts {
				if p["pipeline"] != "p" || p["instance"] != "test-host" || h.headers[i].Get("Authorization") != "Bearer tok-3141592" ||
					h.headers[i].Get("Content-Type") != "application/json" {
					t.Errorf("post %d: %v %v", i, p, h.headers[i])
				}
				if at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(p["time"])); err != nil || time.Since(at) > time.Minute {
					t.Errorf("post %d: time %v", i, p["time"])
				}
				if e := fmt.Sprint(p["error"]); !strings.Contains(e, "misbehave") ||
					!regexp.MustCompile(`^sink misbehave \(pid \d+\)$`).MatchString(fmt.Sprint(p["stage"])) {
					t.Errorf("post %d: error %q, stage %v", i, e, p["stage"])
				}
			}
			if last := h.posts[len(h.posts)-1]; last["event"] == "pipeline_failed" && !strings.Contains(stdout.String(), fmt.Sprint(last["error"])) {
				t.Errorf("pipeline_failed says %q; the summary says\n%s", last["error"], stdout)
			}
			if strings.Contains(stdout.String()+stderr.String(), "tok-3141592") {
				t.Errorf("the token is in sluice's output:\n%s\n%s", stdout, stderr)
			}
		})
	}
}

// TestAlertsReceiverDown: a receiver that hangs and one that refuses connections cost the pipeline
// nothing: every record is delivered, the run completes, and sluice exits within alert.FlushTimeout (5 s)
// of the end, saying which alerts were not delivered.
func TestAlertsReceiverDown(t *testing.T) {
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	defer hung.Close()
	defer close(release)
	refused := "http://" + services.RefusedAddr(t) + "/hook/secret-path"
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.yaml")
	const n = 50000
	writeFile(t, cfg, fmt.Sprintf(`version: 1
alerts:
  - { url: "%s/hook", events: [pipeline_restarting, plugin_crashed], min_interval: 0s }
  - { url: "%s", events: [pipeline_restarting], min_interval: 0s }
pipelines:
  - id: p
    source: { plugin: generate, settings: { count: %d } }
    sink:   { plugin: misbehave, settings: { path: out.jsonl, write: error, after: 5000, once_marker: marker } }
    retry: { initial: 100ms, max: 200ms }
`, hung.URL, refused, n))
	cmd, stdout, stderr := startSluice(t, dir, cfg)
	code, took := waitExit(t, cmd, 60*time.Second, stdout, stderr)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !regexp.MustCompile(`pipeline p: done — \d+ records read \(\d+/s\), 50000 delivered`).MatchString(stdout.String()) {
		t.Fatalf("summary:\n%s\n%s", stdout, stderr)
	}
	checkSeqs(t, seqCounts(t, filepath.Join(dir, "out.jsonl")), n)
	logs := stderr.String()
	for _, want := range []string{
		`msg="alert not delivered; retrying" alert="` + cfg + `:4:5 ` + strings.TrimSuffix(refused, "/hook/secret-path") + `" pipeline=p event=pipeline_restarting attempt=1`,
		`msg="alerts not delivered: sluice stopped waiting for the receiver" alert="` + cfg + `:3:5 ` + hung.URL + `" alerts=1`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "secret-path") {
		t.Errorf("the URL's path is in the logs:\n%s", logs)
	}
	t.Logf("ran and exited in %s", took.Round(time.Millisecond))
}

// TestAlertsPrintRedacted: validate --print never shows header values or a URL taken from a reference.
func TestAlertsPrintRedacted(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.yaml")
	writeFile(t, filepath.Join(dir, "hook.txt"), "https://hooks.example.com/services/T0/B0/tok-271828\n")
	writeFile(t, cfg, `version: 1
alerts:
  - url: ${file:hook.txt}
    events: [pipeline_failed]
    headers: { X-Api-Key: "${env:HOOK_TOKEN}", X-Plain: "tok-161803" }
pipelines:
  - id: p
    source: { plugin: generate, settings: { count: 10 } }
    sink:   { plugin: discard }
`)
	t.Setenv("HOOK_TOKEN", "tok-3141592")
	out, errOut, code := sluice(t, dir, "validate", "--print", cfg)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	for _, secret := range []string{"tok-", "hooks.example.com", os.Getenv("HOOK_TOKEN")} {
		if strings.Contains(out+errOut, secret) {
			t.Errorf("validate --print shows %q:\n%s", secret, out)
		}
	}
	if want := "alerts:\n  - url: <redacted>\n    events:\n      - pipeline_failed\n    min_interval: 1m0s\n    headers:\n      X-Api-Key: <redacted>\n      X-Plain: <redacted>\n"; !strings.Contains(out, want) {
		t.Errorf("validate --print:\n%s\nwant it to contain\n%s", out, want)
	}
}

// TestAlertsBufferHigh fills a memory buffer behind a sink that stopped writing: the buffer's plugin
// reports its fill, and one buffer_high alert is posted with the fill and the threshold.
func TestAlertsBufferHigh(t *testing.T) {
	h := newHook(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.yaml")
	writeFile(t, cfg, fmt.Sprintf(`version: 1
alerts:
  - url: %s
    events: [buffer_high]
    buffer_high: 0.5
pipelines:
  - id: full
    source: { plugin: generate, settings: { rate: 5000 } }
    buffer: { plugin: memory, settings: { max_records: 2000 } }
    sink:   { plugin: misbehave, settings: { path: out.jsonl, write: block } }
`, h.URL))
	cmd, stdout, stderr := startSluice(t, dir, cfg, "--http", "off", "--drain-timeout", "1s")
	deadline := time.Now().Add(30 * time.Second)
	for count(h.events(), "buffer_high") == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	waitExit(t, cmd, 30*time.Second, stdout, stderr)
	if n := count(h.events(), "buffer_high"); n != 1 {
		t.Fatalf("%d buffer_high posts, want 1: %v\n%s", n, h.events(), stderr)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.posts[0]
	if p["pipeline"] != "full" || p["buffer_high"] != 0.5 || p["buffer_fill"].(float64) < 0.5 {
		t.Fatalf("post %v", p)
	}
}

// TestAlertsLagHigh replays MongoDB change events from 2023 into a slow sink: the source lag, now minus the
// events' time, is far above lag_high, and one lag_high alert is posted while the pipeline runs.
func TestAlertsLagHigh(t *testing.T) {
	h := newHook(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.yaml")
	events := filepath.Join(repoRoot(), "plugins", "mongodb", "testdata", "events.jsonl")
	writeFile(t, cfg, fmt.Sprintf(`version: 1
alerts:
  - url: %s
    events: [lag_high]
    lag_high: 1h
pipelines:
  - id: behind
    source: { plugin: mongodb, settings: { replay_file: %q } }
    sink:   { plugin: misbehave, settings: { path: out.jsonl, write: slow, delay: 3s } }
    # One or two records in flight per 3 s write: the pipeline runs past the alerts' first checks
    # (alert.CheckInterval) instead of completing in one coalesced write.
    batch_max_records: 1
    batch_max_bytes: 1024
    max_in_flight_bytes: 1024
`, h.URL, events))
	cmd, stdout, stderr := startSluice(t, dir, cfg, "--http", "off", "--drain-timeout", "1s")
	deadline := time.Now().Add(30 * time.Second)
	for count(h.events(), "lag_high") == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	waitExit(t, cmd, 30*time.Second, stdout, stderr)
	if n := count(h.events(), "lag_high"); n != 1 {
		t.Fatalf("%d lag_high posts, want 1: %v\n%s", n, h.events(), stderr)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if p := h.posts[0]; p["pipeline"] != "behind" || p["lag_high_seconds"] != 3600.0 || p["lag_seconds"].(float64) < 365*24*3600 {
		t.Fatalf("post %v", p)
	}
}
