package codec

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

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
  "blob": {"$binary": {"base64": "AQID", "subType": "00"}},
  "tags": ["vip", "eu"], "address": {"city": "Lyon", "zip": "69001"}
 }
}`

// diff describes the first difference between two decoded values, or returns nil when they are the same
// value of the same type (dates as instants, NaN equal to NaN, Decimals by value).
func diff(want, got any) []string {
	if d := firstDiff("", want, got); d != "" {
		return []string{d}
	}
	return nil
}

func firstDiff(path string, want, got any) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok || len(g) != len(w) {
			return fmt.Sprintf("%s: want %v, got %v", path, want, got)
		}
		for k, v := range w {
			if d := firstDiff(path+"."+k, v, g[k]); d != "" {
				return d
			}
		}
		return ""
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Sprintf("%s: want %v, got %v", path, want, got)
		}
		for i := range w {
			if d := firstDiff(fmt.Sprintf("%s[%d]", path, i), w[i], g[i]); d != "" {
				return d
			}
		}
		return ""
	case time.Time:
		if g, ok := got.(time.Time); ok && g.Equal(w) {
			return ""
		}
	case float64:
		if g, ok := got.(float64); ok && (g == w || math.IsNaN(g) && math.IsNaN(w)) {
			return ""
		}
	case Decimal:
		if g, ok := got.(Decimal); ok && (g == w || g.String() == w.String() || sameRat(g, w)) {
			return ""
		}
	default:
		if reflect.DeepEqual(want, got) {
			return ""
		}
	}
	return fmt.Sprintf("%s: want %#v, got %#v", path, want, got)
}

func sameRat(a, b Decimal) bool {
	x, y := a.Rat(), b.Rat()
	return x != nil && y != nil && x.Cmp(y) == 0
}

func mustDecimal(s string) Decimal {
	d, err := ParseDecimal(s)
	if err != nil {
		panic(err)
	}
	return d
}

func mustOID(s string) ObjectID {
	id, err := ParseObjectID(s)
	if err != nil {
		panic(err)
	}
	return id
}

// TestDecodeWrappers decodes each Extended JSON type in its canonical and relaxed forms, checks the Go
// value, and checks that MongoDB's own driver reads the same text to the same value (through BSON).
func TestDecodeWrappers(t *testing.T) {
	date := time.Date(2024, 1, 2, 3, 4, 5, 678e6, time.UTC)
	tests := []struct {
		name, json string
		want       any
	}{
		{"int", `1`, 1},
		{"negative int", `-42`, -42},
		{"int64 max", `9223372036854775807`, math.MaxInt64},
		{"beyond int64 is a float", `9223372036854775808`, 9223372036854775808.0},
		{"float", `1.5`, 1.5},
		{"float exponent", `1e3`, 1000.0},
		{"$numberInt", `{"$numberInt": "7"}`, 7},
		{"$numberLong", `{"$numberLong": "9007199254740993"}`, 9007199254740993},
		{"$numberDouble", `{"$numberDouble": "2.5"}`, 2.5},
		{"$numberDouble Infinity", `{"$numberDouble": "-Infinity"}`, math.Inf(-1)},
		{"$numberDecimal", `{"$numberDecimal": "19.99"}`, mustDecimal("19.99")},
		{"$oid", `{"$oid": "64f1a2b3c4d5e6f708192a3b"}`, mustOID("64f1a2b3c4d5e6f708192a3b")},
		{"$date relaxed", `{"$date": "2024-01-02T03:04:05.678Z"}`, date},
		{"$date offset", `{"$date": "2024-01-02T04:04:05.678+01:00"}`, date},
		{"$date canonical", `{"$date": {"$numberLong": "1704164645678"}}`, date},
		{"$date before 1970", `{"$date": {"$numberLong": "-1000"}}`, time.UnixMilli(-1000).UTC()},
		{"$binary", `{"$binary": {"base64": "AQID", "subType": "00"}}`, Binary{Data: []byte{1, 2, 3}}},
		{"$binary legacy", `{"$binary": "AQID", "$type": "05"}`, Binary{Subtype: 5, Data: []byte{1, 2, 3}}},
		{"$uuid", `{"$uuid": "00112233-4455-6677-8899-aabbccddeeff"}`, Binary{Subtype: 4, Data: []byte{0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}}},
		{"$timestamp", `{"$timestamp": {"t": 1700000000, "i": 3}}`, Timestamp{T: 1700000000, I: 3}},
		{"$regularExpression", `{"$regularExpression": {"pattern": "^a", "options": "i"}}`, Regex{Pattern: "^a", Options: "i"}},
		{"$minKey", `{"$minKey": 1}`, MinKey{}},
		{"$maxKey", `{"$maxKey": 1}`, MaxKey{}},
		{"not a wrapper: bad $oid", `{"$oid": 5}`, map[string]any{"$oid": 5}},
		{"not a wrapper: operator", `{"$set": {"a": 1}}`, map[string]any{"$set": map[string]any{"a": 1}}},
		{"escapes", `"a\"b\\c\n\u00e9\ud83d\ude00"`, "a\"b\\c\né😀"},
		{"lone surrogate", `"\ud83d"`, "\ufffd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := `{"v": ` + tt.json + `}`
			got, err := DecodeJSON([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			if d := diff(map[string]any{"v": tt.want}, got); d != nil {
				t.Fatalf("DecodeJSON(%s): %v", doc, d)
			}
			// Round trips: relaxed, canonical and BSON give the same value back.
			for _, enc := range []func([]byte, map[string]any) ([]byte, error){EncodeJSON, EncodeCanonicalJSON} {
				b, err := enc(nil, got)
				if err != nil {
					t.Fatal(err)
				}
				back, err := DecodeJSON(b)
				if err != nil {
					t.Fatalf("%s: %v", b, err)
				}
				if d := diff(got, back); d != nil {
					t.Fatalf("round trip through %s: %v", b, d)
				}
			}
			raw, err := EncodeBSON(nil, got)
			if err != nil {
				t.Fatal(err)
			}
			back, err := DecodeBSON(raw)
			if err != nil {
				t.Fatal(err)
			}
			if d := diff(got, back); d != nil {
				t.Fatalf("round trip through BSON: %v", d)
			}
			// The driver's reading of the same text agrees (wrappers it knows, in canonical mode).
			if strings.Contains(tt.name, "not a wrapper") || strings.Contains(tt.name, "beyond") {
				return
			}
			var drv bson.Raw
			if err := bson.UnmarshalExtJSON([]byte(doc), false, &drv); err != nil {
				t.Fatalf("driver: %v", err)
			}
			fromDriver, err := DecodeBSON(drv)
			if err != nil {
				t.Fatal(err)
			}
			if d := diff(fromDriver, got); d != nil {
				t.Fatalf("the driver reads %s differently: %v", doc, d)
			}
		})
	}
}

func TestEncodeJSON(t *testing.T) {
	doc := map[string]any{
		"b": 1.0, "a": 1, "c": []any{"x\ty", nil, true}, "d": time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
		"e": math.NaN(), "f": mustOID("64f1a2b3c4d5e6f708192a3b"), "g": "bad \xff utf8", "h": map[string]string{"k": "v"},
		"i": int64(5), "j": time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	got, err := EncodeJSON(nil, doc)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"a":1,"b":1.0,"c":["x\ty",null,true],"d":{"$date":"2024-01-02T03:04:05.000Z"},"e":{"$numberDouble":"NaN"},` +
		`"f":{"$oid":"64f1a2b3c4d5e6f708192a3b"},"g":"bad \ufffd utf8","h":{"k":"v"},"i":5,"j":{"$date":{"$numberLong":"253402300800000"}}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if !json.Valid(got) {
		t.Fatal("not valid JSON")
	}
	if _, err := EncodeJSON(nil, map[string]any{"f": func() {}}); err == nil || !strings.Contains(err.Error(), "func()") {
		t.Fatalf("err = %v, want one naming the type", err)
	}
	deep := map[string]any{}
	for cur, i := deep, 0; i < maxDepth+5; i++ {
		next := map[string]any{}
		cur["x"] = next
		cur = next
	}
	if _, err := EncodeJSON(nil, deep); err == nil {
		t.Fatal("no error for a document nested too deep")
	}
}

func TestDecodeJSONErrors(t *testing.T) {
	for _, in := range []string{``, `[]`, `{"a": 1`, `{"a": 1} x`, `{"a" 1}`, `{"a": tru}`, `{"a": "x`, `{"a": 01.}`,
		`{"a": "\x01"}`, `{"a": "\q"}`, `{"$oid": "64f1a2b3c4d5e6f708192a3b"}`, strings.Repeat(`{"a":`, 300) + `1` + strings.Repeat(`}`, 300)} {
		if _, err := DecodeJSON([]byte(in)); err == nil {
			t.Errorf("DecodeJSON(%.40q) succeeded", in)
		} else if !strings.Contains(err.Error(), "byte") {
			t.Errorf("error %q names no offset", err)
		}
	}
}

// FuzzDecodeJSON: no input panics; whatever decodes encodes and decodes back to the same value; plain JSON
// decodes to what encoding/json reads.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"a": [1, 2.5, "x", null, true, {"b": {}}]}`, event,
		`{"d": {"$date": {"$numberLong": "-5"}}, "x": {"$numberDecimal": "NaN"}}`, `{"s": "\u00e9\ud800"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := DecodeJSON(data)
		if err != nil {
			return
		}
		for _, enc := range []func([]byte, map[string]any) ([]byte, error){EncodeJSON, EncodeCanonicalJSON} {
			b, err := enc(nil, doc)
			if err != nil {
				t.Fatalf("encoding a decoded document: %v", err)
			}
			back, err := DecodeJSON(b)
			if err != nil {
				t.Fatalf("decoding %s: %v", b, err)
			}
			if d := diff(doc, back); d != nil {
				t.Fatalf("not a fixed point: %v\n%s", d, b)
			}
		}
		if strings.Contains(string(data), "$") {
			return
		}
		var std map[string]any
		if err := json.Unmarshal(data, &std); err != nil {
			return // we accept a little more (invalid UTF-8); never less
		}
		if !sameAsStd(std, doc) {
			t.Fatalf("encoding/json reads %v, DecodeJSON %v", std, doc)
		}
	})
}

// sameAsStd compares encoding/json's reading (numbers as float64) with ours.
func sameAsStd(std, ours any) bool {
	switch s := std.(type) {
	case map[string]any:
		o, ok := ours.(map[string]any)
		if !ok || len(o) != len(s) {
			return false
		}
		for k, v := range s {
			if !sameAsStd(v, o[k]) {
				return false
			}
		}
		return true
	case []any:
		o, ok := ours.([]any)
		if !ok || len(o) != len(s) {
			return false
		}
		for i := range s {
			if !sameAsStd(s[i], o[i]) {
				return false
			}
		}
		return true
	case float64:
		switch o := ours.(type) {
		case int:
			return float64(o) == s
		case float64:
			return o == s
		}
		return false
	}
	return std == ours
}

func FuzzDecodeBSON(f *testing.F) {
	doc, _ := DecodeJSON([]byte(event))
	b, _ := EncodeBSON(nil, doc)
	f.Add(b)
	f.Add([]byte{5, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := DecodeBSON(data)
		if err != nil {
			return
		}
		b, err := EncodeBSON(nil, doc)
		if err != nil {
			t.Fatalf("encoding a decoded document: %v", err)
		}
		back, err := DecodeBSON(b)
		if err != nil {
			t.Fatal(err)
		}
		if d := diff(doc, back); d != nil {
			t.Fatalf("not a fixed point: %v", d)
		}
	})
}
