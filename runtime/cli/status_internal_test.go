package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/api"
)

func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := now.Add(-d); return &v }
	f := func(v float64) *float64 { return &v }
	pid := func(v int) *int { return &v }
	errText := "sink file (pid 4244): opening: file: creating the directory of /srv/out/audit.jsonl: mkdir /srv/out: not a directory"
	est := int64(250000)
	l := &api.List{Time: now, Pipelines: []api.Pipeline{
		{ID: "orders-to-kafka", State: "running", Guarantee: "exactly-once", Since: at(83 * time.Second), Started: at(90 * time.Second),
			Stages: []api.Stage{{Role: "source", Plugin: "mongodb", Pid: pid(4242)}, {Role: "buffer", Plugin: "redis", Pid: pid(4243)},
				{Role: "sink", Plugin: "kafka", Pid: pid(4245)}},
			Positions: map[string]string{"buffer": "1764504000000-3", "source": "0x0182ab"},
			Read:      123456, Delivered: 123400, Restarts: 1, ReadPerSecond: f(1523.4), DeliveredPerSecond: f(1519),
			LagSeconds: f(0.4321), Buffer: &api.Buffer{Entries: 56, Bytes: 11800, Fraction: f(0.0056)},
			Snapshot: &api.Snapshot{Copied: 120000, Estimated: &est}},
		{ID: "audit", State: "failed", Guarantee: "at-least-once", Since: at(2 * time.Hour), LastError: &errText,
			Stages: []api.Stage{}, Positions: map[string]string{}, Redelivered: 12, DeadLetters: 3},
		{ID: "quickstart", State: "completed", Guarantee: "at-least-once", Since: at(5 * time.Second),
			Stages: []api.Stage{}, Positions: map[string]string{"source": "0x000000000001869f"}, Read: 100000, Delivered: 100000,
			ReadPerSecond: f(0), DeliveredPerSecond: f(0)},
	}}
	var b bytes.Buffer
	printStatus(&b, l)
	want := `PIPELINE         STATE      GUARANTEE      READ/S   DELIVERED/S  DELIVERED  LAG    BUFFER  RESTARTS
orders-to-kafka  running    exactly-once   1.52k/s  1.52k/s      123,400    432ms  1%      1
audit            failed     at-least-once  —        —            0          —      —       0
quickstart       completed  at-least-once  0/s      0/s          100,000    —      —       0

orders-to-kafka: running for 1m23s
  stages     source mongodb (pid 4242) → buffer redis (pid 4243) → sink kafka (pid 4245)
  read       123,456 (1.52k/s), 123,400 delivered (1.52k/s)
  buffer     1% (56 entries, 11.5 KiB)
  snapshot   120,000 of ~250,000 documents (48%)
  positions  source 0x0182ab, buffer 1764504000000-3

audit: failed for 2h0m
  stages       none running
  read         0 (—), 0 delivered (—)
  redelivered  12 (possible duplicates), 3 dead letters
  last error   sink file (pid 4244): opening: file: creating the directory of /srv/out/audit.jsonl: mkdir /srv/out: not a directory

quickstart: completed for 5s
  stages     none running
  read       100,000 (0/s), 100,000 delivered (0/s)
  positions  source 0x000000000001869f
`
	if b.String() != want {
		t.Errorf("status:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	printStatus(&b, &api.List{Time: now, Pipelines: []api.Pipeline{}})
	if b.String() != "no pipelines\n" {
		t.Errorf("no pipelines: %q", b.String())
	}
}

// TestPrintStatusCluster: with several instances, status says which instance answers and which are live,
// and for each pipeline which instance holds it, since when and with which token.
func TestPrintStatusCluster(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	since := now.Add(-75 * time.Second)
	name := func(s string) *string { return &s }
	token := func(n int64) *int64 { return &n }
	l := &api.List{Time: now, Instance: "etl-1", Instances: []string{"etl-1", "etl-2"}, Pipelines: []api.Pipeline{
		{ID: "orders", State: "running", Guarantee: "exactly-once", Since: &since, Stages: []api.Stage{}, Positions: map[string]string{},
			Lease: &api.Lease{Instance: name("etl-1"), Since: &since, Token: token(1764504000123), Here: true}},
		{ID: "audit", State: "standby", Guarantee: "at-least-once", Since: &since, Stages: []api.Stage{}, Positions: map[string]string{},
			Lease: &api.Lease{Instance: name("etl-2"), Since: &since, Token: token(1764504000456)}},
		{ID: "billing", State: "standby", Guarantee: "at-least-once", Stages: []api.Stage{}, Positions: map[string]string{},
			Lease: &api.Lease{}},
	}}
	var b bytes.Buffer
	printStatus(&b, l)
	at := since.Local().Format("2006-01-02 15:04:05")
	want := `instance etl-1; live instances: etl-1, etl-2

PIPELINE  STATE    GUARANTEE      READ/S  DELIVERED/S  DELIVERED  LAG  BUFFER  RESTARTS  INSTANCE
orders    running  exactly-once   —       —            0          —    —       0         etl-1
audit     standby  at-least-once  —       —            0          —    —       0         etl-2
billing   standby  at-least-once  —       —            0          —    —       0         —

orders: running for 1m15s
  lease   on etl-1 (this instance) since ` + at + ` (1m15s), token 1764504000123
  stages  none running
  read    0 (—), 0 delivered (—)

audit: standby for 1m15s
  lease   on etl-2 since ` + at + ` (1m15s), token 1764504000456
  stages  none running
  read    0 (—), 0 delivered (—)

billing: standby
  lease   not held by any instance
  stages  none running
  read    0 (—), 0 delivered (—)
`
	if b.String() != want {
		t.Errorf("status:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestFormats(t *testing.T) {
	for x, want := range map[float64]string{0: "0", 0.25: "0.25", 8.25: "8.25", 12.34: "12.3", 99.96: "100", 950: "950", 999.6: "1k",
		1523.4: "1.52k", 12345: "12.3k", 999999: "1M", 1.25e6: "1.25M", 3.2e9: "3.2G", -1500: "-1.5k"} {
		if got := fmtShort(x); got != want {
			t.Errorf("fmtShort(%v) = %q, want %q", x, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1234: "-1,234"} {
		if got := fmtCount(n); got != want {
			t.Errorf("fmtCount(%d) = %q, want %q", n, got, want)
		}
	}
	for d, want := range map[time.Duration]string{432100 * time.Microsecond: "432ms", 1234 * time.Millisecond: "1.2s",
		83*time.Second + 400*time.Millisecond: "1m23s", 2*time.Hour + 20*time.Second: "2h0m", 50*time.Hour + 3*time.Minute: "50h3m"} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%s) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 11800: "11.5 KiB", 64 << 20: "64.0 MiB"} {
		if got := fmtBytes(n); got != want {
			t.Errorf("fmtBytes(%d) = %q, want %q", n, got, want)
		}
	}
	if got := fmtBuffer(&api.Buffer{Entries: 1500, Bytes: 2048}, false); got != "1,500 entries" {
		t.Errorf("an unbounded buffer: %q", got)
	}
	if got := fmtSnapshot(&api.Snapshot{Copied: 42}); got != "42 documents" {
		t.Errorf("a snapshot without an estimate: %q", got)
	}
	for addr, want := range map[string]string{"127.0.0.1:7584": "http://127.0.0.1:7584", "http://[::1]:9000/": "http://[::1]:9000",
		"https://sluice.example/ops": "https://sluice.example/ops"} {
		if got, err := statusURL(addr); err != nil || got != want {
			t.Errorf("statusURL(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}
	for _, addr := range []string{"http://", "ftp://x:1", ":::"} {
		if _, err := statusURL(addr); err == nil || !strings.HasPrefix(err.Error(), "--addr: want HOST:PORT or http://HOST:PORT") {
			t.Errorf("statusURL(%q): %v", addr, err)
		}
	}
}
