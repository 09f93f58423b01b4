package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// runResult is one run of one program on one workload.
type runResult struct {
	Key, Workload, Program string
	Sluice                 bool
	Round                  int
	Records                int   // records the source was told to make
	Read, Delivered        int64 // as checked; -1 when the program gives no count
	// Checked says how the counts were checked.
	Checked string
	Wall    time.Duration
	// PipelineTime is sluice's own duration of the pipeline (run summary), "" for peers.
	PipelineTime string
	CPU          time.Duration
	Peak         map[string]int64
	PeakTotal    int64
	PeakAnon     int64 // the highest sum of RssAnon at one reading (see procMem)
	Err          string
	Dir          string
}

// Rate is records read per second of wall time.
func (r *runResult) Rate() float64 { return float64(r.Records) / r.Wall.Seconds() }

// DeliveredRate is records delivered per second of wall time, NaN when unknown.
func (r *runResult) DeliveredRate() float64 {
	if r.Delivered < 0 {
		return math.NaN()
	}
	return float64(r.Delivered) / r.Wall.Seconds()
}

// CPUPerRecord is CPU µs per record read.
func (r *runResult) CPUPerRecord() float64 { return float64(r.CPU.Microseconds()) / float64(r.Records) }

// line is the run's progress line.
func (r *runResult) line() string {
	head := fmt.Sprintf("round %d %s, %s:", r.Round, r.Key, r.Program)
	if r.Err != "" {
		return fmt.Sprintf("%s FAILED: %s (logs: %s)", head, r.Err, r.Dir)
	}
	return fmt.Sprintf("%s %s records/s, %.2f µs CPU/record, peak RSS %s MiB (%s) in %s; %s",
		head, human(r.Rate()), r.CPUPerRecord(), mib(r.PeakTotal), peaks(r.Peak), r.Wall.Round(time.Millisecond), r.Checked)
}

// runOnce runs program p on workload w and checks its counts. Its error, if any, is in the result.
func runOnce(ctx context.Context, opts options, e *env, w workload, p program, binary string, round int) *runResult {
	slug := strings.NewReplacer(" ", "-", "_", "-").Replace(strings.ToLower(p.Name))
	id := fmt.Sprintf("bench-%s-%s-r%d", strings.ToLower(w.Key), slug, round)
	r := &runResult{Key: w.Key, Workload: w.Name, Program: p.Name, Sluice: p.Peer == "", Round: round,
		Records: opts.records, Read: -1, Delivered: -1, Dir: filepath.Join(opts.dir, id)}
	want := w.Delivered(opts.records)
	if err := runChecked(ctx, opts, e, w, p, binary, id, want, r); err != nil {
		r.Err = err.Error()
	}
	return r
}

func runChecked(ctx context.Context, opts options, e *env, w workload, p program, binary, id string, want int, r *runResult) error {
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return err
	}
	prm := params{Pipeline: id, Records: opts.records, PayloadBytes: opts.payload, Pad: padFor(opts.payload),
		Topic: id, TxnID: id, RedisKey: id}
	if p.Adjust != nil {
		p.Adjust(&prm)
	}
	var b *broker
	if w.Kafka {
		b = e.brokerFor(w)
		r.Workload = w.Name + " " + kafkaLabel(b)
		prm.Brokers = b.Brokers
		if err := b.CreateTopic(ctx, id, w.Partitions); err != nil {
			return err
		}
		defer b.DeleteTopic(context.WithoutCancel(ctx), id)
	}
	if w.Redis {
		prm.RedisAddr, prm.RedisURL = e.redis.Addr, "redis://"+e.redis.Addr
		defer func() { _, _ = redisDo(context.WithoutCancel(ctx), e.redis.Addr, "FLUSHALL") }()
	}
	if p.Peer == "conduit" {
		prm.PayloadFile = filepath.Join(r.Dir, "payload.json")
		payload := fmt.Sprintf(`{"seq":0,"pad":%q}`, prm.Pad)
		if err := os.WriteFile(prm.PayloadFile, []byte(payload), 0o644); err != nil {
			return err
		}
	}
	var files []string
	for _, f := range p.Files {
		path, err := render(r.Dir, f, prm)
		if err != nil {
			return err
		}
		files = append(files, path)
	}
	args := p.Args(binary, r.Dir, files)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = r.Dir
	stdout, err := os.Create(filepath.Join(r.Dir, "stdout.log"))
	if err != nil {
		return err
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(r.Dir, "stderr.log"))
	if err != nil {
		return err
	}
	defer stderr.Close()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	var done func(context.Context) error
	if p.UntilStopped {
		done = func(ctx context.Context) error {
			n, err := b.Count(ctx, id, want, func(n int) bool { return n >= want })
			if err == nil && n < want {
				err = fmt.Errorf("%d of %d records in topic %s, none more for %s", n, want, id, countStall)
			}
			return err
		}
	}
	m, err := measure(ctx, cmd, opts.timeout, done)
	r.Wall, r.CPU, r.Peak, r.PeakTotal, r.PeakAnon = m.Wall, m.CPU, m.Peak, m.PeakTotal, m.PeakAnon
	if err != nil {
		return fmt.Errorf("%w; end of stderr: %s", err, tail(filepath.Join(r.Dir, "stderr.log"), 5))
	}
	var checks []string
	if p.Peer == "" {
		out, err := os.ReadFile(filepath.Join(r.Dir, "stdout.log"))
		if err != nil {
			return err
		}
		s, err := parseSummary(out, id)
		if err != nil {
			return err
		}
		r.Read, r.Delivered, r.PipelineTime = s.Read, s.Delivered, s.Took
		switch {
		case s.State != "done":
			return fmt.Errorf("pipeline %s: %s, want done", id, s.State)
		case s.Read != int64(opts.records):
			return fmt.Errorf("run summary: %d records read, want %d", s.Read, opts.records)
		case s.Delivered != int64(want):
			return fmt.Errorf("run summary: %d records delivered, want %d", s.Delivered, want)
		}
		checks = append(checks, "run summary")
	} else {
		r.Read = int64(opts.records) // the count the peer's source was given; checked below where it lands in Kafka
	}
	if w.Kafka {
		n, err := b.Count(ctx, id, want, nil)
		if err != nil {
			return err
		}
		r.Delivered = int64(n)
		if n != want {
			return fmt.Errorf("topic %s holds %d records for a read_committed consumer, want %d", id, n, want)
		}
		checks = append(checks, "Kafka read_committed count")
	}
	if len(checks) == 0 {
		checks = append(checks, "exit status only")
	}
	r.Checked = strings.Join(checks, " + ")
	return nil
}

// kafkaLabel names a broker in a workload's label.
func kafkaLabel(b *broker) string {
	if b.Kind == "kfake" {
		return "(kfake)"
	}
	return "(Apache Kafka)"
}

// tail returns the last n lines of a file, on one line.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
