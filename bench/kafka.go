package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/services"
)

// countStall is how long the count of a topic may go without a new record, while records are missing,
// before it gives up; countSettle how long it waits for more once it has them all (a duplicate is an error).
const (
	countStall  = 20 * time.Second
	countSettle = time.Second
)

// broker is a Kafka the pipelines write to: kfake in this process or a real node.
type broker struct {
	// Kind is "kfake" or "kafka".
	Kind    string
	Brokers []string
	admin   *kadm.Client
	client  *kgo.Client
	stop    func()
}

// startKfake starts a one-broker kfake cluster in this process, holding its data in memory.
func startKfake() (*broker, error) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(1))
	if err != nil {
		return nil, fmt.Errorf("starting kfake: %w", err)
	}
	b, err := newBroker("kfake", c.ListenAddrs(), c.Close)
	if err != nil {
		c.Close()
	}
	return b, err
}

// startKafka starts a real Apache Kafka node (services.NewKafka) with its files under dir and the broker
// properties props.
func startKafka(dir string, props map[string]string) (*broker, error) {
	opts := []services.KafkaOption{services.KafkaHeap("1g")}
	for key, value := range props {
		opts = append(opts, services.KafkaProperty(key, value))
	}
	k, err := services.NewKafka(filepath.Join(dir, "kafka"), opts...)
	if err != nil {
		return nil, err
	}
	if err := k.Start(); err != nil {
		return nil, err
	}
	b, err := newBroker("kafka", k.Brokers, func() { _ = k.Stop(30 * time.Second) })
	if err != nil {
		_ = k.Stop(30 * time.Second)
	}
	return b, err
}

func newBroker(kind string, addrs []string, stop func()) (*broker, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		return nil, err
	}
	return &broker{Kind: kind, Brokers: addrs, client: cl, admin: kadm.NewClient(cl), stop: stop}, nil
}

// Close stops the broker.
func (b *broker) Close() {
	b.client.Close()
	b.stop()
}

// CreateTopic creates topic with partitions partitions (at least one).
func (b *broker) CreateTopic(ctx context.Context, topic string, partitions int) error {
	resp, err := b.admin.CreateTopic(ctx, int32(max(partitions, 1)), 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("%s: creating topic %s: %w", b.Kind, topic, err)
	}
	return nil
}

// DeleteTopic deletes topic, freeing what kfake holds in memory (errors are ignored: it is tidying up).
func (b *broker) DeleteTopic(ctx context.Context, topic string) {
	_, _ = b.admin.DeleteTopic(ctx, topic)
}

// Count reads topic from its start with a read_committed consumer and returns how many records it holds:
// it reads until it has want records and none more arrive for countSettle, or until none has arrived
// for countStall. With progress, it calls progress with the count so far after every fetch, and stops as
// soon as progress returns true (then the count is what was read by then).
func (b *broker) Count(ctx context.Context, topic string, want int, progress func(n int) bool) (int, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	n, last := 0, time.Now()
	for {
		idle := countStall
		if n >= want {
			idle = countSettle
		}
		if time.Since(last) >= idle {
			return n, nil
		}
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				ferr = fmt.Errorf("%s: reading %s/%d: %w", b.Kind, t, p, err)
			}
		})
		if ferr != nil {
			return n, ferr
		}
		if got := fs.NumRecords(); got > 0 {
			n += got
			last = time.Now()
		}
		if progress != nil && progress(n) {
			return n, nil
		}
	}
}
