// Command chaos is sluice's chaos harness (`make chaos`). It runs two pipelines with the real host, plugins
// and servers, kills their processes with SIGKILL at random moments, and then checks, with a read_committed
// Kafka consumer, that every record arrived exactly once and that each key's records kept their order.
//
//	go run ./chaos [-records 200000] [-kills 24] [-seed N] [-duration 4m] [-mode both] [-bin bin] [-dir out/chaos]
//
// One `sluice run` runs both pipelines, from one connector file:
//
//   - mongodb (mongo-java-server, with a writer inserting, updating and deleting documents) → transforms →
//     redis (redis-server, AOF appendfsync always) → kafka (a real broker);
//   - generate → redis → kafka, at three times the rate.
//
// The kills are spread evenly over the sluice host, the plugin processes (mongodb, redis, kafka, generate
// in turn), redis-server and the Kafka broker; each is started again on its data (sluice restarts its
// plugins itself). The seed fixes the kill plan, the kill moments and the writer's changes; it is printed.
//
// -mode exactly-once runs the Kafka sink transactional; -mode at-least-once runs it with transactional:
// false, where duplicates are allowed up to the records sluice reports as redelivered; -mode both (the
// default) runs one, then the other, against the same servers. -mode unordered runs exactly-once with
// ordered: false and 4 lanes (4 Kafka sink processes per pipeline, records dispatched by key); -mode all
// runs the three.
//
// It prints progress on stderr and one summary line per mode on stdout:
//
//	chaos: seed=… records=… kills=… (host=… plugin=… redis=… broker=…) lost=0 duplicated=0 reordered=0
//
// and exits 1 when a mode found a loss, a duplicate (beyond those reported, at-least-once), a reorder or a
// hang; 2 on a bad flag; 3 when the harness itself could not run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/services"
)

// Defaults of the command line, the figures `make chaos` runs with.
const (
	defaultRecords  = 200000
	defaultKills    = 24
	defaultDuration = 4 * time.Minute
	defaultStall    = 3 * time.Minute
)

// marker marks a work directory as the harness's, so that a later run may empty it.
const marker = ".chaos-work-dir"

func main() {
	repo := filepath.Dir(services.Root())
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	records := fs.Int("records", defaultRecords, "records both pipelines carry together (a quarter are MongoDB changes)")
	kills := fs.Int("kills", defaultKills, "SIGKILLs, spread evenly over the host, the plugins, redis-server and the broker")
	seed := fs.Uint64("seed", 0, "seed of the kill plan, the kill moments and the MongoDB changes (default: from the clock; printed)")
	duration := fs.Duration("duration", defaultDuration, "how long the MongoDB writer and the generate source take to make their records")
	modeFlag := fs.String("mode", "both", "exactly-once, at-least-once, both (one after the other), unordered (exactly-once with ordered: false, 4 lanes), or all three")
	kindsFlag := fs.String("kill", strings.Join(killKinds, ","), "the kinds of kill, comma-separated: host, plugin, redis, broker")
	stall := fs.Duration("stall", defaultStall, "how long without a new record in Kafka, while some are missing, counts as a hang")
	bin := fs.String("bin", filepath.Join(repo, "bin"), "directory holding sluice and plugins/ (make build)")
	dir := fs.String("dir", filepath.Join(repo, "out", "chaos"), "work directory (emptied first): servers' data, connector files, host logs")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	modes := map[string][]mode{"both": {exactlyOnce, atLeastOnce}, "exactly-once": {exactlyOnce}, "at-least-once": {atLeastOnce},
		"unordered": {unordered}, "all": {exactlyOnce, atLeastOnce, unordered}}[*modeFlag]
	switch {
	case modes == nil:
		usage(fs, "-mode: want exactly-once, at-least-once, both, unordered or all, got %q", *modeFlag)
	case *records < 100:
		usage(fs, "-records: want at least 100, got %d", *records)
	case *kills < 0:
		usage(fs, "-kills: want 0 or more, got %d", *kills)
	case *duration < 10*time.Second:
		usage(fs, "-duration: want at least 10s, got %s", *duration)
	case *stall < 10*time.Second:
		usage(fs, "-stall: want at least 10s, got %s", *stall)
	}
	kinds := strings.Split(*kindsFlag, ",")
	for _, k := range kinds {
		if !slices.Contains(killKinds, k) {
			usage(fs, "-kill: want kinds among %s, got %q", strings.Join(killKinds, ", "), k)
		}
	}
	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); stop() }() // a second signal ends the harness at once
	opts := options{records: *records, kills: *kills, kinds: kinds, seed: *seed, duration: *duration, stall: *stall,
		bin: *bin, dir: *dir, progress: os.Stderr}
	results, err := run(ctx, opts, modes)
	failed := false
	for _, r := range results {
		for _, f := range r.Failures() {
			fmt.Fprintf(os.Stderr, "chaos %s: FAIL: %s\n", r.mode, f)
			failed = true
		}
		for _, e := range r.verdict.examples {
			fmt.Fprintf(os.Stderr, "chaos %s: %s\n", r.mode, e)
		}
	}
	for _, r := range results {
		fmt.Println(r.Line())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(3)
	}
	if failed {
		fmt.Fprintf(os.Stderr, "chaos: logs and data in %s; run again with -seed %d\n", opts.dir, opts.seed)
		os.Exit(1)
	}
}

func usage(fs *flag.FlagSet, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "chaos: "+format+"\n", args...)
	fs.Usage()
	os.Exit(2)
}

// run prepares the work directory, starts the servers and runs the modes one after the other.
func run(ctx context.Context, opts options, modes []mode) ([]*result, error) {
	if err := checkBinaries(opts.bin); err != nil {
		return nil, err
	}
	var err error
	if opts.dir, err = workDir(opts.dir); err != nil {
		return nil, err
	}
	fmt.Fprintf(opts.progress, "chaos: seed=%d records=%d kills=%d duration=%s (rerun with -seed %d)\n",
		opts.seed, opts.records, opts.kills, opts.duration, opts.seed)
	srv, err := startServers(filepath.Join(opts.dir, "servers"), opts.progress)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	var results []*result
	for _, m := range modes {
		r, err := runMode(ctx, opts, srv, m)
		if err != nil {
			return results, fmt.Errorf("%s: %w", m, err)
		}
		fmt.Fprintf(opts.progress, "chaos %s: done in %s (%d host processes): %s\n", m, r.took.Round(time.Second), r.hostRuns, r.Line())
		if m == atLeastOnce {
			fmt.Fprintf(opts.progress, "chaos %s: %d duplicates; sluice reported %d records redelivered: %d after a stage failed, %d after the host was killed\n",
				m, r.verdict.duplicated, r.redelivered.total(), r.redelivered.afterFailures, r.redelivered.afterCrashes)
		}
		results = append(results, r)
	}
	return results, nil
}

// checkBinaries checks that bin holds sluice and the plugins the pipelines use.
func checkBinaries(bin string) error {
	need := []string{"sluice"}
	for _, p := range pluginNames {
		need = append(need, filepath.Join("plugins", p))
	}
	for _, n := range need {
		if _, err := os.Stat(filepath.Join(bin, n)); err != nil {
			return fmt.Errorf("%s is missing: build sluice and its plugins first (make build), or give -bin", filepath.Join(bin, n))
		}
	}
	return nil
}

// workDir returns dir made absolute, created and empty. It empties only a directory an earlier run of the
// harness created (it holds the marker file), and refuses any other that is not empty.
func workDir(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if f, err := os.Open(dir); err == nil {
		_, err := f.Readdirnames(1)
		f.Close()
		if !errors.Is(err, io.EOF) {
			if _, merr := os.Stat(filepath.Join(dir, marker)); merr != nil {
				return "", fmt.Errorf("work directory %s is not empty and was not made by this harness; give another -dir", dir)
			}
			if err := os.RemoveAll(dir); err != nil {
				return "", err
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, marker), nil, 0o644)
}
