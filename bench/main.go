// Command bench is sluice's end-to-end benchmark (`make bench`). It runs each workload with the real
// host, plugins and servers, round after round, alternating the programs, and writes what it measured to
// bench/results/: a markdown table, a CSV of every run and a PNG chart.
//
//	go run ./bench [-records 1000000] [-rounds 3] [-workloads W1,B3,W5-kfake,W5-kafka,W2] [-kafka auto]
//
// The workloads, each of ~200-byte records from the generate source:
//
//   - W1: generate → filter (50 %) + set → discard;
//   - B3: W1 with both plugins in_process: true (W1 runs them as subprocesses);
//   - W5: generate → Kafka, on kfake (in this process) and on a real Apache Kafka node, transactional and
//     idempotent;
//   - W2: generate → Redis buffer (redis-server, AOF appendfsync everysec) → Kafka (the real node when there
//     is one, else kfake), exactly-once;
//   - W2-lanes (only when -workloads names it): W2 into a topic of 4 partitions, ordered and with
//     ordered: false, lanes: 4.
//
// Every run is checked: sluice's run summary must report every record read and the expected count
// delivered, and a Kafka topic (one per run) must hold exactly the expected count for a read_committed
// consumer. A run is measured from exec to exit: records/s over that time, CPU (utime + stime of the
// program and every process under it, reaped children included) per record read, and peak RSS per process
// (VmHWM from /proc every 50 ms) and of the whole tree at once.
//
// Peers run too when their binaries are given: SLUICE_BENCH_RPCONNECT (Redpanda Connect) and
// SLUICE_BENCH_CONDUIT (Conduit), with the configurations in bench/configs/. The environment's
// BENCH_RECORDS and BENCH_ROUNDS set the defaults of -records and -rounds.
//
// It starts the servers it needs (services/) and stops them, and every process it started, when it ends,
// on Ctrl-C too. It exits 1 when a run failed or a count was wrong, 2 on a bad flag, 3 when the harness
// itself could not run.
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
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/services"
)

// Defaults of the command line.
const (
	defaultRecords = 1_000_000
	defaultRounds  = 3
	defaultPayload = 200
	defaultTimeout = 10 * time.Minute
)

// peerEnv names the environment variable giving each peer's binary.
var peerEnv = map[string]string{"rpconnect": "SLUICE_BENCH_RPCONNECT", "conduit": "SLUICE_BENCH_CONDUIT"}

// options is the harness's command line.
type options struct {
	records, rounds, payload int
	keys                     []string
	kafka                    string            // auto, on, off
	kafkaProps               map[string]string // broker properties set on the real node (-kafka-property)
	bin, dir, out            string
	peers                    map[string]string // peer key → binary
	timeout                  time.Duration
	progress                 io.Writer
}

func main() {
	repo := filepath.Dir(services.Root())
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	records := fs.Int("records", envInt("BENCH_RECORDS", defaultRecords), "records each run reads (default: $BENCH_RECORDS, else 1000000)")
	rounds := fs.Int("rounds", envInt("BENCH_ROUNDS", defaultRounds), "rounds; each runs every workload with every program once (default: $BENCH_ROUNDS, else 3)")
	payload := fs.Int("payload", defaultPayload, "payload bytes of each generated record")
	var keys, defaults []string
	for _, w := range workloads() {
		keys = append(keys, w.Key)
		if !w.Extra {
			defaults = append(defaults, w.Key)
		}
	}
	sel := fs.String("workloads", strings.Join(defaults, ","), "workloads to run, comma-separated (W2-lanes only when named)")
	kafka := fs.String("kafka", "auto", "the real Kafka node (W5-kafka; W2 uses it when there is one): auto (when Java and Maven are installed), on, off")
	bin := fs.String("bin", filepath.Join(repo, "bin"), "directory holding sluice and plugins/ (make build)")
	dir := fs.String("dir", filepath.Join(repo, "out", "bench"), "work directory: servers' data, configurations and logs of every run (emptied first)")
	out := fs.String("out", filepath.Join(repo, "bench", "results"), "directory the results are written to")
	timeout := fs.Duration("timeout", defaultTimeout, "longest a run may take")
	kafkaProps := map[string]string{}
	fs.Func("kafka-property", "a broker property KEY=VALUE for the real Kafka node, such as add.partitions.to.txn.retry.backoff.ms=2 (repeatable)", func(v string) error {
		key, value, ok := strings.Cut(v, "=")
		if !ok || strings.TrimSpace(key) == "" {
			return fmt.Errorf("want KEY=VALUE, got %q", v)
		}
		kafkaProps[strings.TrimSpace(key)] = value
		return nil
	})
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	opts := options{records: *records, rounds: *rounds, payload: *payload, kafka: *kafka, kafkaProps: kafkaProps,
		bin: *bin, dir: *dir, out: *out, timeout: *timeout, peers: map[string]string{}, progress: os.Stderr}
	for _, k := range strings.Split(*sel, ",") {
		if k = strings.TrimSpace(k); !slices.Contains(keys, k) {
			usage(fs, "-workloads: unknown workload %q (want some of %s)", k, strings.Join(keys, ", "))
		}
		opts.keys = append(opts.keys, strings.TrimSpace(k))
	}
	switch {
	case *records < 2:
		usage(fs, "-records: want at least 2, got %d", *records)
	case *rounds < 1:
		usage(fs, "-rounds: want at least 1, got %d", *rounds)
	case *payload < 32:
		usage(fs, "-payload: want at least 32, got %d", *payload)
	case !slices.Contains([]string{"auto", "on", "off"}, *kafka):
		usage(fs, "-kafka: want auto, on or off, got %q", *kafka)
	}
	for peer, env := range peerEnv {
		if path := os.Getenv(env); path != "" {
			if fi, err := os.Stat(path); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
				usage(fs, "%s=%s: not an executable file", env, path)
			}
			opts.peers[peer] = path
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); stop() }() // a second signal ends the harness at once (its children die with it)
	report, err := run(ctx, opts)
	if report != nil {
		fmt.Println(report.markdown())
		if ctx.Err() == nil {
			files, werr := report.write(opts.out)
			if werr != nil {
				fmt.Fprintln(os.Stderr, "bench: writing results:", werr)
				err = errors.Join(err, werr)
			}
			for _, f := range files {
				fmt.Fprintln(os.Stderr, "bench: wrote", f)
			}
		} else {
			fmt.Fprintln(os.Stderr, "bench: interrupted: nothing written to", opts.out)
		}
		if failed := report.failed(); failed > 0 {
			fmt.Fprintf(os.Stderr, "bench: %d runs failed; their logs are in %s\n", failed, opts.dir)
			if err == nil {
				os.Exit(1)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(3)
	}
}

func usage(fs *flag.FlagSet, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	fs.Usage()
	os.Exit(2)
}

// envInt returns the integer in environment variable name, or def when it is unset or empty. A value that
// is not an integer ends the harness (exit 2).
func envInt(name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(strings.ReplaceAll(s, "_", ""))
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %s=%q: not an integer\n", name, s)
		os.Exit(2)
	}
	return n
}

// run starts the servers the selected workloads need and runs the rounds. It returns the report of the
// runs made, also when it stopped early (err says why).
func run(ctx context.Context, opts options) (*report, error) {
	if _, err := os.Stat(filepath.Join(opts.bin, "sluice")); err != nil {
		return nil, fmt.Errorf("%s is missing: build sluice and its plugins first (make build), or give -bin", filepath.Join(opts.bin, "sluice"))
	}
	var err error
	if opts.dir, err = workDir(opts.dir); err != nil {
		return nil, err
	}
	env, notes, err := startEnv(ctx, opts)
	defer env.close()
	if err != nil {
		return nil, err
	}
	rep := newReport(opts, env, notes)
	// Every plugin binary's spec in sluice's spec cache, before the first timed run.
	if out, err := execOutput(ctx, filepath.Join(opts.bin, "sluice"), "plugins", "list"); err != nil {
		return rep, fmt.Errorf("sluice plugins list: %w\n%s", err, out)
	}
	var ws []workload
	for _, w := range workloads() {
		if !slices.Contains(opts.keys, w.Key) {
			continue
		}
		if w.RealKafka && env.kafka == nil {
			continue // said in the notes
		}
		ws = append(ws, w)
	}
	for round := 1; round <= opts.rounds; round++ {
		fmt.Fprintf(opts.progress, "bench: round %d of %d (load average %s)\n", round, opts.rounds, loadAverage())
		for _, w := range ws {
			progs := w.Programs
			// Alternate: each round starts a workload with the next program.
			progs = append(slices.Clone(progs[(round-1)%len(progs):]), progs[:(round-1)%len(progs)]...)
			for _, p := range progs {
				binary := filepath.Join(opts.bin, "sluice")
				if p.Peer != "" {
					if binary = opts.peers[p.Peer]; binary == "" {
						continue
					}
				}
				r := runOnce(ctx, opts, env, w, p, binary, round)
				rep.add(r)
				fmt.Fprintf(opts.progress, "bench: %s\n", r.line())
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
			}
		}
	}
	rep.finish()
	return rep, nil
}

// workDir returns dir made absolute, created and empty. It empties only a directory an earlier run of the
// harness created (it holds the marker file), and refuses any other that is not empty.
func workDir(dir string) (string, error) {
	const marker = ".bench-work-dir"
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		if _, err := os.Stat(filepath.Join(dir, marker)); err != nil {
			return "", fmt.Errorf("work directory %s is not empty and was not made by this harness; give another -dir", dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, marker), nil, 0o644)
}

// loadAverage returns the first three fields of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// goVersion is the Go version the harness was built with: the one `make bench` builds sluice with.
func goVersion() string { return runtime.Version() }
