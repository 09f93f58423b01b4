package sdktest

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
)

// received is what a check has read from a source's or buffer's read stream.
type received struct {
	recs  []record.Record // deep copies, in order
	ends  []int           // ends[i]: records received through batch i
	seqs  []uint64        // seqs[i]: batch i's sequence number
	seen  map[string]int  // position -> record index
	acked int             // batches acked so far
}

// stallAck is how long recv waits for a batch before it acknowledges every batch it holds: a stage may
// wait for acks before it sends more or ends its stream (a finished source does), and a host acks
// everything eventually.
const stallAck = 300 * time.Millisecond

// recv receives batches from rs until r holds at least n records, checking each batch: one to
// batchRecords records, each with a position, distinct from every other position on the stream, and the
// batch's position equal to its last record's. ack decides, per batch index, whether to acknowledge the
// batch right away (acks are cumulative: acking a batch acknowledges every earlier one).
func recv(t *testing.T, rs *protocol.ReadStream, r *received, n int, ack func(batch int) bool) {
	t.Helper()
	if r.seen == nil {
		r.seen = map[string]int{}
	}
	type result struct {
		b   *protocol.Batch
		err error
	}
	next := make(chan result, 1)
	stall := time.NewTimer(stallAck)
	defer stall.Stop()
	for len(r.recs) < n {
		go func() {
			b, err := rs.Recv()
			next <- result{b, err}
		}()
		var res result
	wait:
		for {
			stall.Reset(stallAck)
			select {
			case res = <-next:
				break wait
			case <-stall.C:
				r.ackAll(t, rs)
			}
		}
		b, err := res.b, res.err
		if err == io.EOF {
			t.Fatalf("the stream ended after %d records; the check reads %d", len(r.recs), n)
		}
		if err != nil {
			t.Fatalf("receiving after %d records: %v", len(r.recs), err)
		}
		if b.Len() < 1 || b.Len() > batchRecords {
			t.Fatalf("batch %d holds %d records; want 1 to MaxBatchRecords (%d)", len(r.seqs)+1, b.Len(), batchRecords)
		}
		recs, err := b.Records()
		if err != nil {
			t.Fatalf("batch %d: %v", len(r.seqs)+1, err)
		}
		for _, rec := range recs {
			if len(rec.Position) == 0 {
				t.Fatalf("record %d has no position", len(r.recs))
			}
			if prev, dup := r.seen[string(rec.Position)]; dup {
				t.Fatalf("records %d and %d have the same position %x", prev, len(r.recs), []byte(rec.Position))
			}
			r.seen[string(rec.Position)] = len(r.recs)
			r.recs = append(r.recs, clone(rec))
		}
		if last := recs[len(recs)-1].Position; !b.Position.Equal(last) {
			t.Fatalf("batch %d accounts through position %x, but its last record's is %x", len(r.seqs)+1,
				[]byte(b.Position), []byte(last))
		}
		r.seqs = append(r.seqs, b.Seq)
		r.ends = append(r.ends, len(r.recs))
		if ack(len(r.seqs) - 1) {
			if err := rs.Ack(b.Seq); err != nil {
				t.Fatalf("acking batch %d: %v", b.Seq, err)
			}
			r.acked = len(r.seqs)
		}
	}
}

// ackAll acknowledges every batch received.
func (r *received) ackAll(t *testing.T, rs *protocol.ReadStream) {
	t.Helper()
	if r.acked < len(r.seqs) {
		if err := rs.Ack(r.seqs[len(r.seqs)-1]); err != nil {
			t.Fatalf("acking batch %d: %v", r.seqs[len(r.seqs)-1], err)
		}
		r.acked = len(r.seqs)
	}
}

// expectEnd checks that the stage ends the stream only once every batch is acknowledged: with the last
// batch unacknowledged the stream stays open, and after the ack it ends without another record.
func expectEnd(t *testing.T, rs *protocol.ReadStream, r *received) {
	t.Helper()
	type result struct {
		b   *protocol.Batch
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := rs.Recv()
		done <- result{b, err}
	}()
	if r.acked < len(r.seqs) {
		select {
		case res := <-done:
			if res.err == io.EOF {
				t.Fatalf("the stream ended while batch %d was not yet acknowledged", r.seqs[len(r.seqs)-1])
			}
			done <- res
		case <-time.After(100 * time.Millisecond):
		}
		r.ackAll(t, rs)
	}
	res := <-done
	switch {
	case res.err == io.EOF:
	case res.err != nil:
		t.Fatalf("want the stream to end after %d records; got %v", len(r.recs), res.err)
	default:
		t.Fatalf("want the stream to end after %d records; got another batch of %d", len(r.recs), res.b.Len())
	}
}

// stopStream cancels a stream the way a host stops a stage, and waits until the stage has seen it.
func stopStream(cancel context.CancelFunc, rs *protocol.ReadStream) {
	cancel()
	for {
		if _, err := rs.Recv(); err != nil {
			return
		}
	}
}

// written tracks the acknowledgements of a write stream (a sink's Write or a buffer's Append).
type written struct {
	ws    *protocol.WriteStream
	mu    sync.Mutex
	sent  uint64
	acked uint64
	err   error
	cond  *sync.Cond
	ended bool // the stage ended the stream (io.EOF)
}

// watchAcks receives ws's acks in a goroutine, checking each acknowledges a batch that was sent and
// later than the one before: acks arrive in order, and one ack may cover several batches.
func watchAcks(ws *protocol.WriteStream) *written {
	w := &written{ws: ws}
	w.cond = sync.NewCond(&w.mu)
	go func() {
		for {
			seq, err := ws.Recv()
			w.mu.Lock()
			switch {
			case err == io.EOF:
				w.ended = true
			case err != nil:
				w.err = err
			case seq <= w.acked:
				w.err = fmt.Errorf("ack for batch %d after the ack for batch %d: acks must arrive in order", seq, w.acked)
			case seq > w.sent:
				w.err = fmt.Errorf("ack for batch %d, but only %d were sent", seq, w.sent)
			default:
				w.acked = seq
			}
			stop := err != nil || w.err != nil
			w.cond.Broadcast()
			w.mu.Unlock()
			if stop {
				return
			}
		}
	}()
	return w
}

// send sends batches, in order.
func (w *written) send(t *testing.T, batches []record.Batch) {
	t.Helper()
	for i := range batches {
		w.mu.Lock()
		w.sent++
		w.mu.Unlock()
		if err := w.ws.Send(protocol.NewBatch(batches[i].Records, batches[i].Position)); err != nil {
			t.Fatalf("sending batch %d: %v", i+1, err)
		}
	}
}

// waitAcked waits until every batch sent is acknowledged. The stream's context bounds the wait.
func (w *written) waitAcked(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.acked < w.sent && w.err == nil && !w.ended {
		w.cond.Wait()
	}
	if w.err != nil {
		t.Fatalf("after %d of %d batches acknowledged: %v", w.acked, w.sent, w.err)
	}
	if w.acked < w.sent {
		t.Fatalf("the stream ended with %d of %d batches acknowledged", w.acked, w.sent)
	}
}

// close ends the stream (CloseSend) and checks that the stage acknowledges everything and ends its side.
func (w *written) close(t *testing.T) {
	t.Helper()
	if err := w.ws.CloseSend(); err != nil {
		t.Fatalf("closing the stream: %v", err)
	}
	w.waitAcked(t)
	w.mu.Lock()
	defer w.mu.Unlock()
	for !w.ended && w.err == nil {
		w.cond.Wait()
	}
	if w.err != nil {
		t.Fatalf("after closing the stream: %v", w.err)
	}
}

// plan is the batches a check writes to a sink or appends to a buffer.
type plan struct {
	batches []record.Batch
	data    []record.Record // the records that carry data (no heartbeats), in order
	ends    []int           // ends[i]: data records in batches[:i+1]
}

// makePlan builds batches of n records made by gen, with upstream positions 1, 2, … (8 bytes,
// big-endian). Batch sizes vary from 1 to 16; the third batch carries a heartbeat record in its middle,
// the fifth accounts through a position past its last record (as when a filter dropped the records after
// it), and the last batch holds no records and only advances the position.
func makePlan(n int, gen func(int) record.Record) plan {
	sizes := []int{1, 7, 3, 16, 5, 2, 11}
	var p plan
	pos := 0
	next := func() record.Position { pos++; return pos8(pos) }
	for i, j := 0, 0; i < n; j++ {
		size := min(sizes[j%len(sizes)], n-i)
		var recs []record.Record
		for k := 0; k < size; k++ {
			if j == 2 && k == size/2 {
				recs = append(recs, record.Record{Position: next(), Op: record.OpHeartbeat})
			}
			r := gen(i)
			r.Position = next()
			recs = append(recs, r)
			p.data = append(p.data, r)
			i++
		}
		b := record.Batch{Records: recs, Position: recs[len(recs)-1].Position}
		if j == 4 {
			b.Position = next()
		}
		p.batches = append(p.batches, b)
		p.ends = append(p.ends, len(p.data))
	}
	p.batches = append(p.batches, record.Batch{Position: next()})
	p.ends = append(p.ends, len(p.data))
	return p
}

// DefaultRecord is the i-th record the suite writes to sinks and appends to buffers when the config's
// Record is nil: ops cycle through insert, update, replace and delete; the key is "key-i"; metadata holds
// "sdktest.i"; the payload is a small JSON object, except every tenth record, which carries raw
// (non-JSON) bytes. The suite sets positions itself.
func DefaultRecord(i int) record.Record {
	is := strconv.Itoa(i)
	r := record.Record{
		Op:       []record.Op{record.OpInsert, record.OpUpdate, record.OpReplace, record.OpDelete}[i%4],
		Key:      []byte("key-" + is),
		Meta:     record.Meta{{Key: "sdktest.i", Value: is}},
		Payload:  []byte(`{"i":` + is + `,"text":"record ` + is + `"}`),
		Encoding: record.EncodingJSON,
	}
	if i%10 == 9 {
		r.Payload, r.Encoding = []byte("raw bytes of record "+is), record.EncodingRaw
	}
	return r
}
