package transforms

import (
	"encoding/json"
	"testing"

	"github.com/sluicehq/sluice/sdk/record"
)

// FuzzTransforms compiles arbitrary expressions as every step kind and runs them over arbitrary payloads:
// whatever the input, compile and run return errors, never panic or hang.
func FuzzTransforms(f *testing.F) {
	seeds := []struct{ expr, payload string }{
		{`operationType == "insert" && fullDocument.total > 100`, event},
		{`int(fullDocument.total * 100)`, `{"fullDocument": {"total": 1.5}}`},
		{`payload`, `{"a": {"b": [1, 2, {"c": null}]}}`},
		{`documentKey._id == oid("64f1a2b3c4d5e6f708192a3b")`, `{"documentKey": {"_id": {"$oid": "64f1a2b3c4d5e6f708192a3b"}}}`},
		{`fullDocument.price / 0`, `{"fullDocument": {"price": {"$numberDecimal": "NaN"}}}`},
		{`map(tags, # + 1)`, `{"tags": [1, "x", null]}`},
		{`let x = a; x.b ?? 3`, `{"a": {"b": 1}}`},
		{`1..10000000`, `{}`},
		{`json(payload) + string(clusterTime)`, `{"clusterTime": {"$timestamp": {"t": 1, "i": 2}}}`},
		{`meta["x"] + key + op`, `not json`},
	}
	for _, s := range seeds {
		f.Add(s.expr, []byte(s.payload), "fullDocument.x")
	}
	f.Fuzz(func(t *testing.T, expr string, payload []byte, path string) {
		steps := []Step{
			filter(expr),
			set(path, expr),
			set("out", expr),
			route(expr),
			key(expr),
			drop(path),
			rename(path, "renamed"),
		}
		for _, enc := range []record.Encoding{record.EncodingJSON, record.EncodingBSON, record.EncodingRaw} {
			rec := record.Record{Position: record.Position("p"), Key: []byte("k"), Payload: payload, Encoding: enc,
				Meta: record.Meta{{Key: "x", Value: "y"}}}
			for _, s := range steps {
				prog, err := Compile([]Step{s})
				if err != nil {
					continue
				}
				out, failed := prog.NewRunner().Run([]record.Record{rec})
				if len(out)+len(failed) > 1 {
					t.Fatalf("one record in, %d out and %d failed", len(out), len(failed))
				}
				if len(failed) == 0 && enc == record.EncodingJSON && json.Valid(payload) {
					checkSparse(t, []Step{s}, rec)
				}
			}
		}
	})
}
