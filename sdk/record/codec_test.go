package record

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func sample() []Record {
	return []Record{
		{Position: Position("p1"), Op: OpInsert, Key: []byte("k1"), Payload: []byte(`{"seq":1}`), Encoding: EncodingJSON},
		{Position: Position("p2"), Op: OpDelete, Meta: Meta{{"mongodb.db", "shop"}, {"custom", "v"}}},
		{Position: Position("p3"), Op: OpHeartbeat},
		{Position: Position(strings.Repeat("x", 300)), Op: OpOther, Key: bytes.Repeat([]byte{0}, 200),
			Payload: bytes.Repeat([]byte{0xff}, 70000), Encoding: EncodingBSON, Meta: Meta{{"", ""}}},
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		recs []Record
	}{
		{"empty", nil},
		{"one", sample()[:1]},
		{"mixed", sample()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := Encode(nil, tt.recs)
			want := 0
			for i := range tt.recs {
				want += EncodedSize(&tt.recs[i])
			}
			if len(data) != want {
				t.Fatalf("encoded %d bytes, EncodedSize says %d", len(data), want)
			}
			got, err := Decode(nil, data, len(tt.recs))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.recs) {
				t.Fatalf("decoded %d records, want %d", len(got), len(tt.recs))
			}
			for i := range got {
				if !reflect.DeepEqual(normal(got[i]), normal(tt.recs[i])) {
					t.Errorf("record %d: got %+v, want %+v", i, got[i], tt.recs[i])
				}
			}
		})
	}
}

// normal maps empty slices to nil so that DeepEqual compares content.
func normal(r Record) Record {
	if len(r.Key) == 0 {
		r.Key = nil
	}
	if len(r.Payload) == 0 {
		r.Payload = nil
	}
	if len(r.Position) == 0 {
		r.Position = nil
	}
	if len(r.Meta) == 0 {
		r.Meta = nil
	}
	return r
}

func TestDecodeRejects(t *testing.T) {
	good := Encode(nil, sample()[:2])
	tests := []struct {
		name  string
		data  []byte
		count int
	}{
		{"truncated", good[:len(good)-1], 2},
		{"trailing bytes", append(append([]byte(nil), good...), 0), 2},
		{"too many records", good, 3},
		{"huge count", good, 1 << 40},
		{"negative count", good, -1},
		{"bad op", []byte{200, 0, 0, 0, 0, 0}, 1},
		{"bad encoding", []byte{1, 9, 0, 0, 0, 0}, 1},
		{"length past end", []byte{1, 0, 5, 'a'}, 1},
		{"bad varint", []byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(nil, tt.data, tt.count)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestDecodeInternsCommonKeys(t *testing.T) {
	data := Encode(nil, []Record{{Position: Position("p"), Meta: Meta{{"mongodb.db", "shop"}}}})
	allocs := testing.AllocsPerRun(100, func() {
		var dst [1]Record
		if _, err := Decode(dst[:0], data, 1); err != nil {
			t.Fatal(err)
		}
	})
	// One allocation for the metadata slice and one for the value string; the key is shared.
	if allocs > 2 {
		t.Fatalf("Decode allocated %v times per run, want at most 2", allocs)
	}
}

func TestMeta(t *testing.T) {
	var m Meta
	m = m.Set("a", "1").Set("b", "2").Set("a", "3")
	if v, _ := m.Get("a"); v != "3" || len(m) != 2 {
		t.Fatalf("after Set: %v", m)
	}
	m = m.Delete("a")
	if _, ok := m.Get("a"); ok || len(m) != 1 {
		t.Fatalf("after Delete: %v", m)
	}
}

func TestOpNames(t *testing.T) {
	for o := OpUnknown; o < opCount; o++ {
		got, ok := ParseOp(o.String())
		if !ok || got != o {
			t.Errorf("ParseOp(%q) = %v, %v", o.String(), got, ok)
		}
	}
	if _, ok := ParseOp("nope"); ok {
		t.Error("ParseOp accepted an unknown name")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode(nil, sample()), 4)
	f.Add([]byte{}, 0)
	f.Add([]byte{1, 0, 0, 0, 0, 0}, 1)
	f.Fuzz(func(t *testing.T, data []byte, count int) {
		recs, err := Decode(nil, data, count)
		if err != nil {
			return
		}
		// Whatever decodes must survive a round trip unchanged.
		again, err := Decode(nil, Encode(nil, recs), len(recs))
		if err != nil {
			t.Fatalf("re-decoding failed: %v", err)
		}
		for i := range recs {
			if !reflect.DeepEqual(normal(again[i]), normal(recs[i])) {
				t.Fatalf("record %d differs after a round trip: %+v vs %+v", i, again[i], recs[i])
			}
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	recs := make([]Record, 1024)
	for i := range recs {
		recs[i] = Record{Position: make([]byte, 40), Key: make([]byte, 10), Payload: make([]byte, 200), Encoding: EncodingJSON, Op: OpInsert}
	}
	data := Encode(nil, recs)
	dst := make([]Record, 0, 1024)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = Decode(dst[:0], data, 1024); err != nil {
			b.Fatal(err)
		}
	}
}
