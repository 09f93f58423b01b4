package main

import (
	"bytes"
	"context"
	"flag"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services"
)

var testSeed = flag.Uint64("seed", 0, "seed of TestChaosShort (default: from the clock; logged)")

// testLog writes the harness's progress lines to the test's log.
type testLog struct {
	t   *testing.T
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.WriteString(line) // an unfinished line waits for its end
			return len(p), nil
		}
		w.t.Log(strings.TrimSuffix(line, "\n"))
	}
}

// TestChaosShort is the short variant of `make chaos`, run by `make test`: 20,000 records and 5 kills (each
// kind at least once: host, plugin, redis-server, broker) in each mode, exactly-once and at-least-once,
// against the real binaries and servers. It fails on any loss, duplicate (beyond those sluice reported as
// redelivered, at-least-once), reorder or hang. Rerun a seed with `go test -run TestChaosShort -args -seed N`.
func TestChaosShort(t *testing.T) {
	seed := *testSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (go test -run TestChaosShort -args -seed %d reruns it)", seed, seed)
	// The broker is not killed here: a SIGKILLed single-node KRaft broker, restarted at once, can leave a
	// transaction hanging for good (README "Reliability", what it does not cover); make chaos kills it.
	opts := options{records: 20000, kills: 5, kinds: []string{killHost, killPlugin, killRedis}, seed: seed,
		duration: 40 * time.Second, stall: defaultStall,
		bin: services.Binaries(t, pluginNames...), dir: t.TempDir(), progress: &testLog{t: t}}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	results, err := run(ctx, opts, []mode{exactlyOnce, atLeastOnce})
	for _, r := range results {
		t.Log(r.Line())
		for _, f := range r.Failures() {
			t.Errorf("%s: %s", r.mode, f)
		}
		if len(r.Failures()) > 0 {
			for _, e := range r.verdict.examples {
				t.Logf("%s: %s", r.mode, e)
			}
		}
		if r.killsTotal() != opts.kills || r.kills[killHost] == 0 || r.kills[killPlugin] == 0 || r.kills[killRedis] == 0 {
			t.Errorf("%s: kills %v, want %d with each kind", r.mode, r.kills, opts.kills)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 {
		t.Fatalf("%d results, want one per mode", len(results))
	}
}
