package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/services"
)

// verifyReport is the shape of verify --json that the tests read.
type verifyReport struct {
	Pipeline   string `json:"pipeline"`
	Consistent bool   `json:"consistent"`
	Compare    string `json:"compare"`
	Source     struct {
		Plugin   string `json:"plugin"`
		Records  int    `json:"records"`
		Expected int    `json:"expected"`
		Filtered int    `json:"filtered"`
		Failed   int    `json:"failed"`
		Position string `json:"position"`
	} `json:"source"`
	Sink struct {
		Plugin      string `json:"plugin"`
		Destination string `json:"destination"`
		Keys        int    `json:"keys"`
		Deleted     int    `json:"deleted"`
		Checkpoint  string `json:"checkpoint"`
	} `json:"sink"`
	BehindSeconds *float64 `json:"behind_seconds"`
	SettleSeconds float64  `json:"settle_seconds"`
	Counts        struct {
		Missing  int `json:"missing"`
		Stale    int `json:"stale"`
		Extra    int `json:"extra"`
		InFlight int `json:"in_flight"`
	} `json:"counts"`
	Samples map[string][]struct {
		Destination string `json:"destination"`
		Key         string `json:"key"`
		Hint        string `json:"hint"`
	} `json:"samples"`
	Repair *struct {
		Reemitted  int    `json:"reemitted"`
		Tombstoned int    `json:"tombstoned"`
		Through    string `json:"through"`
		Checked    bool   `json:"checked"`
		Before     struct {
			Missing int `json:"missing"`
			Stale   int `json:"stale"`
			Extra   int `json:"extra"`
		} `json:"before"`
	} `json:"repair"`
}

// verifyJSON runs verify --json and decodes its report.
func verifyJSON(t *testing.T, dir string, args ...string) (verifyReport, string, int) {
	t.Helper()
	out, errOut, code := sluice(t, dir, append([]string{"verify", "--json"}, args...)...)
	var r verifyReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("verify --json printed no report (exit %d): %v\nstdout:\n%s\nstderr:\n%s", code, err, out, errOut)
	}
	return r, errOut, code
}

// envelope is a file sink line in format record.
func envelope(key, payload string) string {
	if payload == "" {
		return fmt.Sprintf(`{"position":"AQ==","op":"delete","key":%q,"encoding":"json"}`, key)
	}
	return fmt.Sprintf(`{"position":"AQ==","op":"insert","key":%q,"encoding":"json","payload":%s}`, key, payload)
}

const verifyCopy = `version: 1
pipelines:
  - id: copy
    source: { plugin: file, settings: { path: in.jsonl } }
    transforms:
      - key: 'string(id)'
    sink: { plugin: file, settings: { path: out.jsonl, format: record } }
`

// writeRecords writes n source lines {"id":i,"v":"x<i>"} for i in [1, n].
func writeRecords(t *testing.T, path string, n int) {
	t.Helper()
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "{\"id\":%d,\"v\":\"x%d\"}\n", i, i)
	}
	writeFile(t, path, b.String())
}

// TestVerifyConsistentAndDamaged: a pipeline run to its end is consistent (exit 0); a sink file with a
// line deleted, one corrupted and one added is not (exit 1), with the right counts and samples, in the
// human report and in --json.
func TestVerifyConsistentAndDamaged(t *testing.T) {
	dir := t.TempDir()
	writeRecords(t, filepath.Join(dir, "in.jsonl"), 6)
	writeFile(t, filepath.Join(dir, "p.yaml"), verifyCopy)
	if _, errOut, code := sluice(t, dir, "run", "p.yaml"); code != 0 {
		t.Fatalf("run: exit %d\n%s", code, errOut)
	}
	out, errOut, code := sluice(t, dir, "verify", "p.yaml", "copy")
	if code != 0 || !strings.HasPrefix(out, "pipeline copy: file → file: consistent\n") ||
		!strings.Contains(out, "  source: 6 records, 6 expected at the sink; position 000000000000006c\n") ||
		!strings.Contains(out, "  sink:   6 keys (0 deleted) in out.jsonl\n") ||
		!strings.Contains(out, "compared: payload; missing 0, stale 0, extra 0, in flight 0") {
		t.Fatalf("verify of a consistent pipeline: exit %d\n%s\n%s", code, out, errOut)
	}
	r, _, code := verifyJSON(t, dir, "--settle", "0", "p.yaml", "copy")
	if code != 0 || !r.Consistent || r.Source.Expected != 6 || r.Sink.Keys != 6 || r.Compare != "payload" ||
		r.Sink.Destination != "out.jsonl" || r.BehindSeconds != nil || len(r.Samples["missing"]) != 0 {
		t.Fatalf("--json of a consistent pipeline: exit %d, %+v", code, r)
	}

	// Line 2 (key 2) deleted, line 3 (key 3) corrupted, a line for key 99 added; key 5 deleted in the
	// sink (a tombstone), which makes it missing too.
	data, _ := os.ReadFile(filepath.Join(dir, "out.jsonl"))
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	lines[2] = strings.Replace(lines[2], `"x3"`, `"CORRUPT"`, 1)
	lines = append(lines[:1], lines[2:]...)
	lines = append(lines, envelope("99", `{"id":99}`), envelope("5", ""))
	writeFile(t, filepath.Join(dir, "out.jsonl"), strings.Join(lines, "\n")+"\n")

	out, errOut, code = sluice(t, dir, "verify", "--settle", "0", "p.yaml", "copy")
	for _, want := range []string{
		"pipeline copy: file → file: NOT consistent\n",
		"  sink:   6 keys (1 deleted) in out.jsonl\n",
		"  compared: payload; missing 2, stale 1, extra 1\n",
		"  missing:\n    \"2\": not in the sink\n    \"5\": deleted in the sink\n",
		"  stale:\n    \"3\": v: source \"x3\", sink \"CORRUPT\"\n",
		"  extra:\n    \"99\": sink holds {\"id\":99}\n",
	} {
		if code != 1 || !strings.Contains(out, want) {
			t.Fatalf("verify of a damaged sink: exit %d, want 1 and %q in\n%s\n%s", code, want, out, errOut)
		}
	}
	r, _, code = verifyJSON(t, dir, "--settle", "0", "--sample", "1", "p.yaml", "copy")
	if code != 1 || r.Consistent || r.Counts.Missing != 2 || r.Counts.Stale != 1 || r.Counts.Extra != 1 || r.Counts.InFlight != 0 {
		t.Fatalf("--json of a damaged sink: exit %d, %+v", code, r)
	}
	if m := r.Samples["missing"]; len(m) != 1 || m[0].Key != "2" || m[0].Hint != "not in the sink" || m[0].Destination != "" {
		t.Fatalf("--sample 1 missing samples: %+v", m)
	}
	if s := r.Samples["stale"]; len(s) != 1 || s[0].Key != "3" || !strings.Contains(s[0].Hint, `sink "CORRUPT"`) {
		t.Fatalf("stale samples: %+v", s)
	}
	if e := r.Samples["extra"]; len(e) != 1 || e[0].Key != "99" {
		t.Fatalf("extra samples: %+v", e)
	}
	if f := r.Samples["in_flight"]; f == nil || len(f) != 0 {
		t.Fatalf("in_flight samples: %#v, want an empty list", f)
	}

	// Usage errors.
	if _, errOut, code := sluice(t, dir, "verify", "p.yaml", "cpoy"); code != 2 || !strings.Contains(errOut, `p.yaml has no pipeline "cpoy"; its pipelines: copy`) {
		t.Fatalf("unknown pipeline: exit %d, %q", code, errOut)
	}
	if _, errOut, code := sluice(t, dir, "verify", "--sample", "-1", "p.yaml", "copy"); code != 2 || !strings.Contains(errOut, "--sample must be 0 or more") {
		t.Fatalf("--sample -1: exit %d, %q", code, errOut)
	}
}

// TestVerifyRepairAtomicSink: a stopped pipeline into the file-atomic sink, after its source changed
// (a line changed, a line's key changed, a line added): verify finds the differences, --repair writes
// them to the sink without moving its stored position, the next verify is clean, and the pipeline runs on.
func TestVerifyRepairAtomicSink(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	writeRecords(t, in, 5)
	writeFile(t, filepath.Join(dir, "p.yaml"), strings.Replace(verifyCopy, "plugin: file, settings: { path: out.jsonl", "plugin: file-atomic, settings: { path: out.jsonl", 1))
	if _, errOut, code := sluice(t, dir, "run", "p.yaml"); code != 0 {
		t.Fatalf("run: exit %d\n%s", code, errOut)
	}
	posBefore, err := os.ReadFile(filepath.Join(dir, "out.jsonl.position"))
	if err != nil {
		t.Fatal(err)
	}
	// Same byte lengths, so that the stored offsets stay lines' ends.
	data, _ := os.ReadFile(in)
	data = bytes.Replace(data, []byte(`"x3"`), []byte(`"y3"`), 1)         // key 3 stale
	data = bytes.Replace(data, []byte(`{"id":4,`), []byte(`{"id":7,`), 1) // key 4 extra, key 7 missing
	data = append(data, "{\"id\":6,\"v\":\"x6\"}\n"...)                   // key 6 missing
	writeFile(t, in, string(data))

	r, _, code := verifyJSON(t, dir, "--settle", "0", "p.yaml", "copy")
	if code != 1 || r.Counts.Missing != 2 || r.Counts.Stale != 1 || r.Counts.Extra != 1 || r.Sink.Checkpoint != "000000000000005a" {
		t.Fatalf("verify after the source changed: exit %d, %+v", code, r)
	}
	// Without a buffer, the repair writes to the sink: only with --pipeline-stopped.
	if _, errOut, code := sluice(t, dir, "verify", "--repair", "--settle", "0", "p.yaml", "copy"); code != 2 ||
		!strings.Contains(errOut, "pipeline copy has no buffer, so the repair is written to its sink file-atomic directly") ||
		!strings.Contains(errOut, "add --pipeline-stopped") {
		t.Fatalf("--repair without --pipeline-stopped: exit %d, %q", code, errOut)
	}
	r, errOut, code := verifyJSON(t, dir, "--repair", "--pipeline-stopped", "--settle", "100ms", "p.yaml", "copy")
	if code != 0 || !r.Consistent || r.Repair == nil || r.Repair.Reemitted != 3 || r.Repair.Tombstoned != 1 ||
		r.Repair.Through != "sink file-atomic" || !r.Repair.Checked || r.Repair.Before.Missing != 2 || r.Repair.Before.Extra != 1 {
		t.Fatalf("--repair: exit %d, %+v\n%s", code, r, errOut)
	}
	// PATH.position (format 1): 0x81, the data length (8 bytes), the fencing token (8 bytes), the position.
	const posAt = 17
	if posAfter, _ := os.ReadFile(filepath.Join(dir, "out.jsonl.position")); len(posAfter) < posAt || len(posBefore) < posAt ||
		posBefore[0] != 0x81 || !bytes.Equal(posAfter[posAt:], posBefore[posAt:]) {
		t.Fatalf("the repair moved the sink's stored position from %x to %x", posBefore, posAfter)
	}
	if _, errOut, code := sluice(t, dir, "verify", "--settle", "0", "p.yaml", "copy"); code != 0 {
		t.Fatalf("verify after the repair: exit %d\n%s", code, errOut)
	}
	// The pipeline resumes after its stored position: the line added (key 6) is written again.
	if _, errOut, code := sluice(t, dir, "run", "p.yaml"); code != 0 {
		t.Fatalf("run after the repair: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := sluice(t, dir, "verify", "--settle", "0", "p.yaml", "copy"); code != 0 {
		t.Fatalf("verify after running on: exit %d\n%s", code, errOut)
	}
}

// TestVerifyRepairThroughRedisBuffer: a running pipeline with the Redis buffer whose sink file was
// damaged is repaired through the buffer, while it runs: the buffer's checkpoint does not move, the
// pipeline delivers the repair and the changes after it, and the second verify is clean. With cluster:,
// the repair opens the buffer with the lease's token: it is not refused and does not fence the holder.
func TestVerifyRepairThroughRedisBuffer(t *testing.T) {
	for _, clustered := range []bool{false, true} {
		t.Run(fmt.Sprintf("cluster=%v", clustered), func(t *testing.T) { verifyRepairThroughRedis(t, clustered) })
	}
}

func verifyRepairThroughRedis(t *testing.T, clustered bool) {
	srv := services.StartRedis(t, services.RedisOptions{})
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "out.jsonl")
	writeRecords(t, in, 8)
	head := "version: 1\n"
	if clustered {
		head += fmt.Sprintf("cluster: { redis: { addr: %q }, key_prefix: vt }\n", srv.Addr)
	}
	writeFile(t, filepath.Join(dir, "p.yaml"), head+fmt.Sprintf(`pipelines:
  - id: buffered
    source: { plugin: file, settings: { path: in.jsonl, follow: true, poll_interval: 10ms } }
    transforms:
      - key: 'string(id)'
    buffer: { plugin: redis, settings: { addr: %q, key: verify-test } }
    sink: { plugin: file, settings: { path: out.jsonl, format: record, sync: false } }
`, srv.Addr))
	cmd, stdout, stderr := startLockedSluice(t, dir, "p.yaml")
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s\nstderr:\n%s", what, syncString(stderr))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("8 lines in the sink", func() bool { return countLines(out) == 8 })
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ctx := context.Background()
	checkpoint := func() string {
		v, _ := rdb.HGet(ctx, "{verify-test}:meta", "pos").Result()
		return v
	}
	before := checkpoint()
	if before == "" {
		t.Fatal("the buffer holds no checkpoint")
	}

	// Damage the idle sink in place (the running sink appends to the same file): key 2 deleted, key 3
	// corrupted, key 42 added.
	data, _ := os.ReadFile(out)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	lines[2] = strings.Replace(lines[2], `"x3"`, `"CORRUPT"`, 1)
	lines = append(lines[:1], lines[2:]...)
	lines = append(lines, envelope("42", `{"id":42}`))
	if err := os.WriteFile(out, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, errOut, code := verifyJSON(t, dir, "--repair", "--settle", "2s", "p.yaml", "buffered")
	if code != 0 || !r.Consistent || r.Repair == nil || r.Repair.Through != "buffer redis" || r.Repair.Reemitted != 2 ||
		r.Repair.Tombstoned != 1 || r.Repair.Before.Missing != 1 || r.Repair.Before.Stale != 1 || r.Repair.Before.Extra != 1 {
		t.Fatalf("--repair through the buffer: exit %d, %+v\n%s\nsluice run:\n%s", code, r, errOut, syncString(stderr))
	}
	if after := checkpoint(); after != before {
		t.Fatalf("the repair moved the buffer's checkpoint from %q to %q", before, after)
	}
	if clustered {
		lease, _ := rdb.Get(ctx, "vt:lease:{buffered}").Result()
		fence, _ := rdb.HGet(ctx, "{verify-test}:meta", "fence").Result()
		if tok, _, _ := strings.Cut(lease, " "); tok == "" || tok != fence {
			t.Fatalf("the buffer's fencing token is %q, the lease %q: the repair changed it", fence, lease)
		}
	}
	// The running pipeline appends on to the buffer after the repair.
	f, _ := os.OpenFile(in, os.O_APPEND|os.O_WRONLY, 0)
	_, _ = f.WriteString("{\"id\":9,\"v\":\"x9\"}\n")
	f.Close()
	waitFor("the new line in the sink", func() bool { return strings.Contains(readString(out), `"key":"9"`) })
	if _, errOut, code := sluice(t, dir, "verify", "--settle", "0", "p.yaml", "buffered"); code != 0 {
		t.Fatalf("verify after the pipeline ran on: exit %d\n%s", code, errOut)
	}
	if strings.Contains(syncString(stderr), "level=ERROR") {
		t.Fatalf("the running pipeline logged errors:\n%s", syncString(stderr))
	}
	_ = cmd.Process.Signal(os.Interrupt)
	if code, _ := waitExit(t, cmd, 30*time.Second, stdout, stderr); code != 0 {
		t.Fatalf("sluice run: exit %d\n%s", code, syncString(stderr))
	}
}

func readString(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// TestVerifyCompareFilterRoute: compare picks what is compared; filtered records are not expected at
// the sink; routed records are compared at their route; ignore_deleted keeps extra keys out.
func TestVerifyCompareFilterRoute(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "in.jsonl"), `{"id":1,"kind":"a","ts":1,"doc":{"n":1}}
{"id":2,"kind":"skip","ts":1,"doc":{"n":2}}
{"id":3,"kind":"b","ts":1,"doc":{"n":3}}
`)
	// The sink holds the same documents with another ts, under their routes, and a key 8 the source lacks.
	writeFile(t, filepath.Join(dir, "out.jsonl"), strings.Join([]string{
		`{"position":"AQ==","op":"insert","key":"1","meta":{"sluice.route":"r-a"},"encoding":"json","payload":{"id":1,"kind":"a","ts":2,"doc":{"n":1}}}`,
		`{"position":"Ag==","op":"insert","key":"3","meta":{"sluice.route":"r-b"},"encoding":"json","payload":{"id":3,"kind":"b","ts":2,"doc":{"n":3.0}}}`,
		`{"position":"Aw==","op":"insert","key":"8","meta":{"sluice.route":"r-b"},"encoding":"json","payload":{"id":8}}`,
	}, "\n")+"\n")
	pipeline := `version: 1
pipelines:
  - id: routed
    source: { plugin: file, settings: { path: in.jsonl } }
    transforms:
      - filter: 'kind != "skip"'
      - route: '"r-" + kind'
      - key: 'string(id)'
    sink: { plugin: file, settings: { path: out.jsonl, format: record } }
`
	writeFile(t, filepath.Join(dir, "p.yaml"), pipeline)
	r, _, code := verifyJSON(t, dir, "--settle", "0", "p.yaml", "routed")
	if code != 1 || r.Source.Records != 3 || r.Source.Filtered != 1 || r.Source.Expected != 2 ||
		r.Counts.Stale != 2 || r.Counts.Extra != 1 || r.Counts.Missing != 0 {
		t.Fatalf("whole payloads: exit %d, %+v", code, r)
	}
	if s := r.Samples["stale"]; len(s) != 2 || s[0].Destination != "r-a" || s[0].Key != "1" || s[0].Hint != "ts: source 1, sink 2" ||
		s[1].Key != "3" || s[1].Hint != "ts: source 1, sink 2" {
		t.Fatalf("stale samples: %+v", s)
	}
	if e := r.Samples["extra"]; len(e) != 1 || e[0].Destination != "r-b" || e[0].Key != "8" {
		t.Fatalf("extra samples: %+v", e)
	}
	out, _, _ := sluice(t, dir, "verify", "--settle", "0", "p.yaml", "routed")
	if !strings.Contains(out, "    \"1\" at r-a: ts: source 1, sink 2\n") || !strings.Contains(out, ", 1 filtered out") {
		t.Fatalf("the human report:\n%s", out)
	}

	// Comparing doc only (3 and 3.0 are equal numbers), and keeping what the source deleted.
	writeFile(t, filepath.Join(dir, "p.yaml"), pipeline+"    verify: { compare: doc, ignore_deleted: true }\n")
	r, errOut, code := verifyJSON(t, dir, "--settle", "0", "p.yaml", "routed")
	if code != 0 || !r.Consistent || r.Compare != "doc" || r.Counts.Extra != 0 {
		t.Fatalf("compare: doc, ignore_deleted: exit %d, %+v\n%s", code, r, errOut)
	}
	// A compare expression that does not compile is a configuration error, where it is written.
	writeFile(t, filepath.Join(dir, "p.yaml"), pipeline+"    verify: { compare: 'doc.n +* 1' }\n")
	if _, errOut, code := sluice(t, dir, "verify", "p.yaml", "routed"); code != 2 || !strings.Contains(errOut, "p.yaml:10:") ||
		!strings.Contains(errOut, "verify.compare: ") {
		t.Fatalf("a bad compare: exit %d, %q", code, errOut)
	}
}

// TestVerifyInFlight: keys that differ at the first check and agree after --settle are reported as in
// flight, not as errors: here the sink catches up (the missing line is written) during the settle time.
func TestVerifyInFlight(t *testing.T) {
	dir := t.TempDir()
	writeRecords(t, filepath.Join(dir, "in.jsonl"), 3)
	writeFile(t, filepath.Join(dir, "p.yaml"), verifyCopy)
	writeFile(t, filepath.Join(dir, "out.jsonl"), envelope("1", `{"id":1,"v":"x1"}`)+"\n"+envelope("2", `{"id":2,"v":"x2"}`)+"\n")
	cmd, stdout, stderr := startLocked(t, dir, "verify", "--json", "--settle", "3s", "p.yaml", "copy")
	waitLog(t, stderr, `keys differ; checking them again after the settle time.* keys=1 settle=3s`)
	f, _ := os.OpenFile(filepath.Join(dir, "out.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	_, _ = f.WriteString(envelope("3", `{"id":3,"v":"x3"}`) + "\n")
	f.Close()
	code, _ := waitExit(t, cmd, 30*time.Second, stdout, stderr)
	var r verifyReport
	if err := json.Unmarshal([]byte(syncString(stdout)), &r); err != nil {
		t.Fatalf("exit %d, no report: %v\n%s", code, err, syncString(stderr))
	}
	if code != 0 || !r.Consistent || r.Counts.InFlight != 1 || r.Counts.Missing != 0 || r.SettleSeconds != 3 {
		t.Fatalf("exit %d, %+v", code, r)
	}
	if f := r.Samples["in_flight"]; len(f) != 1 || f[0].Key != "3" || f[0].Hint != "was missing: not in the sink" {
		t.Fatalf("in-flight samples: %+v", f)
	}
}

// TestVerifyUnverifiableStage: a stage whose plugin has no Verifier, or whose settings its Verify refuses,
// is a usage error (exit 2) naming the stage and the plugin; so are records that have no key to compare by.
func TestVerifyUnverifiableStage(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.yaml"), `version: 1
pipelines:
  - id: gen
    source: { plugin: generate, settings: { count: 3 } }
    sink: { plugin: discard }
  - id: plain
    source: { plugin: file, settings: { path: in.jsonl } }
    transforms: [{ key: 'string(id)' }]
    sink: { plugin: file, settings: { path: out.jsonl } }
  - id: keyless
    source: { plugin: file, settings: { path: in.jsonl } }
    sink: { plugin: file, settings: { path: out.jsonl, format: record } }
`)
	writeRecords(t, filepath.Join(dir, "in.jsonl"), 1)
	if _, errOut, code := sluice(t, dir, "verify", "p.yaml", "gen"); code != 2 ||
		!strings.Contains(errOut, "source generate cannot be verified: the plugin does not implement Verify (sdk.Verifier)") {
		t.Fatalf("generate: exit %d, %q", code, errOut)
	}
	if _, errOut, code := sluice(t, dir, "verify", "p.yaml", "plain"); code != 2 ||
		!strings.Contains(errOut, `sink file cannot be verified: file: only a sink writing format "record" can be verified`) {
		t.Fatalf("file sink in format payload: exit %d, %q", code, errOut)
	}
	if _, errOut, code := sluice(t, dir, "verify", "p.yaml", "keyless"); code != 2 ||
		!strings.Contains(errOut, "verify: 1 of the source's records have no key after the steps of pipeline keyless: verify compares records by key; give them one with a key step") {
		t.Fatalf("records without keys: exit %d, %q", code, errOut)
	}
}
