package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// verifyBatch is how many records Verify hands to emit at a time.
const verifyBatch = 1000

// Verify emits, for `sluice verify`, the last committed message per key of the topics the pipeline writes
// to: the topic setting (when set) and every topic of req.Routes, each read whole, from its first offset
// to the end it had when Verify began (so it ends while producers keep writing), with a read_committed
// consumer of its own: no consumer group, no committed offsets, no producer, so a running sink is not
// disturbed (nothing fenced, no transaction touched). A message becomes a record with the message's key,
// its value as payload (Op snapshot), its headers as metadata (as the sink writes the metadata named in
// headers) and its timestamp as Time (the sink writes no event time: it is when the message was produced,
// or appended on topics with message.timestamp.type LogAppendTime); a tombstone (no value) becomes a
// record with Op delete and no payload. Records read from a route topic other than the topic setting
// carry it in record.MetaRoute. Messages without a key are left out (and counted in the log). With
// req.Keys, only the records of those keys (the topics are read whole all the same).
//
// The result's Position is the pipeline's checkpoint: the last committed progress message of its
// transactional id (read as Checkpoint reads it, before the topics, so the records hold at least what
// it accounts for), nil without one or with transactional: false. Destination is the topic setting,
// Time the latest message timestamp read.
//
// The topic setting naming a topic that does not exist is an invalid-settings error (unless
// auto_create_topics is on: then nothing was written yet); a route topic that does not exist holds no
// record, which the log says.
func (*Sink) Verify(ctx context.Context, req sdk.VerifyRequest, emit func([]record.Record) error) (sdk.VerifyResult, error) {
	cfg, err := ParseConfig(req.Settings, req.Pipeline)
	if err != nil {
		return sdk.VerifyResult{}, err
	}
	log := req.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts, err := cfg.connOpts(log)
	if err != nil {
		return sdk.VerifyResult{}, fmt.Errorf("%w: %w", sdk.ErrInvalidSettings, err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return sdk.VerifyResult{}, fmt.Errorf("%w: kafka: %w", sdk.ErrInvalidSettings, err)
	}
	defer cl.Close()
	v := &verifier{cfg: &cfg, log: log, cl: cl, opts: opts, emit: emit, keys: req.KeySet()}
	res, err := v.verify(ctx, req.Routes)
	res.Destination = cfg.Topic
	if err != nil && ctx.Err() == nil {
		err = v.classify(err)
	}
	return res, err
}

// verifier is one Verify's read.
type verifier struct {
	cfg  *Config
	log  *slog.Logger
	cl   *kgo.Client // metadata, offsets and the progress topic; it produces nothing
	opts []kgo.Opt   // the connection options, for the consumer
	emit func([]record.Record) error
	keys map[string]bool // req.Keys; nil: every key

	last    map[string]map[string]record.Record // topic → key → its last record
	latest  time.Time                           // the latest message timestamp read
	keyless int                                 // messages without a key, left out
}

func (v *verifier) verify(ctx context.Context, routes []string) (sdk.VerifyResult, error) {
	var res sdk.VerifyResult
	topics, err := v.topics(ctx, routes)
	if err != nil {
		return res, err
	}
	if res.Position, err = v.checkpoint(ctx); err != nil {
		return res, err
	}
	if err := v.read(ctx, topics); err != nil {
		return res, err
	}
	if v.keyless > 0 {
		v.log.Info("kafka: verify left out the messages without a key", "messages", v.keyless)
	}
	res.Time = v.latest
	return res, v.flush()
}

// topics returns the topics to read: the topic setting and the routes, once each, those that exist.
func (v *verifier) topics(ctx context.Context, routes []string) ([]string, error) {
	var ask []string
	if v.cfg.Topic != "" {
		ask = append(ask, v.cfg.Topic)
	}
	for _, r := range routes {
		if slices.Contains(ask, r) {
			continue
		}
		if err := checkTopic(r); err != nil {
			v.log.Warn("kafka: verify: a route that is not a Kafka topic name: the sink writes no record routed there (they go to the dead-letter sink)", "route", r, "err", err)
			continue
		}
		ask = append(ask, r)
	}
	if len(ask) == 0 {
		return nil, nil
	}
	infos, err := lookupTopics(ctx, v.cl, ask)
	if err == nil {
		err = confirmMissing(ctx, v.cl, infos, func(string) bool { return true })
	}
	if err != nil {
		return nil, fmt.Errorf("kafka: looking up topics %v at %s: %w", ask, v.cfg.brokerList(), err)
	}
	var out []string
	for _, t := range ask {
		switch i := infos[t]; {
		case i.err == nil:
			out = append(out, t)
		case errors.Is(i.err, kerr.UnknownTopicOrPartition) && t == v.cfg.Topic && v.cfg.AutoCreateTopics:
			v.log.Info("kafka: verify: the topic does not exist yet (the sink creates it with its first record): it holds no record", "topic", t)
		case errors.Is(i.err, kerr.UnknownTopicOrPartition) && t == v.cfg.Topic:
			return nil, sdk.InvalidSettings(fmt.Errorf("kafka: verify: topic %q (the topic setting) does not exist on the cluster at %s", t, v.cfg.brokerList()))
		case errors.Is(i.err, kerr.UnknownTopicOrPartition):
			v.log.Warn("kafka: verify: a topic the pipeline routes records to does not exist: it holds no record", "topic", t)
		default:
			return nil, fmt.Errorf("kafka: topic %q: %w", t, i.err)
		}
	}
	return out, nil
}

// checkpoint returns the pipeline's last committed position, as Checkpoint reads it but without a
// producer: it waits for a transaction of the running sink that is open on the progress topic to end.
func (v *verifier) checkpoint(ctx context.Context) (record.Position, error) {
	if !v.cfg.Transactional {
		return nil, nil
	}
	topic := v.cfg.ProgressTopic
	infos, err := lookupTopics(ctx, v.cl, []string{topic})
	if err != nil {
		return nil, fmt.Errorf("kafka: looking up progress topic %q: %w", topic, err)
	}
	switch i := infos[topic]; {
	case errors.Is(i.err, kerr.UnknownTopicOrPartition):
		return nil, nil // no sink of this cluster has stored a position there yet
	case i.err != nil:
		return nil, fmt.Errorf("kafka: progress topic %q: %w", topic, i.err)
	case i.partitions == 0:
		return nil, nil
	default:
		key := []byte(v.cfg.TransactionalID)
		return readProgress(ctx, v.cl, v.cfg, v.log, progressPartition(key, i.partitions), key, noProducer)
	}
}

// read reads topics from their start offsets to the end offsets they have now, keeping the last record
// per key in v.last.
func (v *verifier) read(ctx context.Context, topics []string) error {
	v.last = map[string]map[string]record.Record{}
	if len(topics) == 0 {
		return nil
	}
	adm := kadm.NewClient(v.cl)
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("kafka: listing the start offsets of %v: %w", topics, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("kafka: listing the end offsets of %v: %w", topics, err)
	}
	assign := map[string]map[int32]kgo.Offset{}
	remaining := map[string]map[int32]int64{} // topic → partition → end offset, until read
	ends.Each(func(o kadm.ListedOffset) {
		s, _ := starts.Lookup(o.Topic, o.Partition)
		if o.Offset <= s.Offset {
			return // empty
		}
		if assign[o.Topic] == nil {
			assign[o.Topic], remaining[o.Topic] = map[int32]kgo.Offset{}, map[int32]int64{}
		}
		assign[o.Topic][o.Partition] = kgo.NewOffset().At(s.Offset)
		remaining[o.Topic][o.Partition] = o.Offset
	})
	for _, t := range topics {
		v.last[t] = map[string]record.Record{}
	}
	if len(assign) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append(slices.Clone(v.opts),
		kgo.ConsumePartitions(assign),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Commit and abort markers come back too, so that the read knows it passed the end even when
		// the last offsets before it are markers or messages of aborted transactions.
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	defer cl.Close()
	began, said := time.Now(), time.Now()
	for len(remaining) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = fmt.Errorf("kafka: reading topic %s partition %d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := remaining[r.Topic][r.Partition]
			if !ok || r.Offset >= end {
				return // past the end captured at the start
			}
			if r.Offset >= end-1 {
				delete(remaining[r.Topic], r.Partition)
				if len(remaining[r.Topic]) == 0 {
					delete(remaining, r.Topic)
				}
			}
			if !r.Attrs.IsControl() {
				v.keep(r)
			}
		})
		if time.Since(said) > stillWaitingEvery {
			// read_committed stops at the first open transaction: one of a sink that died holds the
			// read back until transaction_timeout aborts it.
			v.log.Warn("kafka: verify: still reading; a transaction left open on these partitions holds read_committed back until it ends",
				"partitions_left", fmt.Sprint(remaining), "waited", time.Since(began).Round(time.Second))
			said = time.Now()
		}
	}
	return nil
}

// keep notes m as the last record of its key in its topic, copying what it keeps.
func (v *verifier) keep(m *kgo.Record) {
	if m.Timestamp.After(v.latest) {
		v.latest = m.Timestamp
	}
	if len(m.Key) == 0 {
		v.keyless++
		return
	}
	if v.keys != nil && !v.keys[string(m.Key)] {
		return
	}
	byKey := v.last[m.Topic]
	r, seen := byKey[string(m.Key)]
	if !seen {
		r.Key = []byte(string(m.Key))
	}
	r.Time = m.Timestamp
	r.Meta = r.Meta[:0]
	for _, h := range m.Headers {
		if h.Key == record.MetaRoute || h.Key == record.MetaTime {
			continue // never written by the sink: not metadata a record can carry
		}
		r.Meta = r.Meta.Set(h.Key, string(h.Value))
	}
	if m.Value == nil {
		r.Op, r.Payload = record.OpDelete, nil
	} else {
		r.Op, r.Payload = record.OpSnapshot, append(r.Payload[:0:0], m.Value...)
	}
	if m.Topic != v.cfg.Topic {
		r.Meta = r.Meta.Set(record.MetaRoute, m.Topic)
	}
	byKey[string(r.Key)] = r
}

// flush emits the records kept, verifyBatch at a time, and forgets them.
func (v *verifier) flush() error {
	out := make([]record.Record, 0, verifyBatch)
	for _, byKey := range v.last {
		for k, r := range byKey {
			out = append(out, r)
			delete(byKey, k)
			if len(out) == verifyBatch {
				if err := v.emit(out); err != nil {
					return err
				}
				out = out[:0]
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return v.emit(out)
}

// classify gives a Verify error its class, as the sink's errors (Sink.classify), reading in place of
// writing.
func (v *verifier) classify(err error) error {
	if errors.Is(err, kerr.TopicAuthorizationFailed) && !sdk.IsPermanent(err) {
		return sdk.Permanentf("kafka: not authorized: %s may not read or describe a topic verify reads (the cluster needs READ and DESCRIBE on the topics and the progress topic): %w",
			v.cfg.principal(), err)
	}
	return (&Sink{cfg: *v.cfg}).classify(err)
}
