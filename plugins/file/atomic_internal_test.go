package file

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// BenchmarkAtomicSinkFenceCheck: what fencing adds to each Write of the file-atomic sink: taking the lock,
// reading the position file back and checking it, releasing the lock.
func BenchmarkAtomicSinkFenceCheck(b *testing.B) {
	ctx := context.Background()
	s := &AtomicSink{}
	path := filepath.Join(b.TempDir(), "out.jsonl")
	if err := s.Open(ctx, sdk.OpenRequest{Settings: sdk.Settings{"path": path, "sync": false}, Fence: 1}); err != nil {
		b.Fatal(err)
	}
	defer s.Close(ctx)
	if err := s.Write(ctx, record.Batch{Position: record.Position("p1"), Records: []record.Record{{Payload: []byte(`{"a":1}`)}}}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.acquire(ctx, s.lock); err != nil {
			b.Fatal(err)
		}
		if err := s.check(); err != nil {
			b.Fatal(err)
		}
		if err := unlock(s.lock); err != nil {
			b.Fatal(err)
		}
	}
}
