package file_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/sluicehq/sluice/plugins/file"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/sdk/sdktest"
)

func TestAtomicSinkAcceptance(t *testing.T) {
	bin, remove, err := sdktest.Build("./cmd/file-atomic")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove)
	sdktest.Sink(t, file.AtomicPlugin(), sdktest.SinkConfig{
		Settings: func(t *testing.T) map[string]any {
			return map[string]any{"path": filepath.Join(t.TempDir(), "out.jsonl"), "sync": false}
		},
		Verify: func(t *testing.T, settings map[string]any, written []record.Record) {
			lines := readLines(t, settings["path"].(string))
			if len(lines) != len(written) {
				t.Fatalf("%d lines for %d records", len(lines), len(written))
			}
			for i, r := range written {
				if lines[i] != string(r.Payload) {
					t.Fatalf("line %d = %q, want %q", i+1, lines[i], r.Payload)
				}
			}
		},
		Binary: bin,
	})
}

// TestAtomicSinkCutsUncommittedLines: lines appended after the last stored position (a crash between
// writing the lines and storing the position) are cut off on open, and Checkpoint returns the position.
func TestAtomicSinkCutsUncommittedLines(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "out.jsonl")
	open := func() *file.AtomicSink {
		s := &file.AtomicSink{}
		if err := s.Open(ctx, sdk.OpenRequest{Settings: sdk.Settings{"path": path, "sync": true}}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	pos := func(n uint64) record.Position { return binary.BigEndian.AppendUint64(nil, n) }
	s := open()
	if cp, _ := s.Checkpoint(ctx); cp != nil {
		t.Fatalf("new sink has checkpoint %x", []byte(cp))
	}
	for i := range 3 {
		b := record.Batch{Position: pos(uint64(i)), Records: []record.Record{{Payload: []byte(`{"n":` + strconv.Itoa(i) + `}`)}}}
		if err := s.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.Close(ctx)
	// Lines written without a stored position, and a torn line.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	_, _ = f.WriteString("{\"n\":3}\n{\"n\":4}\n{\"n\"")
	f.Close()
	s = open()
	defer s.Close(ctx)
	if cp, _ := s.Checkpoint(ctx); !cp.Equal(pos(2)) {
		t.Fatalf("checkpoint %x, want 2", []byte(cp))
	}
	if lines := readLines(t, path); len(lines) != 3 || lines[2] != `{"n":2}` {
		t.Fatalf("lines after reopening: %q", lines)
	}
}

func TestAtomicSinkRefusesForeignFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	if err := os.WriteFile(path, []byte("{\"a\":1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &file.AtomicSink{}
	err := s.Open(context.Background(), sdk.OpenRequest{Settings: sdk.Settings{"path": path}})
	if err == nil {
		t.Fatal("opened a file it did not write")
	}
	_ = s.Close(context.Background())
	if b, _ := os.ReadFile(path); string(b) != "{\"a\":1}\n" {
		t.Fatalf("the foreign file changed: %q", b)
	}
}

// BenchmarkAtomicSinkWrite: one Write of a batch of 100 records of about 100 bytes, with and without
// fsync, each committing its position.
func BenchmarkAtomicSinkWrite(b *testing.B) {
	for _, sync := range []bool{false, true} {
		b.Run("sync="+strconv.FormatBool(sync), func(b *testing.B) {
			ctx := context.Background()
			s := &file.AtomicSink{}
			path := filepath.Join(b.TempDir(), "out.jsonl")
			if err := s.Open(ctx, sdk.OpenRequest{Settings: sdk.Settings{"path": path, "sync": sync}, Fence: 1}); err != nil {
				b.Fatal(err)
			}
			defer s.Close(ctx)
			recs := make([]record.Record, 100)
			for i := range recs {
				recs[i].Payload = fmt.Appendf(nil, `{"seq":%d,"pad":"%080d"}`, i, i)
			}
			b.ReportAllocs()
			n := uint64(0)
			for b.Loop() {
				n++
				if err := s.Write(ctx, record.Batch{Position: binary.BigEndian.AppendUint64(nil, n), Records: recs}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The sinks of a pipeline's lanes (ordered: false) write files of their own: PATH for lane 0, PATH.lane-i
// for the others, each with its own position.
func TestAtomicSinkLanesWriteFilesOfTheirOwn(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "out.jsonl")
	for lane := range 3 {
		s := &file.AtomicSink{}
		if err := s.Open(ctx, sdk.OpenRequest{Settings: sdk.Settings{"path": path, "sync": false}, Lane: lane, Lanes: 3}); err != nil {
			t.Fatal(err)
		}
		b := record.Batch{Position: record.Position{byte(lane)}, Records: []record.Record{{Payload: []byte(`{"lane":` + strconv.Itoa(lane) + `}`)}}}
		if err := s.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
		_ = s.Close(ctx)
	}
	for lane := range 3 {
		p := path
		if lane > 0 {
			p += ".lane-" + strconv.Itoa(lane)
		}
		if lines := readLines(t, p); len(lines) != 1 || lines[0] != `{"lane":`+strconv.Itoa(lane)+`}` {
			t.Errorf("lane %d: %s holds %q", lane, p, lines)
		}
		s := &file.AtomicSink{}
		if err := s.Open(ctx, sdk.OpenRequest{Settings: sdk.Settings{"path": path}, Lane: lane, Lanes: 3}); err != nil {
			t.Fatal(err)
		}
		if cp, _ := s.Checkpoint(ctx); !cp.Equal(record.Position{byte(lane)}) {
			t.Errorf("lane %d: checkpoint %x, want its own", lane, []byte(cp))
		}
		_ = s.Close(ctx)
	}
}
