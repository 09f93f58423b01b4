// Package memory is a sluice buffer that keeps records in a bounded in-memory queue. It stores each batch
// and its source position in one step, so it declares atomic_position, but it is volatile: its contents
// die with its process. It is meant for tests and demos, and for decoupling a bursty source from a slow
// sink when losing the queued records on a crash is acceptable (the source is then read again from its
// start, see Buffer.Open).
package memory

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// Plugin returns the memory plugin: its spec and its buffer constructor.
func Plugin() sdk.Plugin {
	return sdk.Plugin{
		Spec: sdk.Spec{
			Name:    "memory",
			Version: "0.1.0",
			Summary: "A bounded in-memory queue between source and sink, for tests and demos. Volatile: its contents die with the process.",
			Author:  "sluice",
			Buffer: &sdk.Stage{
				Summary:      "In-memory bounded queue. Stores each batch with its source position atomically, but its contents (and the checkpoint) die with the process: after a restart it is empty and the source is read again from its start. For tests and demos.",
				Settings:     sdk.MustSettingsOf[Config](),
				Capabilities: sdk.Capabilities{AtomicPosition: true},
			},
		},
		NewBuffer: func() sdk.Buffer { return &Buffer{} },
	}
}

// Config holds the buffer's settings; its tags declare them (sdk.SettingsOf).
type Config struct {
	MaxRecords int `setting:"max_records" default:"100000" min:"1" doc:"Records the queue holds before Append blocks (backpressure) until the sink catches up. Default 100000; more absorbs longer bursts at the cost of memory (records are kept whole)."`
}

// readWait is how long Read waits for records before returning none.
const readWait = 200 * time.Millisecond

// Buffer is the memory buffer. Its positions are a sequence number as 8 bytes, big-endian, starting after
// OpenRequest.After (or at 1).
//
// The SDK calls Open, then Append (one goroutine), Read and Ack (two others) concurrently, then Close.
// Every method is safe for concurrent use; after Close, Append and Read fail.
type Buffer struct {
	sdk.UnimplementedBuffer

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced whenever the queue changes or the buffer closes
	max        int
	queue      []entry // entries not yet acknowledged, in sequence order
	head       int     // queue[:head] is free space from trimmed entries
	nextSeq    uint64  // sequence number of the next appended record
	readSeq    uint64  // last sequence number Read returned
	checkpoint record.Position
	maxBatch   int
	closed     bool
	out        []record.Record // Read's result, reused
}

type entry struct {
	seq uint64
	rec record.Record // Position is the buffer's; the byte slices belong to the buffer
}

// Open reads the settings. req.After is where Read starts; new records are numbered after it, so a
// buffer reopened after a crash never hands out positions the host has already stored (it is empty, its
// Checkpoint is nil, and the host reads the source again from its start: at-least-once after a crash).
func (b *Buffer) Open(_ context.Context, req sdk.OpenRequest) error {
	var cfg Config // Decode applies the default and checks the bound the tag declares
	if err := req.Settings.Decode(&cfg); err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	var after uint64
	if req.After != nil {
		if len(req.After) != 8 {
			return fmt.Errorf("memory: position %x is not a memory buffer position (want 8 bytes)", []byte(req.After))
		}
		after = binary.BigEndian.Uint64(req.After)
	}
	req.Metrics.BufferFill(b.fill)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.max = cfg.MaxRecords
	b.maxBatch = max(req.MaxBatchRecords, 1)
	b.nextSeq, b.readSeq = after+1, after
	b.changed = make(chan struct{})
	return nil
}

// fill tells the host how full the buffer is (sdk.Metrics.BufferFill): records held against max_records.
func (b *Buffer) fill() sdk.Fill {
	b.mu.Lock()
	defer b.mu.Unlock()
	var bytes int64
	for _, e := range b.queue[b.head:] {
		bytes += int64(8 + len(e.rec.Key) + len(e.rec.Payload))
	}
	n := int64(b.len())
	return sdk.Fill{Entries: n, Bytes: bytes, Fraction: float64(n) / float64(max(b.max, 1))}
}

// notify wakes every waiter. b.mu must be held.
func (b *Buffer) notify() {
	close(b.changed)
	b.changed = make(chan struct{})
}

var errClosed = errors.New("memory: buffer is closed")

// Checkpoint returns the source position of the last batch appended, or nil.
func (b *Buffer) Checkpoint(context.Context) (record.Position, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.checkpoint.Clone(), nil
}

// Append copies the batch's records (heartbeats carry no data and are not stored) into the queue and
// stores batch.Position as the checkpoint (unless it is nil), in one step. While the batch does not fit under max_records it
// blocks until acks make room or ctx is done; a batch larger than max_records waits for an empty queue.
func (b *Buffer) Append(ctx context.Context, batch record.Batch) error {
	n, size := 0, 0
	for i := range batch.Records {
		r := &batch.Records[i]
		if r.Op != record.OpHeartbeat {
			n++
			size += 8 + len(r.Key) + len(r.Payload)
		}
	}
	b.mu.Lock()
	for !b.closed && b.len() > 0 && b.len()+n > b.max {
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		b.mu.Lock()
	}
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	// One allocation for the batch's bytes; the records keep pieces of it until they are trimmed.
	arena := make([]byte, 0, size)
	cut := func(p []byte) []byte {
		if len(p) == 0 {
			return nil
		}
		start := len(arena)
		arena = append(arena, p...)
		return arena[start:len(arena):len(arena)]
	}
	if b.head > 0 && b.head >= len(b.queue)/2 {
		b.queue = append(b.queue[:0], b.queue[b.head:]...)
		b.head = 0
	}
	for i := range batch.Records {
		r := &batch.Records[i]
		if r.Op == record.OpHeartbeat {
			continue
		}
		seq := b.nextSeq
		b.nextSeq++
		b.queue = append(b.queue, entry{seq: seq, rec: record.Record{
			Position: cut(binary.BigEndian.AppendUint64(nil, seq)),
			Op:       r.Op,
			Key:      cut(r.Key),
			Meta:     slices.Clone(r.Meta), // the strings are immutable; the slice is the SDK's
			Payload:  cut(r.Payload),
			Encoding: r.Encoding,
		}})
	}
	if len(batch.Position) > 0 { // a batch without position leaves the checkpoint as it was
		b.checkpoint = batch.Position.Clone()
	}
	b.notify()
	return nil
}

// len returns the number of queued entries. b.mu must be held.
func (b *Buffer) len() int { return len(b.queue) - b.head }

// Read returns the queued records after the last one returned, at most MaxBatchRecords. With none queued
// it waits up to 200ms, then returns none. The records stay valid until the next Read.
func (b *Buffer) Read(ctx context.Context) ([]record.Record, error) {
	timer := time.NewTimer(readWait)
	defer timer.Stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		if b.closed {
			return nil, errClosed
		}
		// Entries are in sequence order: find the first one after readSeq.
		q := b.queue[b.head:]
		i, _ := slices.BinarySearchFunc(q, b.readSeq+1, func(e entry, seq uint64) int {
			return cmpSeq(e.seq, seq)
		})
		if i < len(q) {
			q = q[i:min(len(q), i+b.maxBatch)]
			b.out = b.out[:0]
			for _, e := range q {
				b.out = append(b.out, e.rec)
			}
			b.readSeq = q[len(q)-1].seq
			return b.out, nil
		}
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
			b.mu.Lock()
		case <-timer.C:
			b.mu.Lock()
			return nil, nil
		case <-ctx.Done():
			b.mu.Lock()
			return nil, ctx.Err()
		}
	}
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Ack trims every record up to and including pos, making room for Append.
func (b *Buffer) Ack(_ context.Context, pos record.Position) error {
	if len(pos) != 8 {
		return fmt.Errorf("memory: ack for position %x, not a memory buffer position", []byte(pos))
	}
	seq := binary.BigEndian.Uint64(pos)
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for b.head+n < len(b.queue) && b.queue[b.head+n].seq <= seq {
		n++
	}
	if n == 0 {
		return nil
	}
	clear(b.queue[b.head : b.head+n]) // let the trimmed records' memory go
	b.head += n
	if b.head == len(b.queue) {
		b.queue, b.head = b.queue[:0], 0
	}
	b.notify()
	return nil
}

// Len returns the number of records queued and not yet acknowledged.
func (b *Buffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.len()
}

// Close drops the queue and wakes a blocked Append or Read, which then fail.
func (b *Buffer) Close(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.queue, b.head = nil, 0
	if b.changed != nil {
		b.notify()
	}
	return nil
}
