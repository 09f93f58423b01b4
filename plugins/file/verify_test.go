package file_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/plugins/file"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// collect runs a Verify and returns copies of what it emitted.
func collect(t *testing.T, v sdk.Verifier, req sdk.VerifyRequest) ([]record.Record, sdk.VerifyResult, error) {
	t.Helper()
	var out []record.Record
	res, err := v.Verify(context.Background(), req, func(recs []record.Record) error {
		for _, r := range recs {
			r.Position = append(record.Position(nil), r.Position...)
			r.Payload = append([]byte(nil), r.Payload...)
			r.Key = append([]byte(nil), r.Key...)
			out = append(out, r)
		}
		return nil
	})
	return out, res, err
}

func TestSourceVerify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(path, []byte("{\"n\":1}\n\n{\"n\":2}\r\n{\"n\":3}"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, follow := range []bool{false, true} {
		recs, res, err := collect(t, &file.Source{}, sdk.VerifyRequest{Settings: sdk.Settings{"path": path, "follow": follow}})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{`{"n":1}`, `{"n":2}`, `{"n":3}`}
		end := uint64(len("{\"n\":1}\n\n{\"n\":2}\r\n{\"n\":3}"))
		if follow { // the last line has no newline yet: Read would not return it
			want, end = want[:2], uint64(len("{\"n\":1}\n\n{\"n\":2}\r\n"))
		}
		if len(recs) != len(want) {
			t.Fatalf("follow %v: %d records, want %d", follow, len(recs), len(want))
		}
		for i, r := range recs {
			if string(r.Payload) != want[i] || r.Op != record.OpSnapshot || r.Encoding != record.EncodingJSON {
				t.Fatalf("follow %v: record %d = %+v", follow, i, r)
			}
		}
		if got := binary.BigEndian.Uint64(res.Position); got != end {
			t.Fatalf("follow %v: position %d, want %d", follow, got, end)
		}
	}
	_, _, err := collect(t, &file.Source{}, sdk.VerifyRequest{Settings: sdk.Settings{"path": filepath.Join(t.TempDir(), "none")}})
	if err == nil {
		t.Fatal("a missing source file verified")
	}
}

// TestSourceVerifyChunks: a file of several emit chunks gives every line's record, each with the position
// Read gives it (the offset after its line), however the chunks reuse their memory.
func TestSourceVerifyChunks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in.jsonl")
	var b strings.Builder
	var ends []uint64
	for i := range 2500 {
		fmt.Fprintf(&b, "{\"n\":%d}\n", i)
		ends = append(ends, uint64(b.Len()))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	recs, res, err := collect(t, &file.Source{}, sdk.VerifyRequest{Settings: sdk.Settings{"path": path}})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(ends) {
		t.Fatalf("%d records, want %d", len(recs), len(ends))
	}
	for i, r := range recs {
		if got := binary.BigEndian.Uint64(r.Position); got != ends[i] || string(r.Payload) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("record %d: position %d payload %s, want %d {\"n\":%d}", i, got, r.Payload, ends[i], i)
		}
	}
	if got := binary.BigEndian.Uint64(res.Position); got != ends[len(ends)-1] {
		t.Fatalf("result position %d, want %d", got, ends[len(ends)-1])
	}
}

func TestSinkVerify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	lines := []string{
		`{"position":"AQ==","op":"insert","key":"a","encoding":"json","payload":{"v":1}}`,
		`{"position":"Ag==","op":"insert","key":"b","meta":{"sluice.route":"r1"},"encoding":"json","payload":{"v":2}}`,
		`{"position":"Aw==","op":"update","key":"a","encoding":"json","payload":{"v":3}}`,
		`{"position":"BA==","op":"delete","key":"b","meta":{"sluice.route":"r1"},"encoding":"json"}`,
		`{"position":"BQ==","op":"insert","key_b64":"/wA=","encoding":"raw","payload":"/wAK"}`,
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n{\"torn"), 0o644); err != nil {
		t.Fatal(err)
	}
	settings := sdk.Settings{"path": path, "format": "record"}
	recs, res, err := collect(t, &file.Sink{}, sdk.VerifyRequest{Settings: settings})
	if err != nil {
		t.Fatal(err)
	}
	if res.Destination != path || res.Position != nil {
		t.Fatalf("result %+v", res)
	}
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3 (one per key): %+v", len(recs), recs)
	}
	if r := recs[0]; string(r.Key) != "a" || string(r.Payload) != `{"v":3}` || r.Op != record.OpUpdate {
		t.Fatalf("key a: %+v", r)
	}
	if r := recs[1]; string(r.Key) != "b" || r.Op != record.OpDelete || r.Payload != nil {
		t.Fatalf("key b: %+v", r)
	} else if route, _ := r.Meta.Get(record.MetaRoute); route != "r1" {
		t.Fatalf("key b has route %q", route)
	}
	if r := recs[2]; string(r.Key) != "\xff\x00" || string(r.Payload) != "\xff\x00\n" || r.Encoding != record.EncodingRaw {
		t.Fatalf("binary key: %+v", r)
	}
	recs, _, err = collect(t, &file.Sink{}, sdk.VerifyRequest{Settings: settings, Keys: [][]byte{[]byte("b"), []byte("zz")}})
	if err != nil || len(recs) != 1 || string(recs[0].Key) != "b" {
		t.Fatalf("restricted to key b: %v %+v", err, recs)
	}

	// format payload stores no keys.
	_, _, err = collect(t, &file.Sink{}, sdk.VerifyRequest{Settings: sdk.Settings{"path": path}})
	if !errors.Is(err, sdk.ErrInvalidSettings) || !strings.Contains(err.Error(), "format") {
		t.Fatalf("format payload: %v", err)
	}
	// A line that is not an envelope is named.
	if err := os.WriteFile(path, []byte(lines[0]+"\n{\"a\":1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err = collect(t, &file.Sink{}, sdk.VerifyRequest{Settings: settings}); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("a payload line: %v", err)
	}
}

// TestAtomicSinkVerify: lines after the stored length are not the sink's (Open cuts them off), and the
// stored position is the result's.
func TestAtomicSinkVerify(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "out.jsonl")
	settings := sdk.Settings{"path": path, "format": "record", "sync": false}
	s := &file.AtomicSink{}
	if err := s.Open(ctx, sdk.OpenRequest{Settings: settings}); err != nil {
		t.Fatal(err)
	}
	err := s.Write(ctx, record.Batch{Position: record.Position("p1"), Records: []record.Record{
		{Position: record.Position("p1"), Op: record.OpInsert, Key: []byte("k"), Payload: []byte(`{"v":1}`), Encoding: record.EncodingJSON},
	}})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close(ctx)
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	_, _ = f.WriteString(`{"position":"AQ==","op":"insert","key":"k","encoding":"json","payload":{"v":2}}` + "\n")
	f.Close()
	recs, res, err := collect(t, &file.AtomicSink{}, sdk.VerifyRequest{Settings: settings})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || string(recs[0].Payload) != `{"v":1}` || string(res.Position) != "p1" {
		t.Fatalf("records %+v, position %q", recs, res.Position)
	}
}
