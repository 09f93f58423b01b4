package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

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
// partitions. It asks to create it first: listing a missing topic makes the client retry for seconds.
func ensureProgressTopic(ctx context.Context, cl *kgo.Client, topic string) (int, error) {
	adm := kadm.NewClient(cl)
	compact := "compact"
	resp, err := adm.CreateTopic(ctx, 1, -1, map[string]*string{"cleanup.policy": &compact}, topic)
	if err == nil {
		err = resp.Err
	}
	createErr := err
	if errors.Is(err, kerr.TopicAlreadyExists) {
		createErr = nil
	}
	// A user without the right to create topics may still use an existing one: look before failing.
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		details, err := adm.ListTopics(ctx, topic)
		if err != nil {
			return 0, fmt.Errorf("kafka: listing progress topic %s: %w", topic, err)
		}
		if d, ok := details[topic]; ok && d.Err == nil && len(d.Partitions) > 0 {
			return len(d.Partitions), nil
		}
		if createErr != nil {
			return 0, fmt.Errorf("kafka: creating progress topic %s: %w", topic, createErr)
		}
		select { // created, but the metadata has not caught up yet
		case <-ctx.Done():
			return 0, fmt.Errorf("kafka: waiting for progress topic %s to appear: %w", topic, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// readProgress returns the value of the last committed message with key in partition part of the
// progress topic.
//
// It first waits until the partition's last stable offset reaches its end: then no transaction that
// wrote there before this call is still open, and read_committed sees everything this transactional id
// ever committed (Open fenced earlier instances, which aborted their open transaction). It then reads
// the end of the partition backwards in growing windows until it finds the key.
func readProgress(ctx context.Context, cl *kgo.Client, cfg *Config, log *slog.Logger, part int32, key []byte) (record.Position, error) {
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
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		lso, err := adm.ListCommittedOffsets(ctx, topic)
		stable, err := offset("last stable", lso, err)
		if err != nil {
			return nil, err
		}
		if stable >= end {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("kafka: waiting for open transactions on %s partition %d to end (stable offset %d, end %d): %w",
				topic, part, stable, end, ctx.Err())
		case <-time.After(wait):
		}
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	start, err := offset("start", starts, err)
	if err != nil {
		return nil, err
	}
	for window := int64(64); ; window *= 16 {
		from := max(start, end-window)
		v, found, err := scanProgress(ctx, cfg, log, part, key, from, end)
		if err != nil || found {
			return v, err
		}
		if from == start {
			return nil, nil
		}
	}
}

// scanProgress reads offsets [from, end) of the progress partition with read_committed and returns the
// last value with key, decoded.
func scanProgress(ctx context.Context, cfg *Config, log *slog.Logger, part int32, key []byte, from, end int64) (record.Position, bool, error) {
	if from >= end {
		return nil, false, nil
	}
	opts, err := cfg.connOpts(log)
	if err != nil {
		return nil, false, err
	}
	cl, err := kgo.NewClient(append(opts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{cfg.ProgressTopic: {part: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Commit and abort markers come back too, so the read knows when it has passed end-1 even when
		// the last offsets hold no data.
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return nil, false, err
	}
	defer cl.Close()
	var (
		last  []byte
		found bool
	)
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, false, fmt.Errorf("kafka: reading progress topic %s partition %d from offset %d to %d: %w", cfg.ProgressTopic, part, from, end, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return nil, false, fmt.Errorf("kafka: reading progress topic %s: %w", cfg.ProgressTopic, ferr)
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= end {
				done = true
				return
			}
			if !r.Attrs.IsControl() && string(r.Key) == string(key) {
				last, found = r.Value, true
			}
			if r.Offset == end-1 {
				done = true
			}
		})
		if done {
			break
		}
	}
	if !found {
		return nil, false, nil
	}
	pos, err := decodeProgress(last)
	return pos, true, err
}
