package record

import (
	"bytes"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
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

func TestTimeRoundTrip(t *testing.T) {
	now := time.Now()
	recs := []Record{
		{Position: Position("p1"), Op: OpInsert, Time: now, Meta: Meta{{"mongodb.db", "shop"}}},
		{Position: Position("p2"), Op: OpHeartbeat, Time: time.Unix(1700000000, 0)},
		{Position: Position("p3"), Time: time.Date(1900, 1, 2, 3, 4, 5, 6, time.UTC)}, // before 1970: negative
		{Position: Position("p4"), Time: time.Unix(0, 0)},
		{Position: Position("p5")}, // no time
	}
	data := Encode(nil, recs)
	size := 0
	for i := range recs {
		size += EncodedSize(&recs[i])
	}
	if len(data) != size {
		t.Fatalf("encoded %d bytes, EncodedSize says %d", len(data), size)
	}
	got, err := Decode(nil, data, len(recs))
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		if !got[i].Time.Equal(recs[i].Time) || got[i].Time.IsZero() != recs[i].Time.IsZero() {
			t.Errorf("record %d: time %v, want %v", i, got[i].Time, recs[i].Time)
		}
		if _, ok := got[i].Meta.Get(MetaTime); ok {
			t.Errorf("record %d: %s left in Meta: %v", i, MetaTime, got[i].Meta)
		}
		if len(got[i].Meta) != len(recs[i].Meta) {
			t.Errorf("record %d: meta %v, want %v", i, got[i].Meta, recs[i].Meta)
		}
	}
}

func TestTimeOutOfRangeIsDropped(t *testing.T) {
	for _, tm := range []time.Time{time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)} {
		r := Record{Position: Position("p"), Time: tm}
		plain := Record{Position: Position("p")}
		if !bytes.Equal(Encode(nil, []Record{r}), Encode(nil, []Record{plain})) {
			t.Errorf("%v: encoded, want it dropped", tm)
		}
	}
}

// A record's time is, on the wire, a metadata entry that a decoder built before Time existed reads as
// such: the bytes are exactly those of the record with that entry first in Meta.
func TestTimeIsMetadataOnTheWire(t *testing.T) {
	tm := time.Date(2026, 11, 30, 12, 0, 0, 123456789, time.UTC)
	withTime := Record{Position: Position("p"), Op: OpUpdate, Key: []byte("k"), Time: tm, Meta: Meta{{"a", "b"}}, Payload: []byte("{}")}
	asMeta := withTime
	asMeta.Time = time.Time{}
	asMeta.Meta = Meta{{MetaTime, strconv.FormatInt(tm.UnixNano(), 10)}, {"a", "b"}}
	if a, b := Encode(nil, []Record{withTime}), Encode(nil, []Record{asMeta}); !bytes.Equal(a, b) {
		t.Fatalf("the time is not encoded as a metadata entry:\n%q\n%q", a, b)
	}
	// And the other way: a record an older plugin passed on with the entry in Meta decodes to Time.
	got, err := Decode(nil, Encode(nil, []Record{asMeta}), 1)
	if err != nil {
		t.Fatal(err)
	}
	if !got[0].Time.Equal(tm) || len(got[0].Meta) != 1 {
		t.Fatalf("decoded time %v meta %v", got[0].Time, got[0].Meta)
	}
	// An entry that is not a time stays metadata.
	odd := Record{Position: Position("p"), Meta: Meta{{MetaTime, "yesterday"}}}
	if got, err = Decode(nil, Encode(nil, []Record{odd}), 1); err != nil || !got[0].Time.IsZero() || len(got[0].Meta) != 1 {
		t.Fatalf("decoded %+v, %v", got, err)
	}
}

func TestDecodeTimeAllocatesNothingMore(t *testing.T) {
	data := Encode(nil, []Record{{Position: Position("p"), Time: time.Now(), Meta: Meta{{"mongodb.db", "shop"}}}})
	allocs := testing.AllocsPerRun(100, func() {
		var dst [1]Record
		if _, err := Decode(dst[:0], data, 1); err != nil {
			t.Fatal(err)
		}
	})
	// As without a time: the metadata slice and the value string.
	if allocs > 2 {
		t.Fatalf("Decode allocated %v times per run, want at most 2", allocs)
	}
}

func TestParseNanos(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"0", true}, {"-1", true}, {"9223372036854775807", true}, {"-9223372036854775808", true},
		{"9223372036854775808", false}, {"-9223372036854775809", false}, {"", false}, {"-", false},
		{"12a", false}, {"+5", false}, {"12345678901234567890", false},
	} {
		n, ok := parseNanos([]byte(tt.in))
		if ok != tt.ok {
			t.Errorf("parseNanos(%q) ok = %v, want %v", tt.in, ok, tt.ok)
			continue
		}
		if ok {
			if want, _ := strconv.ParseInt(tt.in, 10, 64); n != want {
				t.Errorf("parseNanos(%q) = %d, want %d", tt.in, n, want)
			}
			if decimalLen(n) != len(strconv.FormatInt(n, 10)) {
				t.Errorf("decimalLen(%d) = %d", n, decimalLen(n))
			}
		}
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
	f.Add(Encode(nil, []Record{{Position: Position("p"), Time: time.Unix(1, 2), Meta: Meta{{MetaTime, "x"}}}}), 1)
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

func TestScan(t *testing.T) {
	recs := sample()
	recs[0].Time = time.Unix(0, 1700000000123456789)
	data := Encode(nil, recs)
	var rebuilt []byte
	n := 0
	err := Scan(data, len(recs), func(i int, pos, key, raw []byte) {
		if i != n || !bytes.Equal(pos, recs[i].Position) || !bytes.Equal(key, recs[i].Key) {
			t.Errorf("record %d: index %d position %q key %q; want %q %q", n, i, pos, key, recs[i].Position, recs[i].Key)
		}
		// Each record's encoding stands alone: decoded by itself, it is the record.
		one, err := Decode(nil, raw, 1)
		if err != nil || len(one) != 1 || !bytes.Equal(one[0].Payload, recs[i].Payload) || !one[0].Time.Equal(recs[i].Time) {
			t.Errorf("record %d's encoding decodes to %+v, %v", i, one, err)
		}
		rebuilt = append(rebuilt, raw...)
		n++
	})
	if err != nil || n != len(recs) || !bytes.Equal(rebuilt, data) {
		t.Fatalf("Scan: %v after %d records; the encodings joined equal the batch: %v", err, n, bytes.Equal(rebuilt, data))
	}
	good := Encode(nil, sample()[:2])
	for _, tt := range []struct {
		name  string
		data  []byte
		count int
	}{
		{"truncated", good[:len(good)-1], 2},
		{"trailing bytes", append(append([]byte(nil), good...), 0), 2},
		{"too many records", good, 3},
		{"negative count", good, -1},
		{"length past end", []byte{1, 0, 5, 'a'}, 1},
	} {
		if err := Scan(tt.data, tt.count, func(int, []byte, []byte, []byte) {}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Scan = %v, want ErrCorrupt", tt.name, err)
		}
	}
}
