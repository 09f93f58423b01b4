package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// message is what the checks need of a Kafka record.
type message struct {
	topic     string
	partition int32
	offset    int64
	key       string
	id        string // the record's identity (see idOf); "" when it has none
}

// expectation is what must arrive: per record id, its key and its place among its key's records.
type expectation struct {
	ids map[string]expected
}

type expected struct {
	key   string
	index int
}

func newExpectation() *expectation { return &expectation{ids: map[string]expected{}} }

// add expects ids under key, in this order, after those added for key before.
func (e *expectation) add(key string, start int, ids ...string) {
	for i, id := range ids {
		e.ids[id] = expected{key: key, index: start + i}
	}
}

// verdict is what the consumer found.
type verdict struct {
	records    int // records expected
	lost       int // expected records not found
	duplicated int // copies beyond the first
	reordered  int // records whose first copy came after the first copy of a later record of their key
	unexpected int // records no change and no generated record explains, or under the wrong key
	examples   []string
}

func (v *verdict) example(format string, args ...any) {
	if len(v.examples) < 12 {
		v.examples = append(v.examples, fmt.Sprintf(format, args...))
	}
}

// check compares what a read_committed consumer read with what was expected. Records are taken in offset
// order per partition (a key lives in one partition). Order is judged per key on first copies: a
// redelivered copy arriving later is a duplicate, not a reorder.
func check(e *expectation, msgs []message) verdict {
	msgs = slices.Clone(msgs)
	sort.Slice(msgs, func(i, j int) bool {
		a, b := msgs[i], msgs[j]
		if a.topic != b.topic {
			return a.topic < b.topic
		}
		if a.partition != b.partition {
			return a.partition < b.partition
		}
		return a.offset < b.offset
	})
	v := verdict{records: len(e.ids)}
	count := map[string]int{}
	high := map[string]int{} // per key: the highest place among first copies so far
	for _, m := range msgs {
		want, ok := e.ids[m.id]
		if !ok || want.key != m.key {
			v.unexpected++
			v.example("unexpected: %s/%d@%d key %q id %q", m.topic, m.partition, m.offset, m.key, m.id)
			continue
		}
		count[m.id]++
		if count[m.id] > 1 {
			v.duplicated++
			v.example("duplicate: %s (copy %d at %s/%d@%d)", m.id, count[m.id], m.topic, m.partition, m.offset)
			continue
		}
		if h, seen := high[m.key]; seen && want.index < h {
			v.reordered++
			v.example("reordered: %s (place %d of key %q) after place %d, at %s/%d@%d", m.id, want.index, m.key, h, m.topic, m.partition, m.offset)
			continue
		}
		high[m.key] = want.index
	}
	var lost []string
	for id := range e.ids {
		if count[id] == 0 {
			lost = append(lost, id)
		}
	}
	sort.Strings(lost)
	v.lost = len(lost)
	for _, id := range lost[:min(len(lost), 5)] {
		v.example("lost: %s", id)
	}
	return v
}

// idOf returns a record's identity: for the MongoDB pipeline the document key and the version header
// ("m0000042@3", "m0000042@del"), for the generate pipeline the payload's seq ("g1234"); "" for a record
// that has none.
func idOf(r *kgo.Record, mongoTopic string) string {
	if r.Topic == mongoTopic {
		for _, h := range r.Headers {
			if h.Key == versionHeader {
				return string(r.Key) + "@" + string(h.Value)
			}
		}
		return ""
	}
	var p struct {
		Seq *int64 `json:"seq"`
	}
	if json.Unmarshal(r.Value, &p) != nil || p.Seq == nil {
		return ""
	}
	return "g" + strconv.FormatInt(*p.Seq, 10)
}

// consumer is a read_committed consumer of the harness's topics that counts distinct record ids as they
// arrive: the progress the kill loop and the status lines go by.
type consumer struct {
	cl     *kgo.Client
	mongo  string
	mu     sync.Mutex
	seen   map[string]struct{}
	done   chan struct{}
	cancel context.CancelFunc
}

func newConsumer(brokers, topics []string, mongoTopic string) (*consumer, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(500*time.Millisecond))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &consumer{cl: cl, mongo: mongoTopic, seen: map[string]struct{}{}, done: make(chan struct{}), cancel: cancel}
	go c.loop(ctx)
	return c, nil
}

func (c *consumer) loop(ctx context.Context) {
	defer close(c.done)
	for ctx.Err() == nil {
		fs := c.cl.PollFetches(ctx)
		c.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			if id := idOf(r, c.mongo); id != "" {
				c.seen[id] = struct{}{}
			}
		})
		c.mu.Unlock()
	}
}

// Distinct returns how many distinct record ids arrived so far.
func (c *consumer) Distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// Close stops the consumer.
func (c *consumer) Close() {
	c.cancel()
	<-c.done
	c.cl.Close()
}

// readAll reads every committed record of topics from the start with a fresh read_committed consumer,
// until no record has arrived for idle. ctx bounds the whole read.
func readAll(ctx context.Context, brokers, topics []string, mongoTopic string, idle time.Duration) ([]message, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(500*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var out []message
	last := time.Now()
	for time.Since(last) < idle {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return out, fmt.Errorf("reading the topics back: %w after %d records", ctx.Err(), len(out))
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				ferr = fmt.Errorf("reading %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return out, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, message{topic: r.Topic, partition: r.Partition, offset: r.Offset, key: string(r.Key), id: idOf(r, mongoTopic)})
			last = time.Now()
		})
	}
	return out, nil
}
