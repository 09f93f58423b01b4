// Package protocol is the host side of the sluice plugin protocol: it starts a plugin (as a subprocess, or
// in-process over an in-memory connection), reads its spec and drives its stages with batched streams. The
// host and tests see only Go types; the gRPC stubs stay inside.
package protocol

import (
	"time"

	"github.com/sluicehq/sluice/sdk/proto/sluicev1"
	"github.com/sluicehq/sluice/sdk/record"
)

// Batch is a batch of records as the host moves it: in wire form, decoded, or both. A batch read from one
// stage and handed unchanged to the next is never decoded or re-encoded; Records decodes on first use and
// Encoded encodes on first use.
//
// A Batch is not safe for concurrent use.
type Batch struct {
	// Seq numbers the batch on its stream: set by the stage that sent it, or by the stream on Send.
	Seq uint64
	// Position is the upstream position the batch accounts through (record.Batch.Position).
	Position record.Position
	// EventTime is the latest event time among the batch's records (record.Record.Time), as the stage that
	// sent it computed it; zero when none has one. Transform steps do not change it: records they drop
	// still count, as their positions do.
	EventTime time.Time

	count   int
	data    []byte // wire form; valid when encoded
	encoded bool
	records []record.Record // valid when decoded
	decoded bool
}

// NewBatch returns a batch holding recs, accounting through pos. It keeps recs; it does not copy them.
func NewBatch(recs []record.Record, pos record.Position) *Batch {
	return &Batch{Position: pos, count: len(recs), records: recs, decoded: true}
}

// NewEncodedBatch returns a batch of count records in wire form (record.Encode), accounting through pos. It
// keeps data; it does not copy it.
func NewEncodedBatch(data []byte, count int, pos record.Position) *Batch {
	return &Batch{Position: pos, count: count, data: data, encoded: true}
}

func batchFromWire(b *sluicev1.Batch) *Batch {
	out := &Batch{Seq: b.GetSeq(), Position: b.GetPosition(), count: int(b.GetCount()), data: b.GetData(), encoded: true}
	if ns := b.GetEventTimeUnixNano(); ns != 0 {
		out.EventTime = time.Unix(0, ns)
	}
	return out
}

// Len returns the number of records in the batch.
func (b *Batch) Len() int { return b.count }

// Records returns the batch's records, decoding them on first use. The records alias the batch's wire
// data.
func (b *Batch) Records() ([]record.Record, error) {
	if !b.decoded {
		recs, err := record.Decode(nil, b.data, b.count)
		if err != nil {
			return nil, err
		}
		b.records, b.decoded = recs, true
	}
	return b.records, nil
}

// SetRecords replaces the batch's records (after a transform) and drops its wire form.
func (b *Batch) SetRecords(recs []record.Record) {
	b.records, b.decoded, b.count = recs, true, len(recs)
	b.data, b.encoded = nil, false
}

// Encoded returns the batch's wire form, encoding the records on first use.
func (b *Batch) Encoded() []byte {
	if !b.encoded {
		b.data = record.Encode(nil, b.records)
		b.encoded = true
	}
	return b.data
}

// Size returns the size of the batch's wire form, for memory accounting. It encodes nothing.
func (b *Batch) Size() int {
	if b.encoded {
		return len(b.data)
	}
	n := 0
	for i := range b.records {
		n += record.EncodedSize(&b.records[i])
	}
	return n
}

func (b *Batch) wire(seq uint64) *sluicev1.Batch {
	w := &sluicev1.Batch{Seq: seq, Count: uint32(b.count), Position: b.Position, Data: b.Encoded()}
	if !b.EventTime.IsZero() {
		w.EventTimeUnixNano = b.EventTime.UnixNano()
	}
	return w
}
