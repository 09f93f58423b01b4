package redis_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/plugins/redis"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/sdk/sdktest"
	"github.com/sluicehq/sluice/services"
)

var pluginBinary string

func TestMain(m *testing.M) { sdktest.Main(m, "./cmd/redis", &pluginBinary) }

var keyN atomic.Int64

// freshKey names a buffer no other check uses.
func freshKey() string { return fmt.Sprintf("test:{k%d-%d}", time.Now().UnixNano(), keyN.Add(1)) }

func TestAcceptance(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	sdktest.Buffer(t, redis.Plugin(), sdktest.BufferConfig{
		Settings: func(*testing.T) map[string]any { return map[string]any{"addr": srv.Addr, "key": freshKey()} },
		Binary:   pluginBinary,
	})
}

func open(t *testing.T, settings map[string]any, after record.Position) (*redis.Buffer, *sdktest.Output) {
	t.Helper()
	b, logs, err := openFenced(t, settings, after, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b, logs
}

// openFenced opens a buffer as a host holding a lease with fencing token fence does (0: no lease), and
// reads its checkpoint; the buffer is closed when the test ends.
func openFenced(t *testing.T, settings map[string]any, after record.Position, fence int64) (*redis.Buffer, *sdktest.Output, error) {
	t.Helper()
	return openBatch(t, settings, after, fence, 100)
}

// openBatch is openFenced for a host whose batches hold at most maxBatch records.
func openBatch(t *testing.T, settings map[string]any, after record.Position, fence int64, maxBatch int) (*redis.Buffer, *sdktest.Output, error) {
	t.Helper()
	logs := &sdktest.Output{}
	b := &redis.Buffer{}
	s := sdk.Settings{}
	for k, v := range settings {
		if n, ok := v.(int); ok {
			v = float64(n) // as JSON delivers numbers
		}
		s[k] = v
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	err := b.Open(context.Background(), sdk.OpenRequest{Pipeline: "test", Settings: s, After: after, MaxBatchRecords: maxBatch,
		Logger: slog.New(slog.NewTextHandler(logs, nil)), Fence: fence})
	if err != nil {
		return nil, logs, err
	}
	if _, err := b.Checkpoint(context.Background()); err != nil {
		return nil, logs, err
	}
	return b, logs, nil
}

// batch returns n records with payloads first..first+n-1 and the source position of the last one.
func batch(first, n int) record.Batch {
	recs := make([]record.Record, n)
	for i := range recs {
		recs[i] = record.Record{Position: record.Position(strconv.Itoa(first + i)), Op: record.OpInsert,
			Key: []byte("k"), Payload: []byte(strconv.Itoa(first + i)), Meta: record.Meta{{Key: "m", Value: "v"}}}
	}
	return record.Batch{Records: recs, Position: record.Position(strconv.Itoa(first + n - 1))}
}

// readN reads until n records have arrived.
func readN(t *testing.T, b *redis.Buffer, n int) []record.Record {
	t.Helper()
	var got []record.Record
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < n {
		if time.Now().After(deadline) {
			t.Fatalf("read %d records, want %d", len(got), n)
		}
		recs, err := b.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			r.Position, r.Payload, r.Key = r.Position.Clone(), bytes.Clone(r.Payload), bytes.Clone(r.Key)
			got = append(got, r)
		}
	}
	return got
}

func checkPayloads(t *testing.T, got []record.Record, first int) {
	t.Helper()
	for i, r := range got {
		if want := strconv.Itoa(first + i); string(r.Payload) != want || string(r.Key) != "k" || r.Op != record.OpInsert {
			t.Fatalf("record %d: payload %q key %q op %v, want payload %q", i, r.Payload, r.Key, r.Op, want)
		}
		if v, _ := r.Meta.Get("m"); v != "v" {
			t.Fatalf("record %d lost its metadata: %v", i, r.Meta)
		}
	}
}

func TestBackpressure(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	for _, tc := range []struct {
		name      string
		settings  map[string]any
		fill      int // records appended first
		next      int // records in the batch that must wait
		ackAt     int // index of the record acked first, which does not make enough room
		firstPart int // records of the next batch stored before it blocks
	}{
		{"max_entries", map[string]any{"max_entries": 10, "max_bytes": 0}, 10, 3, 0, 0},
		// Records 0-9 encode to 12 bytes each here, 10-11 to 13: 108 held after the first ack, +26 > 125.
		{"max_bytes", map[string]any{"max_entries": 0, "max_bytes": 125}, 10, 2, -1, 0},
		// A batch above the bound is stored in parts, each with the source position of its last record.
		{"batch larger than the bound", map[string]any{"max_entries": 10, "max_bytes": 0}, 4, 12, -1, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := freshKey()
			tc.settings["addr"], tc.settings["key"] = srv.Addr, key
			b, logs := open(t, tc.settings, nil)
			ctx := context.Background()
			if err := b.Append(ctx, batch(0, tc.fill)); err != nil {
				t.Fatal(err)
			}
			got := readN(t, b, tc.fill)
			done := make(chan error, 1)
			go func() { done <- b.Append(ctx, batch(tc.fill, tc.next)) }()
			select {
			case err := <-done:
				t.Fatalf("Append returned (%v) while the buffer is full", err)
			case <-time.After(300 * time.Millisecond):
			}
			if !strings.Contains(logs.String(), "buffer full") {
				t.Fatalf("no warning while full:\n%s", logs)
			}
			if want := strconv.Itoa(tc.fill + tc.firstPart - 1); tc.firstPart > 0 {
				if cp, _ := b.Checkpoint(ctx); string(cp) != want {
					t.Fatalf("checkpoint %q after the first part, want %q (its last record's)", cp, want)
				}
			}
			if tc.ackAt >= 0 {
				if err := b.Ack(ctx, got[tc.ackAt].Position); err != nil {
					t.Fatal(err)
				}
				select {
				case err := <-done:
					t.Fatalf("Append returned (%v) after an ack that does not make enough room", err)
				case <-time.After(300 * time.Millisecond):
				}
			}
			// The sink catches up: everything arrives, in order, and Append returns.
			for len(got) < tc.fill+tc.next {
				if err := b.Ack(ctx, got[len(got)-1].Position); err != nil {
					t.Fatal(err)
				}
				recs, err := b.Read(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range recs {
					r.Position, r.Payload, r.Key = r.Position.Clone(), bytes.Clone(r.Payload), bytes.Clone(r.Key)
					got = append(got, r)
				}
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Append still blocked after everything was read")
			}
			checkPayloads(t, got, 0)
			if cp, _ := b.Checkpoint(ctx); string(cp) != strconv.Itoa(tc.fill+tc.next-1) {
				t.Fatalf("checkpoint %q, want the last batch's", cp)
			}
		})
	}
}

func TestAppendCancelledWhileFull(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	b, _ := open(t, map[string]any{"addr": srv.Addr, "key": freshKey(), "max_entries": 2}, nil)
	if err := b.Append(context.Background(), batch(0, 2)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := b.Append(ctx, batch(2, 1)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Append = %v, want the context's error", err)
	}
	if cp, _ := b.Checkpoint(context.Background()); string(cp) != "1" {
		t.Fatalf("a cancelled Append moved the checkpoint to %q", cp)
	}
}

// TestReopen: entries read and not acked are read again by a new instance opened after the last acked
// one, with the same positions; acked ones are trimmed; heartbeats and position-only batches move the
// checkpoint without storing entries.
func TestReopen(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	key := freshKey()
	b, _ := open(t, map[string]any{"addr": srv.Addr, "key": key}, nil)
	ctx := context.Background()
	bt := batch(0, 5)
	bt.Records = append(bt.Records, record.Record{Op: record.OpHeartbeat, Position: record.Position("h")})
	bt.Position = record.Position("h")
	if err := b.Append(ctx, bt); err != nil {
		t.Fatal(err)
	}
	if err := b.Append(ctx, record.Batch{Position: record.Position("p")}); err != nil {
		t.Fatal(err)
	}
	got := readN(t, b, 5)
	checkPayloads(t, got, 0)
	if err := b.Ack(ctx, got[1].Position); err != nil {
		t.Fatal(err)
	}
	_ = b.Close(ctx)

	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer client.Close()
	// The five records are one entry, which stays until its last record is stored.
	if n, _ := client.XLen(ctx, key).Result(); n != 1 {
		t.Fatalf("%d entries after acking 2 of 5 appended at once, want 1", n)
	}
	if n := heldRecords(t, client, key); n != 3 {
		t.Fatalf("%d records held after acking 2 of 5, want 3", n)
	}
	b2, _ := open(t, map[string]any{"addr": srv.Addr, "key": key}, got[2].Position)
	if cp, _ := b2.Checkpoint(ctx); string(cp) != "p" {
		t.Fatalf("checkpoint %q after reopening, want p", cp)
	}
	if n := heldRecords(t, client, key); n != 2 {
		t.Fatalf("%d records held after reopening after the third, want 2 (the sink stored the third)", n)
	}
	rest := readN(t, b2, 2)
	checkPayloads(t, rest, 3)
	for i, r := range rest {
		if !r.Position.Equal(got[3+i].Position) {
			t.Fatalf("record %d has position %s, was %s", 3+i, r.Position, got[3+i].Position)
		}
	}
}

// TestFencing: a buffer opened under a lease stores the lease's fencing token, and from then on an
// instance holding an older token (a host that lost the lease while frozen) cannot append, trim or even
// open it; nor can a host without a lease. Two instances under the same token are kept apart by the
// checkpoint compare-and-set. Nothing a refused instance does changes the stream or the checkpoint.
func TestFencing(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	key := freshKey()
	ctx := context.Background()
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer client.Close()
	settings := map[string]any{"addr": srv.Addr, "key": key}

	old, _, err := openFenced(t, settings, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Append(ctx, batch(0, 2)); err != nil {
		t.Fatal(err)
	}
	same, _, err := openFenced(t, settings, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Append(ctx, batch(2, 2)); err != nil {
		t.Fatal(err)
	}
	if err := same.Append(ctx, batch(4, 2)); !errors.Is(err, redis.ErrConflict) {
		t.Fatalf("Append of a second instance with the same token = %v, want ErrConflict", err)
	}

	// A new holder of the lease opens the buffer: its token fences the old one at once, before it
	// appends anything.
	cur, logs, err := openFenced(t, settings, nil, 200)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "fences the buffer's earlier holder") {
		t.Errorf("the new holder did not log that it fenced the old one:\n%s", logs)
	}
	read := readN(t, cur, 4)
	first := read[0].Position.Clone()
	for what, err := range map[string]error{
		"Append": old.Append(ctx, batch(4, 2)),
		"Ack":    old.Ack(ctx, first),
	} {
		if !errors.Is(err, redis.ErrFenced) || !errors.Is(err, sdk.ErrPermanent) || !strings.Contains(err.Error(), "older than") {
			t.Fatalf("%s of the fenced instance = %v, want ErrFenced, permanent", what, err)
		}
	}
	if _, _, err := openFenced(t, settings, nil, 150); !errors.Is(err, redis.ErrFenced) || !errors.Is(err, sdk.ErrPermanent) {
		t.Fatalf("Open with an older token = %v, want ErrFenced, permanent", err)
	}
	if _, _, err := openFenced(t, settings, nil, 0); !errors.Is(err, redis.ErrFenced) || !strings.Contains(err.Error(), "HDEL "+key+":meta fence") {
		t.Fatalf("Open without a lease = %v, want ErrFenced saying how to remove the token", err)
	}
	if cp, _ := cur.Checkpoint(ctx); string(cp) != "3" {
		t.Fatalf("refused calls moved the checkpoint to %q", cp)
	}
	if n, _ := client.XLen(ctx, key).Result(); n != 2 || heldRecords(t, client, key) != 4 {
		t.Fatalf("refused calls changed the stream: %d entries holding %d records, want 2 holding 4", n, heldRecords(t, client, key))
	}
	if f, _ := client.HGet(ctx, key+":meta", "fence").Result(); f != "200" {
		t.Fatalf("the buffer holds fencing token %q, want 200", f)
	}
	// The holder works on.
	if err := cur.Append(ctx, batch(4, 2)); err != nil {
		t.Fatal(err)
	}
	if err := cur.Ack(ctx, first); err != nil {
		t.Fatal(err)
	}
	if n := heldRecords(t, client, key); n != 5 {
		t.Fatalf("%d records held after the holder's append and ack, want 5", n)
	}
}

func TestPersistenceWarnings(t *testing.T) {
	for _, tc := range []struct{ persistence, want string }{
		{"none", "Redis persistence is off"},
		{"rdb", "only RDB snapshots"},
		{"everysec", "appendfsync everysec"},
		{"always", "fsync on every write"},
	} {
		t.Run(tc.persistence, func(t *testing.T) {
			srv := services.StartRedis(t, services.RedisOptions{Persistence: tc.persistence})
			_, logs := open(t, map[string]any{"addr": srv.Addr, "key": freshKey()}, nil)
			if !strings.Contains(logs.String(), tc.want) {
				t.Fatalf("log lacks %q:\n%s", tc.want, logs)
			}
		})
	}
	t.Run("CONFIG refused", func(t *testing.T) {
		srv := services.StartRedis(t, services.RedisOptions{Args: []string{"--rename-command", "CONFIG", ""}})
		_, logs := open(t, map[string]any{"addr": srv.Addr, "key": freshKey()}, nil)
		if !strings.Contains(logs.String(), "cannot read the server's persistence settings") {
			t.Fatalf("no warning when CONFIG is refused:\n%s", logs)
		}
	})
}

// TestSurvivesRedisCrash kills redis-server (SIGKILL) between appends and while a read waits: with AOF
// appendfsync always, what it acknowledged is there after it restarts, and the buffer reconnects.
func TestSurvivesRedisCrash(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	b, logs := open(t, map[string]any{"addr": srv.Addr, "key": freshKey()}, nil)
	ctx := context.Background()
	if err := b.Append(ctx, batch(0, 50)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Crash(); err != nil {
		t.Fatal(err)
	}
	if err := b.Append(ctx, batch(50, 50)); err != nil {
		t.Fatal(err)
	}
	if cp, _ := b.Checkpoint(ctx); string(cp) != "99" {
		t.Fatalf("checkpoint %q after the crash, want 99", cp)
	}
	got := readN(t, b, 100)
	checkPayloads(t, got, 0)
	// A read waiting while Redis dies retries until it is back.
	done := make(chan error, 1)
	go func() {
		_, err := b.Read(ctx)
		done <- err
	}()
	if err := srv.Crash(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Read across a Redis restart: %v\n%s", err, logs)
	}
}

func TestSettings(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings map[string]any
		want     string
	}{
		{"negative bound", map[string]any{"max_entries": -1}, `setting "max_entries": want an int >= 0, got -1`},
		{"bad url", map[string]any{"url": "http://x"}, "url"},
		{"cert without key", map[string]any{"tls_cert_file": "/x"}, "go together"},
		{"missing CA file", map[string]any{"tls_ca_file": "/nonexistent/ca.pem"}, "tls_ca_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &redis.Buffer{}
			s := sdk.Settings{}
			for k, v := range tc.settings {
				if n, ok := v.(int); ok {
					v = float64(n)
				}
				s[k] = v
			}
			err := b.Open(context.Background(), sdk.OpenRequest{Pipeline: "p", Settings: s})
			if !errors.Is(err, sdk.ErrInvalidSettings) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open = %v, want an invalid-settings error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestACL connects as an ACL user, by settings and by url; a wrong password fails Open at once (it is not
// an outage to retry).
func TestACL(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{Password: "admin", Args: []string{
		"--user", "sluice", "on", ">s3cret", "~test:*", "+@all"}})
	for _, tc := range []struct {
		name     string
		settings map[string]any
		ok       bool
	}{
		{"settings", map[string]any{"addr": srv.Addr, "username": "sluice", "password": "s3cret"}, true},
		{"url", map[string]any{"url": "redis://sluice:s3cret@" + srv.Addr + "/0"}, true},
		{"wrong password", map[string]any{"addr": srv.Addr, "username": "sluice", "password": "nope"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.settings["key"] = freshKey()
			b := &redis.Buffer{}
			defer b.Close(context.Background())
			start := time.Now()
			err := b.Open(context.Background(), sdk.OpenRequest{Pipeline: "p", Settings: tc.settings})
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				if err := b.Append(context.Background(), batch(0, 3)); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "WRONGPASS") || time.Since(start) > 5*time.Second {
				t.Fatalf("Open = %v after %v, want WRONGPASS at once", err, time.Since(start))
			}
			if !errors.Is(err, sdk.ErrPermanent) {
				t.Fatalf("Open = %v: a wrong password must be a permanent error, not retried", err)
			}
		})
	}
}

// TestOpenUnreachable: Open against a port nothing listens on retries for retry_timeout, then fails with
// a transient error that names the server and the settings to check.
func TestOpenUnreachable(t *testing.T) {
	addr := services.RefusedAddr(t)
	b := &redis.Buffer{}
	defer b.Close(context.Background())
	err := b.Open(context.Background(), sdk.OpenRequest{Pipeline: "p",
		Settings: sdk.Settings{"addr": addr, "retry_timeout": "300ms"}})
	want := "redis: connect: " + addr + " refused the connection: is Redis running there, and is addr right? (gave up after "
	if err == nil || !strings.Contains(err.Error(), want) || !strings.HasSuffix(err.Error(), "over retry_timeout, 300ms)") {
		t.Fatalf("Open = %v, want %q… naming retry_timeout", err, want)
	}
	if errors.Is(err, sdk.ErrPermanent) {
		t.Fatalf("Open = %v: an unreachable server must be a transient error", err)
	}
}

// heldRecords is the number of records the buffer at key holds, from its counters.
func heldRecords(t *testing.T, client *goredis.Client, key string) int64 {
	t.Helper()
	m, err := client.HMGet(context.Background(), key+":meta", "records", "acked_records").Result()
	if err != nil {
		t.Fatal(err)
	}
	var n [2]int64
	for i, v := range m {
		if s, ok := v.(string); ok {
			n[i], _ = strconv.ParseInt(s, 10, 64)
		}
	}
	return n[0] - n[1]
}

// TestEntriesOfManyRecords: an append stores a batch as entries of at most a host batch of records; a
// host with smaller batches reads an entry over several Reads, with one position per record, acknowledges
// part of an entry, and a new instance opened after a record inside an entry reads on from the next one.
func TestEntriesOfManyRecords(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	key := freshKey()
	settings := map[string]any{"addr": srv.Addr, "key": key}
	ctx := context.Background()
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer client.Close()

	w, _, err := openBatch(t, settings, nil, 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(ctx, batch(0, 10)); err != nil {
		t.Fatal(err)
	}
	if n, _ := client.XLen(ctx, key).Result(); n != 3 {
		t.Fatalf("10 records appended by a host of 4-record batches: %d entries, want 3 (4, 4, 2)", n)
	}

	r, _, err := openBatch(t, settings, nil, 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	var got []record.Record
	for len(got) < 10 {
		recs, err := r.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) > 3 {
			t.Fatalf("Read returned %d records, more than the host's batch of 3", len(recs))
		}
		for _, rec := range recs {
			rec.Position, rec.Payload, rec.Key = rec.Position.Clone(), bytes.Clone(rec.Payload), bytes.Clone(rec.Key)
			got = append(got, rec)
		}
	}
	checkPayloads(t, got, 0)
	seen := map[string]bool{}
	for i, rec := range got {
		if seen[string(rec.Position)] {
			t.Fatalf("record %d has the position %s of an earlier one", i, rec.Position)
		}
		seen[string(rec.Position)] = true
		last := i == 3 || i == 7 || i == 9 // the last record of each entry
		if dotted := bytes.ContainsRune(rec.Position, '.'); dotted == last {
			t.Fatalf("record %d has position %s: want the entry's ID for its last record, ID.INDEX otherwise", i, rec.Position)
		}
	}
	if err := r.Ack(ctx, got[5].Position); err != nil {
		t.Fatal(err)
	}
	if n, _ := client.XLen(ctx, key).Result(); n != 2 || heldRecords(t, client, key) != 4 {
		t.Fatalf("after acking 6 of 10: %d entries holding %d records, want 2 holding 4", n, heldRecords(t, client, key))
	}

	again, _, err := openBatch(t, settings, got[5].Position, 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	rest := readN(t, again, 4)
	checkPayloads(t, rest, 6)
	for i, rec := range rest {
		if !rec.Position.Equal(got[6+i].Position) {
			t.Fatalf("record %d read again has position %s, was %s", 6+i, rec.Position, got[6+i].Position)
		}
	}
	if err := again.Ack(ctx, rest[3].Position); err != nil {
		t.Fatal(err)
	}
	if n, _ := client.XLen(ctx, key).Result(); n != 0 || heldRecords(t, client, key) != 0 {
		t.Fatalf("after acking all: %d entries holding %d records, want none", n, heldRecords(t, client, key))
	}
	if _, _, err := openBatch(t, settings, record.Position("1-2.x"), 0, 3); !errors.Is(err, sdk.ErrInvalidSettings) {
		t.Fatalf("Open after a malformed position = %v, want ErrInvalidSettings", err)
	}
}

// TestEntriesOfEarlierVersions: a stream written by a sluice that stored one record per entry (field r)
// and kept no record counters drains unchanged: its records are read in order with their entry IDs as
// positions and counted, then records appended now follow them.
func TestEntriesOfEarlierVersions(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	key := freshKey()
	ctx := context.Background()
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer client.Close()
	total := 0
	var ids []string
	for i := range 3 {
		e := record.Append(nil, &record.Record{Op: record.OpInsert, Key: []byte("k"), Payload: []byte(strconv.Itoa(i)),
			Meta: record.Meta{{Key: "m", Value: "v"}}})
		total += len(e)
		id, err := client.XAdd(ctx, &goredis.XAddArgs{Stream: key, Values: []any{"r", e, "c", strconv.Itoa(total)}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := client.HSet(ctx, key+":meta", "pos", "2", "appended", strconv.Itoa(total)).Err(); err != nil {
		t.Fatal(err)
	}

	b, _ := open(t, map[string]any{"addr": srv.Addr, "key": key}, nil)
	if entries, _ := b.Fill(); entries != 3 {
		t.Fatalf("a buffer of 3 one-record entries reports %d records held", entries)
	}
	if err := b.Append(ctx, batch(3, 2)); err != nil {
		t.Fatal(err)
	}
	got := readN(t, b, 5)
	checkPayloads(t, got, 0)
	for i, id := range ids {
		if string(got[i].Position) != id {
			t.Fatalf("record %d of the earlier version has position %s, want its entry ID %s", i, got[i].Position, id)
		}
	}
	if err := b.Ack(ctx, got[1].Position); err != nil {
		t.Fatal(err)
	}
	if n := heldRecords(t, client, key); n != 3 {
		t.Fatalf("%d records held after acking 2 of 5, want 3", n)
	}
	if err := b.Ack(ctx, got[4].Position); err != nil {
		t.Fatal(err)
	}
	if n, _ := client.XLen(ctx, key).Result(); n != 0 || heldRecords(t, client, key) != 0 {
		t.Fatalf("after acking all: %d entries, %d records held; want none", n, heldRecords(t, client, key))
	}
	if entries, bytes := b.Fill(); entries != 0 || bytes != 0 {
		t.Fatalf("after acking all the buffer reports %d records, %d bytes held", entries, bytes)
	}
}

// TestAppendWithoutPosition: a batch without position (sluice verify --repair's) is stored after what is
// there and read in order, and leaves the checkpoint as it was, so that the instance running the pipeline
// (same fencing token) appends on without a conflict.
func TestAppendWithoutPosition(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	settings := map[string]any{"addr": srv.Addr, "key": freshKey()}
	ctx := context.Background()
	running, _, err := openFenced(t, settings, nil, 7)
	if err != nil {
		t.Fatal(err)
	}
	if err := running.Append(ctx, batch(0, 2)); err != nil {
		t.Fatal(err)
	}
	repair, _, err := openFenced(t, settings, nil, 7)
	if err != nil {
		t.Fatal(err)
	}
	rb := batch(2, 2)
	for i := range rb.Records {
		rb.Records[i].Position = nil
	}
	rb.Position = nil
	if err := repair.Append(ctx, rb); err != nil {
		t.Fatal(err)
	}
	if cp, _ := repair.Checkpoint(ctx); string(cp) != "1" {
		t.Fatalf("checkpoint %q after a batch without position, want 1 (unchanged)", cp)
	}
	if err := running.Append(ctx, batch(4, 2)); err != nil {
		t.Fatalf("the running instance's next append: %v", err)
	}
	if cp, _ := running.Checkpoint(ctx); string(cp) != "5" {
		t.Fatalf("checkpoint %q, want 5", cp)
	}
	checkPayloads(t, readN(t, running, 6), 0)
}
