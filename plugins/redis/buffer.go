package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// appendScript appends entries and stores the checkpoint in one step.
//
// KEYS: stream, meta. ARGV: fencing token (refused when below the one meta holds, see fenceScript), the
// checkpoint the caller believes is stored ("" for none), the new checkpoint, then one encoded record per entry. Each entry has the fields r (the record) and c (the
// total bytes of records appended to the stream up to and including this one, used to count the bytes
// held after a trim). Returns {entries, bytes} held after the append.
//
// The checkpoint compare-and-set makes a retried append idempotent: when the reply of an applied script
// was lost (a connection cut, a Redis restart after the fsync), the retry finds the new checkpoint
// already stored and appends nothing.
var appendScript = goredis.NewScript(`
local token = tonumber(ARGV[1])
local held = tonumber(redis.call('HGET', KEYS[2], 'fence') or '-1')
if token < held then
  return redis.error_reply('FENCED ' .. string.format('%d', held))
end
local cur = redis.call('HGET', KEYS[2], 'pos') or ''
if cur ~= ARGV[2] then
  if cur == ARGV[3] then
    return {redis.call('XLEN', KEYS[1]), -1}
  end
  return redis.error_reply('CONFLICT checkpoint')
end
local total = tonumber(redis.call('HGET', KEYS[2], 'appended') or '0')
for i = 4, #ARGV do
  total = total + #ARGV[i]
  redis.call('XADD', KEYS[1], '*', 'r', ARGV[i], 'c', string.format('%d', total))
end
redis.call('HSET', KEYS[2], 'pos', ARGV[3], 'fence', ARGV[1], 'appended', string.format('%d', total))
local acked = tonumber(redis.call('HGET', KEYS[2], 'acked_bytes') or '0')
return {redis.call('XLEN', KEYS[1]), total - acked}
`)

// ackScript trims the stream through an entry and records the bytes that leaves.
//
// KEYS: stream, meta. ARGV: the acknowledged entry's ID, the smallest ID after it, the fencing token
// (refused when below the one meta holds). Returns {entries, bytes} held after the trim.
var ackScript = goredis.NewScript(`
local held = tonumber(redis.call('HGET', KEYS[2], 'fence') or '-1')
if tonumber(ARGV[3]) < held then
  return redis.error_reply('FENCED ' .. string.format('%d', held))
end
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e > 0 then
  local f = e[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'c' then redis.call('HSET', KEYS[2], 'acked_bytes', f[i + 1]) end
  end
end
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[2])
local m = redis.call('HMGET', KEYS[2], 'appended', 'acked_bytes')
return {redis.call('XLEN', KEYS[1]), tonumber(m[1] or '0') - tonumber(m[2] or '0')}
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

// fillScript returns {entries, bytes} held. KEYS: stream, meta.
var fillScript = goredis.NewScript(`
local m = redis.call('HMGET', KEYS[2], 'appended', 'acked_bytes')
return {redis.call('XLEN', KEYS[1]), tonumber(m[1] or '0') - tonumber(m[2] or '0')}
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
	stored  string   // the checkpoint this instance last stored or read ("" for none)
	checked bool     // stored has been read
	args    []any    // the append script's arguments, reused
	scratch [][]byte // encoded records, reused
	owners  []int    // owners[i]: the index in the batch of the record scratch[i] encodes

	// Read's state (one goroutine).
	lastRead string          // ID of the last entry Read returned
	arena    []byte          // the bytes of the records Read last returned
	out      []record.Record // Read's result, reused

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
	b.lastRead = "0-0"
	req.Metrics.BufferFill(b.fill)
	if len(req.After) > 0 {
		if _, _, err := parseID(string(req.After)); err != nil {
			return invalid("the position to resume after, %q, is not a stream ID: %v", req.After, err)
		}
		b.lastRead = string(req.After)
	}
	if err := b.retry(ctx, "connect", func() error { return cfg.Explain(client.Ping(ctx).Err()) }); err != nil {
		return err
	}
	checkPersistence(ctx, client, b.log)
	if err := b.raiseFence(ctx); err != nil {
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
// appends nothing.
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
	b.scratch, b.owners = b.scratch[:0], b.owners[:0]
	for i := range batch.Records {
		r := &batch.Records[i]
		if r.Op == record.OpHeartbeat {
			continue
		}
		// The entry's ID is the buffer position; the source position is not stored per record.
		e := *r
		e.Position = nil
		var buf []byte
		if len(b.scratch) < cap(b.scratch) {
			buf = b.scratch[:len(b.scratch)+1][len(b.scratch)][:0]
		}
		b.scratch = append(b.scratch, record.Append(buf, &e))
		b.owners = append(b.owners, i)
	}
	for start := 0; ; {
		n, err := b.waitRoom(ctx, b.scratch[start:])
		if err != nil {
			return err
		}
		pos := batch.Position
		if start+n < len(b.scratch) {
			// A part: it ends at a record whose own source position can be resumed after. Records
			// without one cannot end a part; the part then grows to the next that has one.
			for ; start+n < len(b.scratch); n++ {
				p := batch.Records[b.owners[start+n-1]].Position
				if len(p) > 0 && string(p) != b.stored {
					pos = p
					break
				}
			}
		}
		if err := b.appendPart(ctx, b.scratch[start:start+n], pos); err != nil {
			return err
		}
		start += n
		if start == len(b.scratch) {
			return nil
		}
	}
}

// appendPart runs the append script for entries and the checkpoint pos.
func (b *Buffer) appendPart(ctx context.Context, entries [][]byte, pos record.Position) error {
	b.args = append(b.args[:0], b.fence, b.stored, string(pos))
	for _, e := range entries {
		b.args = append(b.args, e)
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
	b.stored = string(pos)
	if len(held) == 2 && held[1] >= 0 {
		b.setFill(held[0], held[1], false)
		return nil
	}
	// A retried append that had been applied: the counters did not change with it.
	return b.refreshFill(ctx)
}

// waitRoom blocks until a useful part of entries fits under the bounds — all of them, or at least a
// sixteenth of max_entries — and returns how many of the leading entries fit (at least one, even alone
// above a bound, once the buffer is empty). It returns early when ctx is done or the buffer is closed.
func (b *Buffer) waitRoom(ctx context.Context, entries [][]byte) (int, error) {
	if len(entries) == 0 {
		return 0, nil
	}
	want := len(entries)
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
		for _, e := range entries {
			if b.entries+int64(n) > 0 &&
				(b.cfg.MaxEntries > 0 && b.entries+int64(n)+1 > b.cfg.MaxEntries ||
					b.cfg.MaxBytes > 0 && size+int64(len(e)) > b.cfg.MaxBytes) {
				break
			}
			n++
			size += int64(len(e))
		}
		if n >= want || n == len(entries) || (n > 0 && b.cfg.MaxEntries == 0) {
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

// Read returns the entries after the last one returned (initially after OpenRequest.After), at most
// MaxBatchRecords, with their stream IDs as positions. With none there it waits up to 500ms, then
// returns none. The records stay valid until the next Read.
func (b *Buffer) Read(ctx context.Context) ([]record.Record, error) {
	var streams []goredis.XStream
	err := b.retry(ctx, "read", func() error {
		var err error
		streams, err = b.client.XRead(ctx, &goredis.XReadArgs{
			Streams: []string{b.stream, b.lastRead}, Count: b.batch, Block: readBlock,
		}).Result()
		if errors.Is(err, goredis.Nil) {
			streams, err = nil, nil
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	b.out = b.out[:0]
	if len(streams) == 0 || len(streams[0].Messages) == 0 {
		return b.out, nil
	}
	msgs := streams[0].Messages
	size := 0
	for _, m := range msgs {
		r, _ := m.Values["r"].(string)
		size += len(m.ID) + len(r)
	}
	// The records alias one buffer per Read; go-redis's strings are copied into it once.
	if cap(b.arena) < size {
		b.arena = make([]byte, 0, size)
	}
	arena := b.arena[:0]
	for _, m := range msgs {
		r, ok := m.Values["r"].(string)
		if !ok {
			return nil, fmt.Errorf("redis: stream %s entry %s has no record field: not a sluice buffer entry", b.stream, m.ID)
		}
		start := len(arena)
		arena = append(arena, r...)
		out, err := record.Decode(b.out, arena[start:], 1)
		if err != nil {
			return nil, fmt.Errorf("redis: stream %s entry %s: %w", b.stream, m.ID, err)
		}
		start = len(arena)
		arena = append(arena, m.ID...)
		out[len(out)-1].Position = record.Position(arena[start:len(arena):len(arena)])
		b.out = out
	}
	b.arena = arena
	b.lastRead = msgs[len(msgs)-1].ID
	return b.out, nil
}

// Ack trims the stream through pos (the sink has stored everything up to it) and wakes a waiting
// Append.
func (b *Buffer) Ack(ctx context.Context, pos record.Position) error {
	ms, seq, err := parseID(string(pos))
	if err != nil {
		return fmt.Errorf("redis: ack for %q, not a stream ID: %w", pos, err)
	}
	next := strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq+1, 10)
	if seq == 1<<64-1 {
		next = strconv.FormatUint(ms+1, 10) + "-0"
	}
	var held []int64
	err = b.retry(ctx, "trim", func() error {
		var err error
		held, err = ackScript.Run(ctx, b.client, []string{b.stream, b.meta}, string(pos), next, b.fence).Int64Slice()
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

// parseID splits a stream ID "ms-seq".
func parseID(id string) (ms, seq uint64, err error) {
	a, c, ok := strings.Cut(id, "-")
	if !ok {
		return 0, 0, errors.New("want MILLISECONDS-SEQUENCE")
	}
	if ms, err = strconv.ParseUint(a, 10, 64); err != nil {
		return 0, 0, err
	}
	if seq, err = strconv.ParseUint(c, 10, 64); err != nil {
		return 0, 0, err
	}
	return ms, seq, nil
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
