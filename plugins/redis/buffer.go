package redis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/plugins/redis/redisconn"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// ErrFenced is returned (wrapped, and marked permanent) by Open, Append and Ack when the buffer holds a
// newer fencing token than this instance's (sdk.OpenRequest.Fence): another host holds the pipeline's
// lease now, and retrying would not help.
var ErrFenced = errors.New("redis: fenced: another instance has taken this buffer over")

// ErrConflict is returned (wrapped) by Append when the buffer's checkpoint is not the one this instance
// last stored or read: another instance appended to the same key.
var ErrConflict = errors.New("redis: the buffer's checkpoint changed under this instance: another instance appends to the same key")

// readBlock is how long Read waits for entries before returning none (the SDK wants at most about 1s).
const readBlock = 500 * time.Millisecond

// fullPoll is how often a blocked Append looks at the buffer's fill again when no local Ack woke it (the
// sink may be acknowledging through another instance after a restart).
const fullPoll = time.Second

// fullWarnEvery bounds how often a blocked Append logs the fill level.
const fullWarnEvery = 30 * time.Second

// The stream's layout. Each entry holds one or more records, back to back in the SDK's record encoding
// (sdk/record) without their source positions, in the fields
//
//	b  the records
//	n  how many records b holds
//	c  the bytes of records appended to the stream up to and including this entry
//	k  the records appended to the stream up to and including this entry
//
// An append stores a batch as a few entries (at most a host batch's worth of records, about 1 MiB, each),
// so Redis does one XADD, one reply element and one trim per entry rather than per record. A record's
// buffer position is its entry's ID when it is the entry's last record, "ID.i" (i from 0) otherwise.
//
// Entries written before this layout hold one record in the field r, with c; they are read, positioned
// and trimmed as one-record entries, so a buffer written by an earlier sluice drains unchanged.
//
// The meta hash holds pos (the checkpoint: the source position of the last record appended), fence (the
// fencing token), appended and acked_bytes (bytes appended, and appended by the last fully trimmed entry),
// records and acked_records (records appended, and records the sink has stored).

// appendScript appends entries and stores the checkpoint in one step.
//
// KEYS: stream, meta. ARGV: fencing token (refused when below the one meta holds, see fenceScript), the
// checkpoint the caller believes is stored ("" for none), the new checkpoint, then per entry its record
// count and its records. Returns {records, bytes} held after the append, or {-1, -1} when the append had
// been applied already.
//
// The checkpoint compare-and-set makes a retried append idempotent: when the reply of an applied script
// was lost (a connection cut, a Redis restart after the fsync), the retry finds the new checkpoint
// already stored and appends nothing.
//
// A new checkpoint "" (a batch without position: `sluice verify --repair` appends one while the pipeline
// runs) is stored without moving the checkpoint and without the compare-and-set, so that the instance
// running the pipeline appends on undisturbed; a retry of such an append after a lost reply may store
// its entries twice.
var appendScript = goredis.NewScript(`
local token = tonumber(ARGV[1])
local held = tonumber(redis.call('HGET', KEYS[2], 'fence') or '-1')
if token < held then
  return redis.error_reply('FENCED ' .. string.format('%d', held))
end
local cur = redis.call('HGET', KEYS[2], 'pos') or ''
if ARGV[3] ~= '' and cur ~= ARGV[2] then
  if cur == ARGV[3] then
    return {-1, -1}
  end
  return redis.error_reply('CONFLICT checkpoint')
end
local m = redis.call('HMGET', KEYS[2], 'appended', 'records', 'acked_bytes', 'acked_records')
local total = tonumber(m[1] or '0')
local recs = tonumber(m[2] or '0')
for i = 4, #ARGV, 2 do
  total = total + #ARGV[i + 1]
  recs = recs + tonumber(ARGV[i])
  redis.call('XADD', KEYS[1], '*', 'b', ARGV[i + 1], 'n', ARGV[i], 'c', string.format('%d', total), 'k', string.format('%d', recs))
end
redis.call('HSET', KEYS[2], 'fence', ARGV[1], 'appended', string.format('%d', total), 'records', string.format('%d', recs))
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], 'pos', ARGV[3])
end
return {recs - tonumber(m[4] or '0'), total - tonumber(m[3] or '0')}
`)

// ackScript records that the sink stored the records through one, and trims the entries it no longer
// needs: those before the record's entry, and that entry too when the record is its last.
//
// KEYS: stream, meta. ARGV: the record's entry ID, its index in the entry (-1: the last), the smallest ID
// to keep, the fencing token (refused when below the one meta holds). Returns {records, bytes} held
// after the trim.
var ackScript = goredis.NewScript(`
local held = tonumber(redis.call('HGET', KEYS[2], 'fence') or '-1')
if tonumber(ARGV[4]) < held then
  return redis.error_reply('FENCED ' .. string.format('%d', held))
end
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
local trimmed = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[3])
if #e > 0 then
  local f = {}
  local fields = e[1][2]
  for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
  if f['b'] then
    local n = tonumber(f['n'])
    local idx = tonumber(ARGV[2])
    if idx < 0 or idx >= n - 1 then
      redis.call('HSET', KEYS[2], 'acked_records', f['k'], 'acked_bytes', f['c'])
    else
      redis.call('HSET', KEYS[2], 'acked_records', string.format('%d', tonumber(f['k']) - (n - 1 - idx)))
    end
  else
    redis.call('HINCRBY', KEYS[2], 'acked_records', trimmed)
    redis.call('HSET', KEYS[2], 'acked_bytes', f['c'])
  end
end
local m = redis.call('HMGET', KEYS[2], 'appended', 'acked_bytes', 'records', 'acked_records')
return {tonumber(m[3] or '0') - tonumber(m[4] or '0'), tonumber(m[1] or '0') - tonumber(m[2] or '0')}
`)

// upgradeScript starts the record counters of a buffer last written by a sluice that kept none (one
// record per entry then): the records held are the entries held.
//
// KEYS: stream, meta. Returns 1 when it started them.
var upgradeScript = goredis.NewScript(`
if redis.call('HEXISTS', KEYS[2], 'records') == 1 then
  return 0
end
redis.call('HSET', KEYS[2], 'records', redis.call('XLEN', KEYS[1]), 'acked_records', 0)
return 1
`)

// fenceScript raises the buffer's fencing token to this instance's, so that every instance holding an
// older one (a host that lost the pipeline's lease while frozen) is refused from now on, or refuses this
// instance when it holds an older token itself. A token of 0 (no lease) is never stored.
//
// KEYS: meta. ARGV: the fencing token. Returns the token meta held before (-1: none).
var fenceScript = goredis.NewScript(`
local token = tonumber(ARGV[1])
local held = tonumber(redis.call('HGET', KEYS[1], 'fence') or '-1')
if token < held then
  return redis.error_reply('FENCED ' .. string.format('%d', held))
end
if token > held and token > 0 then
  redis.call('HSET', KEYS[1], 'fence', ARGV[1])
end
return held
`)

// fillScript returns {records, bytes} held. KEYS: stream, meta.
var fillScript = goredis.NewScript(`
local m = redis.call('HMGET', KEYS[2], 'appended', 'acked_bytes', 'records', 'acked_records')
return {tonumber(m[3] or '0') - tonumber(m[4] or '0'), tonumber(m[1] or '0') - tonumber(m[2] or '0')}
`)

// Buffer is the Redis Streams buffer.
//
// The SDK calls Open, then Checkpoint, then Append (from one goroutine) and Read and Ack (from two
// others) concurrently, then Close. Contexts bound each call, including its retries; a cancelled context
// makes the call return ctx.Err() (a blocking read returns within about half a second).
type Buffer struct {
	sdk.UnimplementedBuffer

	cfg    Config
	client goredis.UniversalClient
	log    *slog.Logger
	stream string
	meta   string
	batch  int64
	fence  int64 // the fencing token of the host's lease (0: none)

	// Append's state (one goroutine; stored and checked are set under mu by the first Checkpoint).
	stored  string // the checkpoint this instance last stored or read ("" for none)
	checked bool   // stored has been read
	args    []any  // the append script's arguments, reused
	enc     []byte // the batch's records, encoded back to back, reused
	ends    []int  // ends[i]: where the i-th encoded record ends in enc
	owners  []int  // owners[i]: the index in the batch of the i-th encoded record

	// Read's state (one goroutine).
	lastRead string          // ID of the last entry fetched
	resume   *position       // a partly stored entry to read the rest of first (Open's After)
	perEntry int             // records per entry in the last fetch, to size the next
	arena    []byte          // the bytes of the records fetched
	fetched  []record.Record // the records fetched; Read returns them batch by batch
	parsed   []entry         // the entries of the last fetch, reused
	next     int             // the first record of fetched not yet returned

	mu       sync.Mutex
	entries  int64         // entries held, as last seen
	bytes    int64         // bytes held, as last seen
	changed  chan struct{} // closed and replaced when an Ack trims
	full     bool          // Append is waiting for room
	warnedAt time.Time
	closed   bool
}

// Open connects (retrying while Redis is unreachable, up to retry_timeout), logs what the server's
// persistence settings mean for the buffer, and trims what the sink has already stored (entries up to
// req.After). Read starts strictly after req.After, or at the oldest entry.
func (b *Buffer) Open(ctx context.Context, req sdk.OpenRequest) error {
	var cfg Config // Decode applies the defaults and checks the bounds the tags declare
	if err := req.Settings.Decode(&cfg); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	client, err := cfg.client()
	if err != nil {
		return err
	}
	b.cfg, b.client, b.log = cfg, client, req.Logger
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	b.stream, b.meta = keys(cfg.Key, req.Pipeline)
	b.batch = int64(max(req.MaxBatchRecords, 1))
	b.fence = req.Fence
	b.changed = make(chan struct{})
	b.lastRead, b.perEntry = "0-0", 0
	req.Metrics.BufferFill(b.fill)
	if len(req.After) > 0 {
		p, err := parsePosition(string(req.After))
		if err != nil {
			return invalid("the position to resume after, %q, is not a position of this buffer: %v", req.After, err)
		}
		b.lastRead = p.id
		if p.index >= 0 {
			b.resume = &p
		}
	}
	if err := b.retry(ctx, "connect", func() error { return cfg.Explain(client.Ping(ctx).Err()) }); err != nil {
		return err
	}
	checkPersistence(ctx, client, b.log)
	if err := b.raiseFence(ctx); err != nil {
		return err
	}
	if err := b.retry(ctx, "start the record counters", func() error {
		return upgradeScript.Run(ctx, b.client, []string{b.stream, b.meta}).Err()
	}); err != nil {
		return err
	}
	if len(req.After) > 0 {
		if err := b.Ack(ctx, req.After); err != nil {
			return err
		}
	} else if err := b.refreshFill(ctx); err != nil {
		return err
	}
	b.log.Info("redis: buffer open", slog.String("stream", b.stream), slog.Int64("entries", b.entries),
		slog.Int64("bytes", b.bytes), slog.String("after", b.lastRead))
	return nil
}

// raiseFence stores this instance's fencing token in the buffer (see fenceScript).
func (b *Buffer) raiseFence(ctx context.Context) error {
	var held int64
	err := b.retry(ctx, "store the fencing token", func() error {
		var err error
		held, err = fenceScript.Run(ctx, b.client, []string{b.meta}, b.fence).Int64()
		return err
	})
	var rerr goredis.Error
	if errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "FENCED") {
		return b.fenced(rerr.Error())
	}
	if err != nil {
		return err
	}
	if b.fence > held && held > 0 {
		b.log.Info("redis: this instance's lease fences the buffer's earlier holder", slog.Int64("fence", b.fence),
			slog.Int64("earlier", held))
	}
	return nil
}

// fenced is the error for a script's "FENCED <token>" reply: the buffer holds a newer token than b's.
func (b *Buffer) fenced(reply string) error {
	held := strings.TrimSpace(strings.TrimPrefix(reply, "FENCED"))
	if b.fence == 0 {
		return sdk.Permanent(fmt.Errorf("%w: %s holds fencing token %s, written by a sluice running the pipeline under a lease (cluster:), and this sluice runs it without one: run it with the same cluster: settings, or, if no instance runs it any more, remove the token (HDEL %s fence)",
			ErrFenced, b.meta, held, b.meta))
	}
	return sdk.Permanent(fmt.Errorf("%w: this instance's fencing token %d is older than %s, which %s holds: another host holds the pipeline's lease now",
		ErrFenced, b.fence, held, b.meta))
}

// Checkpoint returns the source position stored with the last append, or nil for a new buffer.
func (b *Buffer) Checkpoint(ctx context.Context) (record.Position, error) {
	var pos string
	err := b.retry(ctx, "read the checkpoint", func() error {
		v, err := b.client.HGet(ctx, b.meta, "pos").Result()
		if errors.Is(err, goredis.Nil) {
			v, err = "", nil
		}
		pos = v
		return err
	})
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	if !b.checked { // later calls must not move Append's expectation under it
		b.stored, b.checked = pos, true
	}
	b.mu.Unlock()
	if pos == "" {
		return nil, nil
	}
	return record.Position(pos), nil
}

// Append stores the batch's records (heartbeats carry no data and are not stored) and batch.Position in
// one script. While the batch does not fit under max_entries and max_bytes, it stores what fits, with the
// source position of the last record stored as the checkpoint, and waits for acks to make room for the
// rest (the SDK hands a blocked buffer up to 16 host batches at once, which may exceed the bounds). Every
// step is atomic, so a crash between two of them resumes the source after the last stored record. A
// lost connection is retried with backoff for up to retry_timeout; a retry of an append that was applied
// appends nothing. A batch without position is stored without moving the checkpoint (see appendScript).
func (b *Buffer) Append(ctx context.Context, batch record.Batch) error {
	b.mu.Lock()
	checked := b.checked
	b.mu.Unlock()
	if !checked {
		// Checkpoint was not called (the SDK always calls it; direct users may not).
		if _, err := b.Checkpoint(ctx); err != nil {
			return err
		}
	}
	b.enc, b.ends, b.owners = b.enc[:0], b.ends[:0], b.owners[:0]
	for i := range batch.Records {
		r := &batch.Records[i]
		if r.Op == record.OpHeartbeat {
			continue
		}
		// The entry's ID is the buffer position; the source position is not stored per record.
		e := *r
		e.Position = nil
		b.enc = record.Append(b.enc, &e)
		b.ends = append(b.ends, len(b.enc))
		b.owners = append(b.owners, i)
	}
	for start := 0; ; {
		n, err := b.waitRoom(ctx, start)
		if err != nil {
			return err
		}
		pos := batch.Position
		if start+n < len(b.ends) {
			// A part: it ends at a record whose own source position can be resumed after. Records
			// without one cannot end a part; the part then grows to the next that has one.
			for ; start+n < len(b.ends); n++ {
				p := batch.Records[b.owners[start+n-1]].Position
				if len(p) > 0 && string(p) != b.stored {
					pos = p
					break
				}
			}
		}
		if err := b.appendPart(ctx, start, start+n, pos); err != nil {
			return err
		}
		start += n
		if start == len(b.ends) {
			return nil
		}
	}
}

// maxEntryBytes bounds the records one stream entry holds, with at most a host batch of them (an entry
// holds at least one record, whatever its size).
const maxEntryBytes = 1 << 20

// recordStart is where the i-th encoded record begins in b.enc.
func (b *Buffer) recordStart(i int) int {
	if i == 0 {
		return 0
	}
	return b.ends[i-1]
}

// appendPart runs the append script for the encoded records from through to-1, as entries, and the
// checkpoint pos.
func (b *Buffer) appendPart(ctx context.Context, from, to int, pos record.Position) error {
	b.args = append(b.args[:0], b.fence, b.stored, string(pos))
	for i := from; i < to; {
		j, start := i+1, b.recordStart(i)
		for j < to && j-i < int(b.batch) && b.ends[j]-start <= maxEntryBytes {
			j++
		}
		b.args = append(b.args, j-i, b.enc[start:b.ends[j-1]])
		i = j
	}
	var held []int64
	err := b.retry(ctx, "append", func() error {
		var err error
		held, err = appendScript.Run(ctx, b.client, []string{b.stream, b.meta}, b.args...).Int64Slice()
		return err
	})
	clear(b.args) // drop references to the records' bytes
	if err != nil {
		var rerr goredis.Error
		if errors.As(err, &rerr) {
			switch msg := rerr.Error(); {
			case strings.HasPrefix(msg, "FENCED"):
				return b.fenced(msg)
			case strings.HasPrefix(msg, "CONFLICT"):
				return fmt.Errorf("%w: expected checkpoint %q", ErrConflict, b.stored)
			}
		}
		return err
	}
	if len(pos) > 0 {
		b.stored = string(pos)
	}
	if len(held) == 2 && held[0] >= 0 {
		b.setFill(held[0], held[1], false)
		return nil
	}
	// A retried append that had been applied: the counters did not change with it.
	return b.refreshFill(ctx)
}

// waitRoom blocks until a useful part of the encoded records from start on fits under the bounds — all
// of them, or at least a sixteenth of max_entries — and returns how many of them fit (at least one, even
// alone above a bound, once the buffer is empty). It returns early when ctx is done or the buffer is
// closed.
func (b *Buffer) waitRoom(ctx context.Context, start int) (int, error) {
	if start == len(b.ends) {
		return 0, nil
	}
	want := len(b.ends) - start
	if b.cfg.MaxEntries > 0 {
		want = min(want, max(1, int(b.cfg.MaxEntries/16)))
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return 0, errClosed
		}
		n, size := 0, b.bytes
		for i := start; i < len(b.ends); i++ {
			e := int64(b.ends[i] - b.recordStart(i))
			if b.entries+int64(n) > 0 &&
				(b.cfg.MaxEntries > 0 && b.entries+int64(n)+1 > b.cfg.MaxEntries ||
					b.cfg.MaxBytes > 0 && size+e > b.cfg.MaxBytes) {
				break
			}
			n++
			size += e
		}
		if n >= want || start+n == len(b.ends) || (n > 0 && b.cfg.MaxEntries == 0) {
			if b.full {
				b.full = false
				b.log.Info("redis: buffer has room again; appends continue",
					slog.Int64("entries", b.entries), slog.Int64("bytes", b.bytes))
			}
			b.mu.Unlock()
			return n, nil
		}
		if !b.full || time.Since(b.warnedAt) >= fullWarnEvery {
			b.full, b.warnedAt = true, time.Now()
			b.log.Warn("redis: buffer full: appends wait for the sink, and the source is not read",
				slog.Int64("entries", b.entries), slog.Int64("max_entries", b.cfg.MaxEntries),
				slog.Int64("bytes", b.bytes), slog.Int64("max_bytes", b.cfg.MaxBytes),
				slog.String("fill", b.fillLevel()))
		}
		ch := b.changed
		b.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(fullPoll)
		} else {
			timer.Reset(fullPoll)
		}
		select {
		case <-ch:
		case <-timer.C:
			if err := b.refreshFill(ctx); err != nil {
				return 0, err
			}
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// fillLevel describes how full the buffer is, as a percentage of its tightest bound. b.mu must be held.
func (b *Buffer) fillLevel() string {
	return strconv.FormatFloat(100*b.fraction(), 'f', 1, 64) + "%"
}

// fraction is how full the buffer is against its tightest bound, 0 to 1 (0 without bounds). b.mu must be
// held.
func (b *Buffer) fraction() float64 {
	f := 0.0
	if b.cfg.MaxEntries > 0 {
		f = float64(b.entries) / float64(b.cfg.MaxEntries)
	}
	if b.cfg.MaxBytes > 0 {
		f = max(f, float64(b.bytes)/float64(b.cfg.MaxBytes))
	}
	return f
}

// fill tells the host how full the buffer is (sdk.Metrics.BufferFill): as this instance last saw it,
// after its last Append, Ack or poll.
func (b *Buffer) fill() sdk.Fill {
	b.mu.Lock()
	defer b.mu.Unlock()
	return sdk.Fill{Entries: b.entries, Bytes: b.bytes, Fraction: b.fraction()}
}

// setFill records the fill level and wakes a waiting Append when it dropped.
func (b *Buffer) setFill(entries, bytes int64, trimmed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.entries, b.bytes = entries, bytes
	if trimmed {
		close(b.changed)
		b.changed = make(chan struct{})
	}
}

// refreshFill reads the fill level from Redis.
func (b *Buffer) refreshFill(ctx context.Context) error {
	var held []int64
	err := b.retry(ctx, "read the fill level", func() error {
		var err error
		held, err = fillScript.Run(ctx, b.client, []string{b.stream, b.meta}).Int64Slice()
		return err
	})
	if err != nil {
		return err
	}
	b.setFill(held[0], held[1], true)
	return nil
}

// Fill returns the entries and bytes held as this instance last saw them (after its last Append, Ack or
// poll).
func (b *Buffer) Fill() (entries, bytes int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.entries, b.bytes
}

var errClosed = errors.New("redis: buffer is closed")

// Read returns the records after the last one returned (initially after OpenRequest.After), at most
// MaxBatchRecords, with their buffer positions. With none there it waits up to 500ms, then returns none.
// The records stay valid until the next Read.
func (b *Buffer) Read(ctx context.Context) ([]record.Record, error) {
	if b.next == len(b.fetched) {
		if err := b.fetch(ctx); err != nil {
			return nil, err
		}
	}
	end := min(len(b.fetched), b.next+int(b.batch))
	out := b.fetched[b.next:end:end]
	b.next = end
	return out, nil
}

// fetch reads the next entries: the rest of a partly stored entry first, then, with a blocking read,
// about a host batch's worth of records.
func (b *Buffer) fetch(ctx context.Context) error {
	var msgs []goredis.XMessage
	skip := 0
	err := b.retry(ctx, "read", func() error {
		var err error
		if r := b.resume; r != nil {
			msgs, err = b.client.XRange(ctx, b.stream, r.id, r.id).Result()
			return err
		}
		// Entries written by one append hold up to a host batch each: ask for as many as were needed
		// last time to make one.
		count := int64(1)
		if b.perEntry > 0 {
			count = max(1, min(b.batch, (b.batch+int64(b.perEntry)-1)/int64(b.perEntry)))
		}
		var streams []goredis.XStream
		streams, err = b.client.XRead(ctx, &goredis.XReadArgs{
			Streams: []string{b.stream, b.lastRead}, Count: count, Block: readBlock,
		}).Result()
		if errors.Is(err, goredis.Nil) {
			streams, err = nil, nil
		}
		if len(streams) > 0 {
			msgs = streams[0].Messages
		}
		return err
	})
	if err != nil {
		return err
	}
	if r := b.resume; r != nil {
		// The entry is gone when the sink had stored all of it after all: read on after it.
		b.resume, skip = nil, r.index+1
		if len(msgs) == 0 {
			skip = 0
		}
	}
	b.fetched, b.next = b.fetched[:0], 0
	if len(msgs) == 0 {
		return nil
	}
	size := 0
	b.parsed = b.parsed[:0]
	for _, m := range msgs {
		data, n, err := entryRecords(m)
		if err != nil {
			return fmt.Errorf("redis: stream %s entry %s: %w", b.stream, m.ID, err)
		}
		b.parsed = append(b.parsed, entry{id: m.ID, data: data, n: n})
		size += len(data) + n*(len(m.ID)+1+len(strconv.Itoa(n)))
	}
	// The records alias one buffer per fetch; go-redis's strings are copied into it once.
	if cap(b.arena) < size {
		b.arena = make([]byte, 0, size)
	}
	arena := b.arena[:0]
	records := 0
	for _, e := range b.parsed {
		start := len(arena)
		arena = append(arena, e.data...)
		first := len(b.fetched)
		if b.fetched, err = record.Decode(b.fetched, arena[start:], e.n); err != nil {
			return fmt.Errorf("redis: stream %s entry %s: %w", b.stream, e.id, err)
		}
		for i := first; i < len(b.fetched); i++ {
			start := len(arena)
			arena = append(arena, e.id...)
			if idx := i - first; idx < e.n-1 {
				arena = append(arena, '.')
				arena = strconv.AppendInt(arena, int64(idx), 10)
			}
			b.fetched[i].Position = record.Position(arena[start:len(arena):len(arena)])
		}
		records += e.n
	}
	b.arena = arena
	b.perEntry = max(1, records/len(msgs))
	b.lastRead = msgs[len(msgs)-1].ID
	b.next = min(skip, len(b.fetched))
	return nil
}

// entry is a stream entry as fetch reads it: its ID, its records (encoded back to back) and their number.
type entry struct {
	id, data string
	n        int
}

// entryRecords returns the encoded records a stream entry holds and their number.
func entryRecords(m goredis.XMessage) (string, int, error) {
	if data, ok := m.Values["b"].(string); ok {
		ns, _ := m.Values["n"].(string)
		n, err := strconv.Atoi(ns)
		if err != nil || n < 1 {
			return "", 0, fmt.Errorf("record count %q is not a positive number: not a sluice buffer entry", ns)
		}
		return data, n, nil
	}
	if data, ok := m.Values["r"].(string); ok { // one record, as an earlier sluice wrote it
		return data, 1, nil
	}
	return "", 0, errors.New("it holds no records: not a sluice buffer entry")
}

// Ack records that the sink stored everything through pos, trims the entries that leaves unneeded, and
// wakes a waiting Append.
func (b *Buffer) Ack(ctx context.Context, pos record.Position) error {
	p, err := parsePosition(string(pos))
	if err != nil {
		return fmt.Errorf("redis: ack for %q, not a position of this buffer: %w", pos, err)
	}
	keep := p.id // a partly stored entry stays
	if p.index < 0 {
		keep = p.after()
	}
	var held []int64
	err = b.retry(ctx, "trim", func() error {
		var err error
		held, err = ackScript.Run(ctx, b.client, []string{b.stream, b.meta}, p.id, p.index, keep, b.fence).Int64Slice()
		return err
	})
	var rerr goredis.Error
	if errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "FENCED") {
		return b.fenced(rerr.Error())
	}
	if err != nil {
		return err
	}
	b.setFill(held[0], held[1], true)
	return nil
}

// Close closes the connections and wakes a waiting Append, which then fails.
func (b *Buffer) Close(context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	if b.changed != nil {
		close(b.changed)
		b.changed = make(chan struct{})
	}
	b.mu.Unlock()
	if b.client == nil {
		return nil
	}
	if err := b.client.Close(); err != nil && !errors.Is(err, goredis.ErrClosed) {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// position is a record's buffer position: its entry's stream ID, and its index in the entry when it is
// not the entry's last record (-1 when it is).
type position struct {
	id      string
	ms, seq uint64
	index   int
}

// parsePosition reads a buffer position, "MILLISECONDS-SEQUENCE" or "MILLISECONDS-SEQUENCE.INDEX".
func parsePosition(s string) (position, error) {
	p := position{index: -1}
	id, idx, partial := strings.Cut(s, ".")
	if partial {
		i, err := strconv.Atoi(idx)
		if err != nil || i < 0 {
			return p, fmt.Errorf("record index %q is not a number", idx)
		}
		p.index = i
	}
	a, c, ok := strings.Cut(id, "-")
	if !ok {
		return p, errors.New("want MILLISECONDS-SEQUENCE[.INDEX]")
	}
	var err error
	if p.ms, err = strconv.ParseUint(a, 10, 64); err != nil {
		return p, err
	}
	if p.seq, err = strconv.ParseUint(c, 10, 64); err != nil {
		return p, err
	}
	p.id = id
	return p, nil
}

// ComparePositions orders two buffer positions (sdk.PositionComparer), for pipelines with ordered: false:
// by stream ID (milliseconds, then sequence), then within an entry by index, the entry's last record
// ("ID", no index) after every "ID.INDEX" of the same entry. It depends on a and b alone.
func (*Buffer) ComparePositions(a, b record.Position) (int, error) {
	p, err := parsePosition(string(a))
	if err != nil {
		return 0, fmt.Errorf("redis: %q is not a position of this buffer: %w", a, err)
	}
	q, err := parsePosition(string(b))
	if err != nil {
		return 0, fmt.Errorf("redis: %q is not a position of this buffer: %w", b, err)
	}
	last := func(i int) uint64 { // the entry's last record (index -1) sorts after every index
		if i < 0 {
			return math.MaxUint64
		}
		return uint64(i)
	}
	if c := cmp.Compare(p.ms, q.ms); c != 0 {
		return c, nil
	}
	if c := cmp.Compare(p.seq, q.seq); c != 0 {
		return c, nil
	}
	return cmp.Compare(last(p.index), last(q.index)), nil
}

// after is the smallest stream ID after p's entry.
func (p position) after() string {
	if p.seq == 1<<64-1 {
		return strconv.FormatUint(p.ms+1, 10) + "-0"
	}
	return strconv.FormatUint(p.ms, 10) + "-" + strconv.FormatUint(p.seq+1, 10)
}

// retry runs op until it succeeds, fails for good, ctx is done, or retry_timeout passes, with exponential
// backoff (50ms doubling to 2s) between attempts. Connection errors, timeouts and a server that is
// loading its data or failing over are retried; other server replies and certificate errors are not.
func (b *Buffer) retry(ctx context.Context, what string, op func() error) error {
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(50*time.Millisecond),
		backoff.WithMaxInterval(2*time.Second),
		backoff.WithMaxElapsedTime(b.cfg.RetryTimeout),
	)
	attempts := 0
	err := backoff.RetryNotify(func() error {
		attempts++
		err := op()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return backoff.Permanent(ctx.Err())
		}
		if !redisconn.Transient(err) {
			return backoff.Permanent(sdk.Permanent(err))
		}
		return err
	}, backoff.WithContext(bo, ctx), func(err error, wait time.Duration) {
		if attempts == 1 || attempts%10 == 0 {
			b.log.Warn("redis: "+what+" failed; retrying", slog.String("error", err.Error()),
				slog.Int("attempt", attempts), slog.Duration("wait", wait))
		}
	})
	if err == nil {
		if attempts > 1 {
			b.log.Info("redis: "+what+" succeeded after retrying", slog.Int("attempts", attempts))
		}
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if !errors.Is(err, sdk.ErrPermanent) { // still failing when retry_timeout ran out
		n := "attempts"
		if attempts == 1 {
			n = "attempt"
		}
		return fmt.Errorf("redis: %s: %w (gave up after %d %s over retry_timeout, %s)", what, err, attempts, n, b.cfg.RetryTimeout)
	}
	return fmt.Errorf("redis: %s: %w", what, err)
}
