package transport

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/sdk/proto/sluicev1"
)

// The batch codec must produce and accept exactly what generated protobuf code does.
func TestBatchCodecMatchesProtobuf(t *testing.T) {
	for _, b := range []*sluicev1.Batch{
		{},
		{Seq: 1},
		{Seq: 7, Count: 3, Position: []byte("pos"), Data: bytes.Repeat([]byte{1, 2, 3}, 40000)},
		{Count: 1, Data: []byte{0}},
		{Seq: 2, Count: 1, Data: []byte{0}, EventTimeUnixNano: 1764500000123456789},
		{Seq: 3, EventTimeUnixNano: -5},
	} {
		out, err := batchCodec{}.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		ours := out.Materialize()
		theirs, err := proto.MarshalOptions{Deterministic: true}.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ours, theirs) {
			t.Fatalf("marshal of %v differs from protobuf's", b)
		}
		// Split the input across buffers, as gRPC's frames do.
		var in mem.BufferSlice
		for rest := theirs; len(rest) > 0; {
			n := min(len(rest), 1000)
			in = append(in, mem.SliceBuffer(rest[:n]))
			rest = rest[n:]
		}
		got := &sluicev1.Batch{}
		if err := (batchCodec{}).Unmarshal(in, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, b) {
			t.Fatalf("unmarshal: got %v, want %v", got, b)
		}
	}
}

func TestBatchCodecSkipsUnknownFieldsAndRejectsGarbage(t *testing.T) {
	withUnknown := append([]byte{0x08, 0x05}, 0x78, 0x01) // seq=5, then field 15 varint 1
	got := &sluicev1.Batch{}
	if err := (batchCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(withUnknown)}, got); err != nil || got.Seq != 5 {
		t.Fatalf("unknown field: %v, %v", got, err)
	}
	for _, bad := range [][]byte{{0x22, 0x05, 1}, {0x08}, {0xff}} {
		if err := (batchCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, &sluicev1.Batch{}); err == nil {
			t.Errorf("accepted %x", bad)
		}
	}
	// Other messages take the standard path.
	ack := &sluicev1.Ack{Seq: 9}
	out, err := batchCodec{}.Marshal(ack)
	if err != nil {
		t.Fatal(err)
	}
	back := &sluicev1.Ack{}
	if err := (batchCodec{}).Unmarshal(out, back); err != nil || back.Seq != 9 {
		t.Fatalf("ack round trip: %v, %v", back, err)
	}
}

func FuzzBatchCodec(f *testing.F) {
	f.Add([]byte{0x08, 0x01, 0x10, 0x02, 0x1a, 0x01, 'p', 0x22, 0x02, 1, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		ours := &sluicev1.Batch{}
		errOurs := batchCodec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, ours)
		theirs := &sluicev1.Batch{}
		errTheirs := proto.Unmarshal(data, theirs)
		if errOurs == nil && errTheirs == nil {
			// Compare the known fields only: protobuf keeps unknown fields, the codec skips them.
			theirs.ProtoReflect().SetUnknown(nil)
			if !proto.Equal(ours, theirs) {
				t.Fatalf("decoders disagree: %v vs %v", ours, theirs)
			}
		}
		if errOurs != nil && errTheirs == nil {
			t.Fatalf("codec rejected what protobuf accepts: %v", errOurs)
		}
	})
}
