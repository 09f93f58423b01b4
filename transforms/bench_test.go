package transforms

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms/codec"
)

// changeEvent is a realistic 1.2 KB MongoDB change event in relaxed Extended JSON.
func changeEvent(tb testing.TB) []byte {
	b, err := os.ReadFile("codec/testdata/change-event.json")
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

var benchSteps = []Step{
	filter(`operationType in ["insert", "update", "replace"] && fullDocument.total > 100`),
	set("fullDocument.total_cents", `int(fullDocument.total * 100)`, "meta.pipeline", `"orders"`),
}

func batchOf(payload []byte, n int) []record.Record {
	recs := make([]record.Record, n)
	for i := range recs {
		recs[i] = record.Record{Position: record.Position{byte(i)}, Op: record.OpInsert, Key: []byte("k"),
			Payload: payload, Encoding: record.EncodingJSON}
	}
	return recs
}

// BenchmarkFilterDecoded is the filter step alone on a record whose payload is already decoded: the cost
// of evaluating the expression.
func BenchmarkFilterDecoded(b *testing.B) {
	prog, err := Compile(benchSteps[:1])
	if err != nil {
		b.Fatal(err)
	}
	doc, err := codec.DecodeJSON(changeEvent(b))
	if err != nil {
		b.Fatal(err)
	}
	r := prog.NewRunner()
	env := r.env
	env[docName], env["payload"] = doc, doc
	st := &prog.steps[0]
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		v, err := r.vm.Run(st.prog.vm, env)
		if err != nil || v != true {
			b.Fatalf("filter = %v, %v", v, err)
		}
	}
	reportPerRecord(b, cpuTime()-cpu, b.N)
}

// benchRun runs steps over batches of 1024 copies of the change event, and reports per-record figures.
func benchRun(b *testing.B, steps []Step) { benchProgram(b, steps, false) }

func benchProgram(b *testing.B, steps []Step, whole bool) {
	prog, err := Compile(steps)
	if err != nil {
		b.Fatal(err)
	}
	if whole {
		prog.tree.Read(nil)
	}
	payload := changeEvent(b)
	recs := batchOf(payload, 1024)
	r := prog.NewRunner()
	b.SetBytes(int64(len(payload)) * int64(len(recs)))
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		out, failed := r.Run(recs)
		if len(out) != len(recs) || len(failed) != 0 {
			b.Fatalf("out %d failed %v", len(out), failed)
		}
	}
	reportPerRecord(b, cpuTime()-cpu, b.N*len(recs))
}

// cpuTime is the CPU time the process has used (user and system, every thread: the collector included).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportPerRecord reports wall and CPU time per record. On a machine others are using, wall time grows
// with the load; CPU time per record is what one core spends, and so what the README's figures are.
func reportPerRecord(b *testing.B, cpu time.Duration, records int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(records), "ns/record")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(records), "cpu-ns/record")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkDecodeFilter decodes each payload and filters it; the payload passes unchanged (no encode).
func BenchmarkDecodeFilter(b *testing.B) { benchRun(b, benchSteps[:1]) }

// BenchmarkDecodeFilterSetEncode is the target: decode, filter, set, encode.
func BenchmarkDecodeFilterSetEncode(b *testing.B) { benchRun(b, benchSteps) }

// BenchmarkMetaFilter filters on metadata only: payloads are never decoded.
func BenchmarkMetaFilter(b *testing.B) { benchRun(b, []Step{filter(`op == "insert" && key != ""`)}) }

// BenchmarkDecodeFilterSetEncodeWhole is the target workload with sparse decoding turned off: every
// payload decoded into maps and re-encoded whole, for comparison.
func BenchmarkDecodeFilterSetEncodeWhole(b *testing.B) { benchProgram(b, benchSteps, true) }

// BenchmarkDecodeJSON and BenchmarkStdJSON compare the codec with encoding/json on the same event.
func BenchmarkDecodeJSON(b *testing.B) {
	data := changeEvent(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		if _, err := codec.DecodeJSON(data); err != nil {
			b.Fatal(err)
		}
	}
	reportPerRecord(b, cpuTime()-cpu, b.N)
}

func BenchmarkStdJSON(b *testing.B) {
	data := changeEvent(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			b.Fatal(err)
		}
	}
	reportPerRecord(b, cpuTime()-cpu, b.N)
}

// BenchmarkCompile compiles the six steps of the README's example: the cost a connector file's
// expressions add to start-up.
func BenchmarkCompile(b *testing.B) {
	steps := []Step{
		filter(`operationType in ["insert", "update", "replace"] && fullDocument.total > 100`),
		set("fullDocument.total_cents", `int(fullDocument.total * 100)`, "meta.pipeline", `"orders"`),
		drop("fullDocument.password", "fullDocument.card"),
		rename("fullDocument.cust", "fullDocument.customer"),
		route(`"shop." + ns.coll`),
		key(`string(documentKey._id)`),
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(steps); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeJSON(b *testing.B) {
	doc, err := codec.DecodeJSON(changeEvent(b))
	if err != nil {
		b.Fatal(err)
	}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		if buf, err = codec.EncodeJSON(buf[:0], doc); err != nil {
			b.Fatal(err)
		}
	}
}

// w1Batch is 1024 records as the generate plugin makes them with payload_bytes 200: {"seq":N,"pad":"xxx…"},
// keys N in decimal.
func w1Batch() []record.Record {
	recs := make([]record.Record, 1024)
	for i := range recs {
		seq := 500_000 + i
		p := fmt.Appendf(nil, `{"seq":%d,"pad":"`, seq)
		p = append(p, bytes.Repeat([]byte{'x'}, 200-len(p)-2)...)
		p = append(p, `"}`...)
		recs[i] = record.Record{Position: record.Position{byte(i)}, Op: record.OpInsert,
			Key: strconv.AppendInt(nil, int64(seq), 10), Payload: p, Encoding: record.EncodingJSON}
	}
	return recs
}

// BenchmarkW1 is the W1 workload's steps on small records: a filter keeping half of them (seq % 2 == 0),
// then a set of two fields on the records kept; what the host does per record in generate → transforms →
// discard.
func BenchmarkW1(b *testing.B) {
	prog, err := Compile([]Step{filter(`seq % 2 == 0`), set("processed", `true`, "doubled", `seq * 2`)})
	if err != nil {
		b.Fatal(err)
	}
	recs := w1Batch()
	r := prog.NewRunner()
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		out, failed := r.Run(recs)
		if len(out) != len(recs)/2 || len(failed) != 0 {
			b.Fatalf("out %d failed %v", len(out), failed)
		}
	}
	reportPerRecord(b, cpuTime()-cpu, b.N*len(recs))
}
