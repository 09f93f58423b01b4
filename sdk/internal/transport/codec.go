package transport

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/sluicehq/sluice/sdk/proto/sluicev1"
)

// batchCodec is the gRPC codec on plugin connections. Batch messages, which carry the records, are
// written and read with protowire directly: on the way out the record data is handed to gRPC as it is,
// not copied into a marshalling buffer; on the way in it is copied once out of gRPC's frame buffers and the
// message's fields alias that copy, instead of being copied twice (materialise, then unmarshal). The bytes
// on the wire are ordinary protobuf: a peer using a generated decoder reads them unchanged. Every other
// message goes through gRPC's standard protobuf codec.
type batchCodec struct{}

var standardCodec = encoding.GetCodecV2(proto.Name)

// Name is the standard codec's name: the content type on the wire does not change.
func (batchCodec) Name() string { return proto.Name }

// Field numbers of sluice.v1.Batch.
const (
	batchSeq      = 1
	batchCount    = 2
	batchPosition = 3
	batchData     = 4
	batchTime     = 5
)

func (batchCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*sluicev1.Batch)
	if !ok {
		return standardCodec.Marshal(v)
	}
	head := make([]byte, 0, 32+len(b.Position))
	if b.Seq != 0 {
		head = protowire.AppendTag(head, batchSeq, protowire.VarintType)
		head = protowire.AppendVarint(head, b.Seq)
	}
	if b.Count != 0 {
		head = protowire.AppendTag(head, batchCount, protowire.VarintType)
		head = protowire.AppendVarint(head, uint64(b.Count))
	}
	if len(b.Position) > 0 {
		head = protowire.AppendTag(head, batchPosition, protowire.BytesType)
		head = protowire.AppendBytes(head, b.Position)
	}
	// Fields in number order, as protobuf writes them: the time, field 5, follows the data.
	appendTime := func(buf []byte) []byte {
		buf = protowire.AppendTag(buf, batchTime, protowire.VarintType)
		return protowire.AppendVarint(buf, uint64(b.EventTimeUnixNano))
	}
	if len(b.Data) == 0 {
		if b.EventTimeUnixNano != 0 {
			head = appendTime(head)
		}
		return mem.BufferSlice{mem.SliceBuffer(head)}, nil
	}
	head = protowire.AppendTag(head, batchData, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(len(b.Data)))
	if b.EventTimeUnixNano != 0 {
		return mem.BufferSlice{mem.SliceBuffer(head), mem.SliceBuffer(b.Data), mem.SliceBuffer(appendTime(nil))}, nil
	}
	return mem.BufferSlice{mem.SliceBuffer(head), mem.SliceBuffer(b.Data)}, nil
}

func (batchCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*sluicev1.Batch)
	if !ok {
		return standardCodec.Unmarshal(data, v)
	}
	buf := data.Materialize() // the one copy: data is freed when Unmarshal returns
	b.Reset()
	for len(buf) > 0 {
		num, typ, n := protowire.ConsumeTag(buf)
		if n < 0 {
			return fmt.Errorf("sluice batch: %w", protowire.ParseError(n))
		}
		buf = buf[n:]
		switch {
		case num == batchSeq && typ == protowire.VarintType:
			b.Seq, n = protowire.ConsumeVarint(buf)
		case num == batchCount && typ == protowire.VarintType:
			var c uint64
			c, n = protowire.ConsumeVarint(buf)
			b.Count = uint32(c)
		case num == batchPosition && typ == protowire.BytesType:
			b.Position, n = protowire.ConsumeBytes(buf)
		case num == batchData && typ == protowire.BytesType:
			b.Data, n = protowire.ConsumeBytes(buf)
		case num == batchTime && typ == protowire.VarintType:
			var t uint64
			t, n = protowire.ConsumeVarint(buf)
			b.EventTimeUnixNano = int64(t)
		default:
			n = protowire.ConsumeFieldValue(num, typ, buf)
		}
		if n < 0 {
			return fmt.Errorf("sluice batch: field %d: %w", num, protowire.ParseError(n))
		}
		buf = buf[n:]
	}
	return nil
}
