package compare

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"

	"github.com/bytedance/sonic"
	"github.com/bytedance/sonic/ast"
	gojson "github.com/goccy/go-json"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/sluicehq/sluice/transforms/codec"
)

// event is the 1.2 KB change event the transforms benchmarks use.
func event(tb testing.TB) []byte {
	b, err := os.ReadFile("../testdata/change-event.json")
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// The workload of transforms' BenchmarkDecodeFilterSetEncode, codec part only: read operationType and
// fullDocument.total, add fullDocument.total_cents, write the document.

func BenchmarkReadPatch(b *testing.B) {
	data := event(b)
	b.Run("sluice", func(b *testing.B) {
		t := codec.NewTree()
		t.Read([]string{"operationType"})
		t.Read([]string{"fullDocument", "total"})
		cents := t.Write([]string{"fullDocument", "total_cents"})
		var c codec.Changes
		var out []byte
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			c.Reset(t)
			doc, err := codec.DecodeSparse(data, t, &c)
			if err != nil {
				b.Fatal(err)
			}
			total := doc["fullDocument"].(map[string]any)["total"].(float64)
			if doc["operationType"] != "update" {
				b.Fatal("wrong operationType")
			}
			doc["fullDocument"].(map[string]any)["total_cents"] = int(total * 100)
			c.Mark(cents)
			if out, err = codec.AppendPatched(out[:0], data, doc, t, &c); err != nil {
				b.Fatal(err)
			}
		}
		check(b, out)
	})
	b.Run("gjson+sjson", func(b *testing.B) {
		var out []byte
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			r := gjson.GetManyBytes(data, "operationType", "fullDocument.total")
			if r[0].Str != "update" {
				b.Fatal("wrong operationType")
			}
			var err error
			if out, err = sjson.SetBytes(data, "fullDocument.total_cents", int(r[1].Num*100)); err != nil {
				b.Fatal(err)
			}
		}
		check(b, out)
	})
	b.Run("sonic-ast", func(b *testing.B) {
		var out []byte
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			root, err := sonic.Get(data)
			if err != nil {
				b.Fatal(err)
			}
			op, _ := root.Get("operationType").String()
			if op != "update" {
				b.Fatal("wrong operationType")
			}
			doc := root.Get("fullDocument")
			total, err := doc.Get("total").Float64()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := doc.Set("total_cents", ast.NewAny(int(total*100))); err != nil {
				b.Fatal(err)
			}
			if out, err = root.MarshalJSON(); err != nil {
				b.Fatal(err)
			}
		}
		check(b, out)
	})
	b.Run("goccy-whole", func(b *testing.B) {
		var out []byte
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			var doc map[string]any
			if err := gojson.Unmarshal(data, &doc); err != nil {
				b.Fatal(err)
			}
			fd := doc["fullDocument"].(map[string]any)
			fd["total_cents"] = int(fd["total"].(float64) * 100)
			var err error
			if out, err = gojson.Marshal(doc); err != nil {
				b.Fatal(err)
			}
		}
		check(b, out)
	})
	b.Run("encoding-json-whole", func(b *testing.B) {
		var out []byte
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			var doc map[string]any
			if err := json.Unmarshal(data, &doc); err != nil {
				b.Fatal(err)
			}
			fd := doc["fullDocument"].(map[string]any)
			fd["total_cents"] = int(fd["total"].(float64) * 100)
			var err error
			if out, err = json.Marshal(doc); err != nil {
				b.Fatal(err)
			}
		}
		check(b, out)
	})
}

// check makes sure a result holds the new field and is still JSON.
func check(b *testing.B, out []byte) {
	if !json.Valid(out) || !bytes.Contains(out, []byte(`"total_cents":12950`)) {
		b.Fatalf("bad output: %s", out)
	}
}

// BenchmarkDecodeWhole decodes the whole event into Go values (ours also converts the Extended JSON
// wrappers into BSON types; the others leave them as objects).
func BenchmarkDecodeWhole(b *testing.B) {
	data := event(b)
	run := func(name string, f func() error) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := f(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	run("sluice", func() error { _, err := codec.DecodeJSON(data); return err })
	run("sonic", func() error { var m map[string]any; return sonic.Unmarshal(data, &m) })
	run("goccy", func() error { var m map[string]any; return gojson.Unmarshal(data, &m) })
	run("encoding-json", func() error { var m map[string]any; return json.Unmarshal(data, &m) })
}

// BenchmarkEncodeWhole encodes the decoded event (ours writes Extended JSON wrappers for the BSON types).
func BenchmarkEncodeWhole(b *testing.B) {
	data := event(b)
	ours, err := codec.DecodeJSON(data)
	if err != nil {
		b.Fatal(err)
	}
	var plain map[string]any
	if err := json.Unmarshal(data, &plain); err != nil {
		b.Fatal(err)
	}
	run := func(name string, f func() error) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := f(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	var buf []byte
	run("sluice", func() error { var err error; buf, err = codec.EncodeJSON(buf[:0], ours); return err })
	run("sonic", func() error { _, err := sonic.Marshal(plain); return err })
	run("goccy", func() error { _, err := gojson.Marshal(plain); return err })
	run("encoding-json", func() error { _, err := json.Marshal(plain); return err })
}
