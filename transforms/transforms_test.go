package transforms

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms/codec"
)

func filter(e string) Step { return Step{Kind: Filter, Expr: Expr{Text: e}} }
func route(e string) Step  { return Step{Kind: Route, Expr: Expr{Text: e}} }
func key(e string) Step    { return Step{Kind: Key, Expr: Expr{Text: e}} }

// set takes path, expression pairs.
func set(kv ...string) Step {
	s := Step{Kind: Set}
	for i := 0; i < len(kv); i += 2 {
		s.Fields = append(s.Fields, Field{Path: kv[i], Expr: Expr{Text: kv[i+1]}})
	}
	return s
}

func drop(paths ...string) Step {
	s := Step{Kind: Drop}
	for _, p := range paths {
		s.Paths = append(s.Paths, Field{Path: p})
	}
	return s
}

// rename takes from, to pairs.
func rename(kv ...string) Step {
	s := Step{Kind: Rename}
	for i := 0; i < len(kv); i += 2 {
		s.Fields = append(s.Fields, Field{Path: kv[i], To: kv[i+1]})
	}
	return s
}

// event is a MongoDB change event in relaxed Extended JSON, with a value of each BSON type.
const event = `{
 "_id": {"_data": "8264F1A2B3000000012B022C0100296E5A1004"},
 "operationType": "insert",
 "clusterTime": {"$timestamp": {"t": 1700000000, "i": 3}},
 "wallTime": {"$date": "2023-11-14T22:13:20.123Z"},
 "ns": {"db": "shop", "coll": "orders"},
 "documentKey": {"_id": {"$oid": "64f1a2b3c4d5e6f708192a3b"}},
 "fullDocument": {
  "_id": {"$oid": "64f1a2b3c4d5e6f708192a3b"},
  "total": 150, "price": {"$numberDecimal": "19.99"}, "big": {"$numberLong": "9007199254740993"},
  "ratio": 0.25, "created": {"$date": "2024-01-02T03:04:05Z"},
  "card": "4111", "password": "x", "cust": "bob",
  "blob": {"$binary": {"base64": "AQID", "subType": "00"}},
  "tags": ["vip", "eu"], "address": {"city": "Lyon", "zip": "69001"}
 }
}`

func TestSteps(t *testing.T) {
	tests := []struct {
		name  string
		steps []Step
		in    string // payload (relaxed Extended JSON); event when empty
		// want is the payload out, as relaxed Extended JSON compared after decoding; "" means dropped,
		// "same" means unchanged bytes (not re-encoded).
		want     string
		wantKey  string
		wantMeta map[string]string
		wantErr  string
	}{
		// filter
		{name: "filter true keeps the record untouched", steps: []Step{filter(`operationType in ["insert", "update"] && fullDocument.total > 100`)}, want: "same"},
		{name: "filter false drops", steps: []Step{filter(`fullDocument.total > 1000`)}},
		{name: "filter on a missing field is false", steps: []Step{filter(`fullDocument.nope > 1`)}},
		{name: "filter through a missing object is false", steps: []Step{filter(`fullDocument.customer.name == "bob"`)}},
		{name: "missing field equals nil", steps: []Step{filter(`fullDocument.customer == nil`)}, want: "same"},
		{name: "filter returning nil is false", steps: []Step{filter(`fullDocument.nope`)}},
		{name: "filter non-bool at run time", steps: []Step{filter(`fullDocument.cust ?? false`)}, wantErr: `the condition gave "bob" (string), not true or false`},
		{name: "ObjectID equals oid()", steps: []Step{filter(`documentKey._id == oid("64f1a2b3c4d5e6f708192a3b")`)}, want: "same"},
		{name: "ObjectID equals its hex", steps: []Step{filter(`documentKey._id == "64f1a2b3c4d5e6f708192a3b"`)}, want: "same"},
		{name: "ObjectID order", steps: []Step{filter(`documentKey._id > oid("64f1a2b3c4d5e6f708192a3a") && documentKey._id < oid("64f1a2b3c4d5e6f708192a3c")`)}, want: "same"},
		{name: "Decimal compares exactly with a float", steps: []Step{filter(`fullDocument.price == 19.99 && fullDocument.price > 19.98 && fullDocument.price < 20`)}, want: "same"},
		{name: "Decimal compares with an int", steps: []Step{filter(`fullDocument.price > 19 && 20 > fullDocument.price`)}, want: "same"},
		{name: "Decimal equals decimal()", steps: []Step{filter(`fullDocument.price == decimal("19.990")`)}, want: "same"},
		{name: "Int64 beyond float precision", steps: []Step{filter(`fullDocument.big == 9007199254740993 && fullDocument.big > 9007199254740992`)}, want: "same"},
		{name: "dates compare with date()", steps: []Step{filter(`fullDocument.created > date("2024-01-01") && fullDocument.created < now()`)}, want: "same"},
		{name: "date methods", steps: []Step{filter(`fullDocument.created.Year() == 2024 && wallTime.Month() == 11`)}, want: "same"},
		{name: "Timestamp order", steps: []Step{filter(`clusterTime > timestamp(1700000000, 2) && clusterTime == timestamp(1700000000, 3)`)}, want: "same"},
		{name: "Binary string", steps: []Step{filter(`string(fullDocument.blob) != ""`)}, want: "same"},
		{name: "arrays and builtins", steps: []Step{filter(`"vip" in fullDocument.tags && len(fullDocument.tags) == 2 && upper(fullDocument.address.city) == "LYON"`)}, want: "same"},
		{name: "meta, key and op", steps: []Step{filter(`meta["mongodb.coll"] == "orders" && key == "k1" && op == "insert"`)}, want: "same"},
		{name: "payload for odd names", steps: []Step{filter(`payload["operationType"] == "insert"`)}, want: "same"},
		{name: "type error in comparison", steps: []Step{filter(`fullDocument.cust > 5`)}, wantErr: `invalid operation`},
		{name: "string compared to ObjectID order is an error", steps: []Step{filter(`documentKey._id > 5`)}, wantErr: `invalid operation: ObjectID > int`},
		// set
		{name: "set nested and meta", steps: []Step{set("fullDocument.total_cents", `int(fullDocument.total * 100)`, "meta.pipeline", `"orders"`)},
			want: `{"fullDocument": {"total_cents": 15000}}`, wantMeta: map[string]string{"pipeline": "orders"}},
		{name: "set creates missing objects", steps: []Step{set("a.b.c", `1`)}, want: `{"a": {"b": {"c": 1}}}`},
		{name: "set through a non-object fails", steps: []Step{set("fullDocument.cust.name", `"x"`)}, wantErr: `fullDocument.cust is string, not an object`},
		{name: "set sees earlier sets", steps: []Step{set("x", `2`), set("y", `x * 3`)}, want: `{"x": 2, "y": 6}`},
		{name: "set Decimal arithmetic stays Decimal", steps: []Step{set("p", `fullDocument.price * 2`)}, want: `{"p": {"$numberDecimal": "39.98"}}`},
		{name: "set keeps BSON types", steps: []Step{set("copy", `fullDocument.price`, "id", `documentKey._id`, "when", `fullDocument.created`)},
			want: `{"copy": {"$numberDecimal": "19.99"}, "id": {"$oid": "64f1a2b3c4d5e6f708192a3b"}, "when": {"$date": "2024-01-02T03:04:05Z"}}`},
		{name: "set with nil arithmetic fails", steps: []Step{set("x", `fullDocument.nope * 100`)}, wantErr: `operator *: fullDocument.nope is nil (a missing field?) (column 19 of the expression)`},
		{name: "set key", steps: []Step{set("key", `fullDocument.cust`)}, want: "same", wantKey: "bob"},
		{name: "set literals", steps: []Step{set("t", `true`, "f", `1.5`, "s", `"x"`, "i", `-3`)},
			want: `{"t": true, "f": 1.5, "s": "x", "i": -3}`},
		{name: "set a nil literal where nil is skipped", steps: []Step{set("n?", `nil`)}, want: "same"},
		{name: "set payload field named key", steps: []Step{set("payload.key", `"k"`)}, want: `{"key": "k"}`},
		// drop
		{name: "drop nested", steps: []Step{drop("fullDocument.password", "fullDocument.card")}, want: `{"fullDocument": {"password": null, "card": null}}`},
		{name: "drop missing is a no-op", steps: []Step{drop("fullDocument.nope", "nope.deeper")}, want: "same"},
		{name: "drop meta", steps: []Step{drop("meta.mongodb.coll")}, want: "same", wantMeta: map[string]string{"mongodb.coll": ""}},
		// rename
		{name: "rename nested", steps: []Step{rename("fullDocument.cust", "fullDocument.customer")}, want: `{"fullDocument": {"cust": null, "customer": "bob"}}`},
		{name: "rename to a new object", steps: []Step{rename("fullDocument.address.city", "city.name")}, want: `{"city": {"name": "Lyon"}, "fullDocument": {"address": {"city": null}}}`},
		{name: "rename missing is a no-op", steps: []Step{rename("fullDocument.nope", "x")}, want: "same"},
		{name: "rename to meta", steps: []Step{rename("ns.coll", "meta.collection")}, want: `{"ns": {"coll": null}}`, wantMeta: map[string]string{"collection": "orders"}},
		// route
		{name: "route", steps: []Step{route(`"shop." + ns.coll`)}, want: "same", wantMeta: map[string]string{record.MetaRoute: "shop.orders"}},
		{name: "route nil fails", steps: []Step{route(`ns.nope`)}, wantErr: `the route is nil`},
		{name: "route missing in concatenation fails", steps: []Step{route(`"shop." + ns.nope`)}, wantErr: `operator +: ns.nope is nil (a missing field?)`},
		// key
		{name: "key from ObjectID", steps: []Step{key(`documentKey._id`)}, want: "same", wantKey: "64f1a2b3c4d5e6f708192a3b"},
		{name: "key string()", steps: []Step{key(`string(documentKey._id)`)}, want: "same", wantKey: "64f1a2b3c4d5e6f708192a3b"},
		{name: "key json()", steps: []Step{key(`json(documentKey)`)}, want: "same", wantKey: `{"_id":{"$oid":"64f1a2b3c4d5e6f708192a3b"}}`},
		{name: "key int", steps: []Step{key(`fullDocument.total`)}, want: "same", wantKey: "150"},
		{name: "key object fails", steps: []Step{key(`fullDocument.address`)}, wantErr: `the key is {"city":"Lyon","zip":"69001"} (object); it must be`},
		{name: "key nil fails", steps: []Step{key(`fullDocument.nope`)}, wantErr: `the key is nil`},
		// order of steps
		{name: "steps run in order", steps: []Step{set("n", `1`), filter(`n == 1`), set("n", `n + 1`), filter(`n == 2`)}, want: `{"n": 2}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prog, err := Compile(tt.steps)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			in := tt.in
			if in == "" {
				in = event
			}
			rec := record.Record{Position: record.Position("p1"), Op: record.OpInsert, Key: []byte("k1"),
				Meta: record.Meta{{Key: "mongodb.coll", Value: "orders"}}, Payload: []byte(in), Encoding: record.EncodingJSON}
			orig := string(rec.Payload)
			checkSparse(t, tt.steps, rec)
			out, failed := prog.NewRunner().Run([]record.Record{rec})
			if string(rec.Payload) != orig || len(rec.Meta) != 1 {
				t.Fatal("Run modified its input record")
			}
			if tt.wantErr != "" {
				if len(failed) != 1 || !strings.Contains(failed[0].Error(), tt.wantErr) {
					t.Fatalf("failed = %v, want an error containing %q", failures(failed), tt.wantErr)
				}
				if string(failed[0].Record.Payload) != orig {
					t.Fatal("the failure does not carry the original record")
				}
				return
			}
			if len(failed) > 0 {
				t.Fatalf("unexpected failure: %v", failed[0].Error())
			}
			if tt.want == "" {
				if len(out) != 0 {
					t.Fatalf("record kept, want it dropped: %s", out[0].Payload)
				}
				return
			}
			if len(out) != 1 {
				t.Fatalf("record dropped, want it kept")
			}
			got := out[0]
			if tt.want == "same" {
				if string(got.Payload) != orig {
					t.Fatalf("payload re-encoded though no step changed it:\n%s", got.Payload)
				}
			} else {
				checkPatch(t, orig, tt.want, got.Payload)
			}
			wantKey := "k1"
			if tt.wantKey != "" {
				wantKey = tt.wantKey
			}
			if string(got.Key) != wantKey {
				t.Errorf("key = %q, want %q", got.Key, wantKey)
			}
			for k, v := range tt.wantMeta {
				gv, _ := got.Meta.Get(k)
				if gv != v {
					t.Errorf("meta %s = %q, want %q", k, gv, v)
				}
			}
		})
	}
}

// checkSparse runs prog on rec decoding sparsely (as compiled) and whole, and checks that both give the
// same records and failures.
func checkSparse(t *testing.T, steps []Step, rec record.Record) {
	t.Helper()
	prog, err := Compile(steps)
	if err != nil || prog.tree.ReadsAll() {
		return
	}
	whole, _ := Compile(steps)
	whole.tree.Read(nil)
	out1, failed1 := prog.NewRunner().Run([]record.Record{rec})
	out2, failed2 := whole.NewRunner().Run([]record.Record{rec})
	_ = prog
	if len(out1) != len(out2) || len(failed1) != len(failed2) {
		t.Fatalf("sparse: %d out %d failed; whole: %d out %d failed", len(out1), len(failed1), len(out2), len(failed2))
	}
	for i := range failed1 {
		if failed1[i].Error() != failed2[i].Error() {
			t.Fatalf("sparse failure %q, whole %q", failed1[i].Error(), failed2[i].Error())
		}
	}
	for i := range out1 {
		if string(out1[i].Key) != string(out2[i].Key) || fmt.Sprint(out1[i].Meta) != fmt.Sprint(out2[i].Meta) {
			t.Fatalf("sparse key/meta %q %v, whole %q %v", out1[i].Key, out1[i].Meta, out2[i].Key, out2[i].Meta)
		}
		a, err1 := codec.DecodeJSON(out1[i].Payload)
		b, err2 := codec.DecodeJSON(out2[i].Payload)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("sparse output %s, whole output %s", out1[i].Payload, out2[i].Payload)
		}
		if d := Diff(b, a); d != nil {
			t.Fatalf("sparse and whole decoding differ: %v\nsparse %s\nwhole  %s", d, out1[i].Payload, out2[i].Payload)
		}
	}
}

// checkPatch checks that got is orig with patch applied: patch's fields replace orig's, recursively,
// and a null in patch means the field is gone.
func checkPatch(t *testing.T, orig, patch string, got []byte) {
	t.Helper()
	want, err := codec.DecodeJSON([]byte(orig))
	if err != nil {
		t.Fatal(err)
	}
	p, err := codec.DecodeJSON([]byte(patch))
	if err != nil {
		t.Fatal(err)
	}
	merge(want, p)
	doc, err := codec.DecodeJSON(got)
	if err != nil {
		t.Fatalf("output does not decode: %v\n%s", err, got)
	}
	if d := Diff(want, doc); d != nil {
		t.Fatalf("payload differs:\n%s\ngot %s", strings.Join(d, "\n"), got)
	}
}

func merge(dst, patch map[string]any) {
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(dst, k)
		case map[string]any:
			if dv, ok := dst[k].(map[string]any); ok {
				merge(dv, pv)
				continue
			}
			dst[k] = pv
		default:
			dst[k] = v
		}
	}
}

// TestPatchKeepsLayout checks that a changed payload keeps its untouched fields as written, in place.
func TestPatchKeepsLayout(t *testing.T) {
	prog, err := Compile([]Step{set("b.new", `b.x + 1`), drop("c"), rename("d", "e")})
	if err != nil {
		t.Fatal(err)
	}
	if prog.tree == nil {
		t.Fatal("the program decodes whole payloads")
	}
	in := `{"z": [1, {"$oid": "x"}], "b": {"q": "\u00e9", "x": 1, "w": 2.50}, "c": 3, "d": {"$numberLong": "4"}, "a": "untouched"}`
	out, failed := prog.NewRunner().Run([]record.Record{{Payload: []byte(in), Encoding: record.EncodingJSON}})
	if len(failed) > 0 {
		t.Fatal(failed[0].Error())
	}
	want := `{"z": [1, {"$oid": "x"}],"b":{"q": "\u00e9","x": 1,"w": 2.50,"new":2},"a": "untouched","e":4}`
	if string(out[0].Payload) != want {
		t.Fatalf("got  %s\nwant %s", out[0].Payload, want)
	}
}

func TestBSONPayload(t *testing.T) {
	doc, err := codec.DecodeJSON([]byte(event))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := codec.EncodeBSON(nil, doc)
	if err != nil {
		t.Fatal(err)
	}
	prog, err := Compile([]Step{filter(`fullDocument.price > 19 && documentKey._id == oid("64f1a2b3c4d5e6f708192a3b")`),
		set("fullDocument.total_cents", `int(fullDocument.total * 100)`)})
	if err != nil {
		t.Fatal(err)
	}
	out, failed := prog.NewRunner().Run([]record.Record{{Position: record.Position("p"), Payload: payload, Encoding: record.EncodingBSON}})
	if len(failed) > 0 || len(out) != 1 {
		t.Fatalf("out=%d failed=%v", len(out), failed)
	}
	if out[0].Encoding != record.EncodingBSON {
		t.Fatalf("encoding = %v, want bson", out[0].Encoding)
	}
	got, err := codec.DecodeBSON(out[0].Payload)
	if err != nil {
		t.Fatal(err)
	}
	doc["fullDocument"].(map[string]any)["total_cents"] = 15000
	if d := Diff(doc, got); d != nil {
		t.Fatalf("BSON payload differs: %v", d)
	}
}

func TestPayloadNotDecodedWithoutNeed(t *testing.T) {
	prog, err := Compile([]Step{filter(`meta["x"] == "1" && op == "insert"`), route(`"t." + key`)})
	if err != nil {
		t.Fatal(err)
	}
	if prog.decode {
		t.Fatal("a program reading only meta, op and key decodes payloads")
	}
	// An undecodable payload passes, since it is never decoded.
	rec := record.Record{Op: record.OpInsert, Key: []byte("k"), Meta: record.Meta{{Key: "x", Value: "1"}}, Payload: []byte("{not json"), Encoding: record.EncodingJSON}
	out, failed := prog.NewRunner().Run([]record.Record{rec})
	if len(failed) > 0 || len(out) != 1 || string(out[0].Payload) != "{not json" {
		t.Fatalf("out=%v failed=%v", out, failed)
	}
	if r, _ := out[0].Meta.Get(record.MetaRoute); r != "t.k" {
		t.Fatalf("route = %q", r)
	}
}

func TestRawAndBadPayloads(t *testing.T) {
	prog, err := Compile([]Step{filter(`fullDocument.total > 1`)})
	if err != nil {
		t.Fatal(err)
	}
	recs := []record.Record{
		{Payload: []byte("plain text"), Encoding: record.EncodingRaw},         // no fields: filter sees nil
		{Payload: []byte(`{"fullDocument": `), Encoding: record.EncodingJSON}, // broken
		{Encoding: record.EncodingJSON},                                       // empty payload: nil fields
	}
	out, failed := prog.NewRunner().Run(recs)
	if len(out) != 0 {
		t.Fatalf("kept %d records", len(out))
	}
	if len(failed) != 1 || failed[0].Step != -1 || !strings.Contains(failed[0].Error(), "decoding the json payload") {
		t.Fatalf("failed = %v", failed)
	}
	prog, err = Compile([]Step{set("x", `1`)})
	if err != nil {
		t.Fatal(err)
	}
	_, failed = prog.NewRunner().Run(recs[:1])
	if len(failed) != 1 || !strings.Contains(failed[0].Error(), "raw bytes") {
		t.Fatalf("set on a raw payload: %v", failed)
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		step Step
		want string
		col  int
	}{
		{filter(`a >`), "unexpected token EOF", 3},
		{filter(`"yes"`), "expected bool", 0},
		{filter(`md5(x)`), "unknown function md5", 1},
		{route(`42`), "expected string", 0},
		{filter(``), "empty expression", 0},
		{filter(strings.Repeat("1+", 400) + "1 > 0"), "maximum allowed nodes", 0},
		{set("op", `1`), `"op" cannot be changed`, 0},
		{set("a..b", `1`), "empty segment", 0},
		{drop("meta"), `names the whole meta`, 0},
		{rename("a", "a"), "to itself", 0},
		{Step{Kind: "map"}, `unknown step kind "map"`, 0},
		{filter(`name matches "("`), "matches: error parsing regexp: missing closing ): `(`", 14},
		{filter(`name matches ("a" + "(")`), "", -1}, // computed: checked when it runs
	}
	for _, tt := range tests {
		_, err := Compile([]Step{filter(`true`), tt.step})
		if tt.col < 0 {
			if err != nil {
				t.Errorf("%+v: %v, want no compile error", tt.step, err)
			}
			continue
		}
		var errs Errors
		if !errorsAs(err, &errs) || len(errs) != 1 {
			t.Fatalf("%+v: err = %v, want one compile error", tt.step, err)
		}
		e := errs[0]
		if e.Step != 1 || !strings.Contains(e.Msg, tt.want) || (tt.col != 0 && e.Column != tt.col) {
			t.Errorf("%+v: error = step %d column %d %q, want step 1 column %d containing %q", tt.step, e.Step, e.Column, e.Msg, tt.col, tt.want)
		}
	}
}

func errorsAs(err error, target *Errors) bool {
	es, ok := err.(Errors)
	if ok {
		*target = es
	}
	return ok
}

// TestMemoryBudget checks that an expression cannot allocate without bound.
func TestMemoryBudget(t *testing.T) {
	prog, err := Compile([]Step{filter(`repeat("xy", 1000000000) == ""`)})
	if err != nil {
		t.Fatal(err)
	}
	_, failed := prog.NewRunner().Run([]record.Record{{Payload: []byte(`{}`), Encoding: record.EncodingJSON}})
	if len(failed) != 1 || !strings.Contains(failed[0].Error(), "repeat(): the result would exceed") {
		t.Fatalf("failed = %v, want repeat to refuse", failed)
	}
	testRangeBudget(t)
}

func testRangeBudget(t *testing.T) {
	prog, err := Compile([]Step{filter(`len(1..100000000) > 0`)})
	if err != nil {
		t.Fatal(err)
	}
	_, failed := prog.NewRunner().Run([]record.Record{{Payload: []byte(`{}`), Encoding: record.EncodingJSON}})
	if len(failed) != 1 || !strings.Contains(failed[0].Error(), "memory budget") {
		t.Fatalf("failed = %v, want the memory budget to stop the evaluation", failed)
	}
}

func TestDiff(t *testing.T) {
	want := map[string]any{"a": 15000, "b": map[string]any{"c": "x"}, "l": []any{1, 2}}
	got := map[string]any{"a": 15000.0, "b": map[string]any{"c": "y", "d": true}, "l": []any{1}}
	d := Diff(want, got)
	joined := strings.Join(d, "\n")
	for _, w := range []string{"a: want 15000 (int), got 15000 (float)", `b.c: want "x" (string), got "y" (string)`, "b.d: unexpected, got true (bool)", "l: want 2 elements, got 1"} {
		if !strings.Contains(joined, w) {
			t.Errorf("diff lacks %q:\n%s", w, joined)
		}
	}
	if Diff(want, want) != nil {
		t.Error("a value differs from itself")
	}
}

// failures lists the failures' messages.
func failures(failed []Failure) []string {
	var out []string
	for i := range failed {
		out = append(out, failed[i].Error())
	}
	return out
}
