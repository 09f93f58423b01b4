package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// progressVersion is the first byte of a progress message's value; the position follows it. A
// progress message without value (a tombstone) means "no position": deleting it restarts the pipeline.
const progressVersion = 1

func encodeProgress(pos record.Position) []byte {
	return append([]byte{progressVersion}, pos...)
}

func decodeProgress(v []byte) (record.Position, error) {
	switch {
	case len(v) == 0:
		return nil, nil
	case v[0] != progressVersion:
		return nil, fmt.Errorf("progress message of unknown version %d", v[0])
	}
	return record.Position(v[1:]).Clone(), nil
}

// ensureProgressTopic creates the compacted progress topic if it is missing and returns its number of
// partitions.
func ensureProgressTopic(ctx context.Context, cl *kgo.Client, cfg *Config) (int, error) {
	topic := cfg.ProgressTopic
	infos, err := lookupTopics(ctx, cl, []string{topic})
	if err != nil {
		return 0, fmt.Errorf("kafka: looking up progress topic %q: %w", topic, err)
	}
	switch i := infos[topic]; {
	case i.err == nil && i.partitions > 0:
		return i.partitions, nil
	case i.err != nil && !errors.Is(i.err, kerr.UnknownTopicOrPartition):
		return 0, fmt.Errorf("kafka: progress topic %q: %w", topic, i.err)
	}
	compact := "compact"
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, 1, -1, map[string]*string{"cleanup.policy": &compact}, topic)
	if err == nil {
		err = resp.Err
	}
	switch {
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
		return 0, sdk.Permanentf("kafka: progress topic %q does not exist and %s may not create it: create it (one partition, cleanup.policy=compact) or grant CREATE: %w",
			topic, cfg.principal(), err)
	case err != nil && !errors.Is(err, kerr.TopicAlreadyExists):
		return 0, fmt.Errorf("kafka: creating progress topic %q: %w", topic, err)
	}
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		select { // created, but the metadata may not have caught up yet
		case <-ctx.Done():
			return 0, fmt.Errorf("kafka: waiting for progress topic %q to appear: %w", topic, ctx.Err())
		case <-time.After(wait):
		}
		infos, err := lookupTopics(ctx, cl, []string{topic})
		if err != nil {
			return 0, fmt.Errorf("kafka: looking up progress topic %q: %w", topic, err)
		}
		if i := infos[topic]; i.err == nil && i.partitions > 0 {
			return i.partitions, nil
		}
	}
}

// stillWaitingEvery is how often a sink waiting on the transaction coordinator or on transaction
// markers says it still does.
const stillWaitingEvery = 10 * time.Second

// fence initialises the transactional producer. The coordinator then fences every earlier instance with
// the sink's transactional id and ends the transaction one of them left open — aborts it, or writes the
// markers of a commit already decided — and answers only once that is done: this is all a restarted sink
// waits for, and it says so in the log. Transactions of other transactional ids are no concern of it.
func fence(ctx context.Context, cl *kgo.Client, cfg *Config, log *slog.Logger) error {
	id := cfg.TransactionalID
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	described, err := kadm.NewClient(cl).DescribeTransactions(dctx, id)
	cancel()
	if t, ok := described[id]; err == nil && ok && t.Err == nil {
		switch t.State {
		case "Ongoing", "PrepareCommit", "PrepareAbort", "PrepareEpochFence":
			partitions := 0
			t.Topics.Each(func(string, int32) { partitions++ })
			what := "abort it"
			if t.State == "PrepareCommit" {
				what = "finish its commit"
			}
			log.Info("kafka: an earlier instance of this sink left a transaction open: waiting for the coordinator to "+what+" before starting",
				"transactional_id", id, "state", t.State, "open_for", time.Since(time.UnixMilli(t.StartTimestamp)).Round(time.Millisecond),
				"partitions", partitions, "expected", "under a second (longer while a leader of one of those partitions is unavailable)")
		}
	} else if err != nil {
		log.Debug("kafka: could not describe the transaction of transactional id", "transactional_id", id, "err", err)
	}
	began := time.Now()
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(stillWaitingEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				log.Warn("kafka: still waiting for the transaction coordinator to fence earlier instances of this sink and end their transaction",
					"transactional_id", id, "waited", time.Since(began).Round(time.Second))
			}
		}
	}()
	if _, _, err := cl.ProducerID(ctx); err != nil {
		return fmt.Errorf("kafka: initialising the transactional producer %q: %w", id, err)
	}
	return nil
}

// readProgress returns the value of the last committed message with key in partition part of the
// progress topic.
//
// Open initialised this sink's transactional producer, and the coordinator answered only once every
// transaction of the sink's transactional id had ended (an earlier instance's open one aborted, or the
// markers of a decided one written). So each message with key in the partition is followed by its
// transaction's commit or abort marker (or will be in a moment: the sink's own last commit, when
// Checkpoint follows a Write), and the partition can be read up to its end at once. Other pipelines
// sharing the progress topic may hold transactions open there (for up to their transaction_timeout, when
// they died mid-transaction); a read_committed read would stop at the first of them (the last stable
// offset) and wait. This read is read_uncommitted with control records, and a message with key counts
// once its producer's commit marker follows it (see scanProgress). It reads the end of the partition
// backwards in growing windows until it finds one.
//
// pid is the producer id of the sink's transactional producer (cl.ProducerID), or noProducer for a
// reader that has none and fenced nothing (Verify, beside a running sink): that reader waits for the
// markers of every transaction with key it finds open at the end, and counts only those that commit.
func readProgress(ctx context.Context, cl *kgo.Client, cfg *Config, log *slog.Logger, part int32, key []byte, pid int64) (record.Position, error) {
	adm := kadm.NewClient(cl)
	topic := cfg.ProgressTopic
	offset := func(what string, l kadm.ListedOffsets, err error) (int64, error) {
		if err != nil {
			return 0, fmt.Errorf("kafka: listing the %s offset of %s: %w", what, topic, err)
		}
		o, ok := l.Lookup(topic, part)
		if !ok {
			return 0, fmt.Errorf("kafka: no %s offset for %s partition %d", what, topic, part)
		}
		if o.Err != nil {
			return 0, fmt.Errorf("kafka: listing the %s offset of %s partition %d: %w", what, topic, part, o.Err)
		}
		return o.Offset, nil
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	end, err := offset("end", ends, err)
	if err != nil {
		return nil, err
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	start, err := offset("start", starts, err)
	if err != nil {
		return nil, err
	}
	for window := int64(64); ; window *= 16 {
		from := max(start, end-window)
		v, found, err := scanProgress(ctx, cfg, log, part, key, pid, from, end)
		if err != nil || found {
			return v, err
		}
		if from == start {
			return nil, nil
		}
	}
}

// scanProgress reads the progress partition from offset from, uncommitted messages and control records
// included, and returns the value of the last message with key, before offset end, whose transaction
// committed, decoded. A transactional message with key is held per producer id until that producer's
// next control record: a commit marker makes it count, an abort marker drops it. A message with key
// written without a transaction (a tombstone an operator wrote to reset the pipeline) counts at once. A
// marker whose messages lie before from is ignored: the caller reads a larger window when nothing is
// found.
//
// The last transaction of producer id pid (this sink's) may still be without its markers: the
// coordinator writes them after it has answered the commit. The read then goes on past end until they
// arrive (milliseconds; Open's fencing waits for them already, so this happens only when Checkpoint
// follows a Write). A message of an earlier producer id left without a marker at end is committed: log
// compaction removes a marker only with its transaction's last message, and an aborted transaction's
// messages before its marker. With pid noProducer nothing was fenced: every message left without a
// marker at end may belong to a transaction still open, and the read waits for the markers of all of
// them.
func scanProgress(ctx context.Context, cfg *Config, log *slog.Logger, part int32, key []byte, pid int64, from, end int64) (record.Position, bool, error) {
	if from >= end {
		return nil, false, nil
	}
	opts, err := cfg.connOpts(log)
	if err != nil {
		return nil, false, err
	}
	cl, err := kgo.NewClient(append(opts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{cfg.ProgressTopic: {part: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()),
		// Commit and abort markers come back too: they decide which messages count, and the read knows
		// when it has passed end-1 even when the last offsets are markers.
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(100*time.Millisecond), // past end, markers are awaited
	)...)
	if err != nil {
		return nil, false, err
	}
	defer cl.Close()
	type message struct {
		offset int64
		value  []byte
	}
	var (
		last    = message{offset: -1}
		pending = map[int64]message{} // producer id → its last message with key, not yet committed
		reached bool                  // offset end-1 was read
		began   = time.Now()
	)
	count := func(m message) {
		if m.offset > last.offset {
			last = m
		}
	}
	for !reached || len(pending) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			if reached {
				return nil, false, fmt.Errorf("kafka: waiting for the commit or abort marker of transactional id %s's last transaction on progress topic %s partition %d: %w",
					key, cfg.ProgressTopic, part, err)
			}
			return nil, false, fmt.Errorf("kafka: reading progress topic %s partition %d from offset %d to %d: %w", cfg.ProgressTopic, part, from, end, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return nil, false, fmt.Errorf("kafka: reading progress topic %s: %w", cfg.ProgressTopic, ferr)
		}
		fs.EachRecord(func(r *kgo.Record) {
			switch {
			case r.Attrs.IsControl():
				if m, ok := pending[r.ProducerID]; ok {
					if isCommitMarker(r) {
						count(m)
					}
					delete(pending, r.ProducerID)
				}
			case r.Offset >= end || string(r.Key) != string(key):
			case r.Attrs.IsTransactional():
				pending[r.ProducerID] = message{r.Offset, r.Value}
			default:
				count(message{r.Offset, r.Value})
			}
			if r.Offset >= end-1 && !reached {
				reached = true
				for id, m := range pending {
					if id != pid && pid != noProducer {
						count(m)
						delete(pending, id)
					}
				}
				if len(pending) > 0 {
					log.Debug("kafka: waiting for the markers of this sink's last transaction", "transactional_id", string(key), "expected", "milliseconds")
				}
			}
		})
		if reached && len(pending) > 0 && time.Since(began) > stillWaitingEvery {
			msg := "kafka: still waiting for the markers of this sink's last transaction on the progress topic"
			if pid == noProducer {
				msg = "kafka: still waiting for a transaction of the pipeline's sink to end on the progress topic (one left open by a sink that died ends at the latest after transaction_timeout)"
			}
			log.Warn(msg, "transactional_id", string(key), "topic", cfg.ProgressTopic, "partition", part, "waited", time.Since(began).Round(time.Second))
			began = time.Now()
		}
	}
	if last.offset < 0 {
		return nil, false, nil
	}
	pos, err := decodeProgress(last.value)
	return pos, true, err
}

// noProducer is readProgress's pid for a reader without a producer of its own.
const noProducer int64 = -1

// isCommitMarker reports whether r, a control record, is a commit marker. Its key is a version (int16)
// and a type (int16): 0 abort, 1 commit.
func isCommitMarker(r *kgo.Record) bool {
	return len(r.Key) >= 4 && binary.BigEndian.Uint16(r.Key[2:4]) == 1
}
