package main

import (
	"bytes"
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// testReport is two rounds of W1 (sluice, a peer) and one of B3, one W1 peer run failed.
func testReport() *report {
	mk := func(key, prog string, round int, wall time.Duration, cpu time.Duration, peak map[string]int64, delivered int64, err string) *runResult {
		total := int64(0)
		for _, b := range peak {
			total += b
		}
		return &runResult{Key: key, Workload: key + " workload", Program: prog, Sluice: strings.HasPrefix(prog, "sluice"),
			Round: round, Records: 1_000_000, Read: 1_000_000, Delivered: delivered, Checked: "run summary",
			Wall: wall, CPU: cpu, Peak: peak, PeakTotal: total, PeakAnon: total * 3 / 4, Err: err}
	}
	const m = 1 << 20
	return &report{
		Date: time.Date(2026, 11, 30, 21, 5, 0, 0, time.UTC), Commit: "abc123", Go: "go1.26.0",
		Machine: machine{Cores: 2, CPU: "Test CPU", Memory: 24 << 30}, Records: 1_000_000, Payload: 200, Rounds: 2,
		Notes: []string{"Conduit: not run (SLUICE_BENCH_CONDUIT unset)."}, LoadStart: "0.10 0.20 0.30", LoadEnd: "0.40 0.50 0.60",
		Runs: []*runResult{
			mk("W1", "sluice", 1, 5*time.Second, 5*time.Second, map[string]int64{"sluice": 100 * m, "generate": 20 * m}, 500_000, ""),
			mk("W1", "Redpanda Connect", 1, 10*time.Second, 12*time.Second, map[string]int64{"redpanda-connect": 50 * m}, -1, ""),
			mk("B3", "sluice in_process", 1, 2*time.Second, 2*time.Second, map[string]int64{"sluice": 60 * m}, 500_000, ""),
			mk("W1", "sluice", 2, 4*time.Second, 6*time.Second, map[string]int64{"sluice": 120 * m, "generate": 22 * m}, 500_000, ""),
			mk("W1", "Redpanda Connect", 2, 0, 0, nil, -1, "redpanda-connect: exit status 1"),
		},
	}
}

func TestRows(t *testing.T) {
	rows := testReport().rows()
	if len(rows) != 3 {
		t.Fatalf("rows: %d, want 3 (W1 sluice, W1 peer, B3): %+v", len(rows), rows)
	}
	w1, peer, b3 := rows[0], rows[1], rows[2]
	// 1M records in 5 s and 4 s: 200k and 250k records/s, median 225k.
	if w1.Rate != (spread{Median: 225_000, Min: 200_000, Max: 250_000, N: 2}) {
		t.Errorf("W1 sluice rate = %+v", w1.Rate)
	}
	if w1.CPU != (spread{Median: 5.5, Min: 5, Max: 6, N: 2}) {
		t.Errorf("W1 sluice CPU µs/record = %+v", w1.CPU)
	}
	if s := w1.PeakBy["sluice"]; s.Median != 110<<20 {
		t.Errorf("W1 sluice peak of the host = %+v, want median 110 MiB", s)
	}
	if peer.Runs != 2 || peer.Failed != 1 || peer.Rate.N != 1 || peer.Delivered.N != 0 {
		t.Errorf("peer row = %+v, want 2 runs, 1 failed, one rate and no delivered count", peer)
	}
	if w1.Ratio != "" || peer.Ratio != "2.25×" || b3.Ratio != "0.45×" {
		t.Errorf("ratios: sluice %q, peer %q, B3 %q; want none, 2.25× (225k / 100k), 0.45× (225k / 500k)", w1.Ratio, peer.Ratio, b3.Ratio)
	}
}

func TestMarkdown(t *testing.T) {
	md := testReport().markdown()
	for _, want := range []string{
		"### make bench, 2026-11-30 21:05 UTC",
		"commit abc123, go1.26.0; machine: 2 cores, Test CPU, 24.0 GiB",
		"1000000 records of 200 B per run; rounds: 2,",
		"0.10 0.20 0.30 at the start, 0.40 0.50 0.60 at the end",
		"| W1 workload | sluice | 225k (200k–250k) | 112k (100k–125k) | 5.50 (5.00–6.00) | 131 (120–142) | 98 (90–106) | sluice 110, generate 21 | – |",
		"| W1 workload | Redpanda Connect (1 of 2 runs failed) | 100k | – | 12.00 | 50 | 38 | redpanda-connect 50 | 2.25× |",
		"| B3 workload | sluice in_process | 500k | 250k | 2.00 | 60 | 45 | sluice 60 | 0.45× |",
		"- Conduit: not run (SLUICE_BENCH_CONDUIT unset).",
		"- FAILED round 2 W1 Redpanda Connect: redpanda-connect: exit status 1",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestCSV(t *testing.T) {
	var b bytes.Buffer
	if err := testReport().writeCSV(&b); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 6 {
		t.Fatalf("%d CSV lines, want a header and 5 runs", len(recs))
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	first, failed := recs[1], recs[5]
	for name, want := range map[string]string{"commit": "abc123", "cores": "2", "cpu": "Test CPU", "workload_key": "W1",
		"program": "sluice", "round": "1", "read": "1000000", "delivered": "500000", "wall_s": "5.000",
		"records_per_s": "200000", "delivered_per_s": "100000", "cpu_us_per_record": "5.000",
		"peak_rss_total_mib": "120.0", "peak_rss_anon_mib": "90.0", "peak_rss_mib_by_process": "sluice=100;generate=20", "error": ""} {
		if got := first[col[name]]; got != want {
			t.Errorf("first run, %s = %q, want %q", name, got, want)
		}
	}
	for name, want := range map[string]string{"delivered": "", "records_per_s": "", "error": "redpanda-connect: exit status 1"} {
		if got := failed[col[name]]; got != want {
			t.Errorf("failed run, %s = %q, want %q", name, got, want)
		}
	}
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	files, err := testReport().write(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("wrote %v, want the markdown, the CSV and the chart", files)
	}
	for i, ext := range []string{".md", ".csv", ".png"} {
		if want := filepath.Join(dir, "2026-11-30-210500-1000000"+ext); files[i] != want {
			t.Errorf("file %d = %s, want %s", i, files[i], want)
		}
	}
	png, err := os.ReadFile(files[2])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("%s is not a PNG", files[2])
	}
}

func TestParseSummary(t *testing.T) {
	out := []byte("pipeline other: done — 5 records read (5/s), 5 delivered (5/s) in 1s, at-least-once\n" +
		"pipeline bench-w1-sluice-r1: done — 1000000 records read (220262/s), 500000 delivered (110131/s) in 4.54s, at-least-once\n")
	s, err := parseSummary(out, "bench-w1-sluice-r1")
	if err != nil {
		t.Fatal(err)
	}
	if s != (summary{State: "done", Read: 1_000_000, Delivered: 500_000, Took: "4.54s"}) {
		t.Errorf("parseSummary = %+v", s)
	}
	failed := []byte("pipeline p: failed: sink: broken\n  10 records read (1/s), 3 delivered (1/s) in 9s, exactly-once\n")
	if s, err := parseSummary(failed, "p"); err == nil {
		t.Errorf("parseSummary of a failed pipeline's two lines = %+v, want an error (no counts on its line)", s)
	}
	if _, err := parseSummary(out, "missing"); err == nil {
		t.Error("parseSummary(missing): want an error")
	}
}

// TestConfigsRender fills every configuration template and parses the result as YAML.
func TestConfigsRender(t *testing.T) {
	p := params{Pipeline: "bench-w5-sluice-r1", Records: 1000, PayloadBytes: 200, Pad: padFor(200), Transactional: true,
		Brokers: []string{"127.0.0.1:9092", "127.0.0.1:9093"}, Topic: "t", TxnID: "x", RedisAddr: "127.0.0.1:6379",
		RedisURL: "redis://127.0.0.1:6379", RedisKey: "k", PayloadFile: "/tmp/payload.json"}
	seen := 0
	for _, w := range workloads() {
		for _, prog := range w.Programs {
			for _, f := range prog.Files {
				path, err := render(t.TempDir(), f, p)
				if err != nil {
					t.Fatal(err)
				}
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				var doc map[string]any
				if err := yaml.Unmarshal(b, &doc); err != nil {
					t.Errorf("%s does not parse as YAML: %v\n%s", f, err, b)
				}
				seen++
			}
		}
	}
	if seen == 0 {
		t.Fatal("no configuration rendered")
	}
	if got := len(`{"seq":123456,"pad":""}`) + len(padFor(200)); got != 200 {
		t.Errorf("a 6-digit record with padFor(200) is %d bytes, want 200", got)
	}
}
