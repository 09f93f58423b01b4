package kafka

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// connOpts returns the franz-go options every client of the sink uses: brokers, client id, SASL and TLS.
// The password goes only into the SASL mechanism, never into a message.
func (c *Config) connOpts(log *slog.Logger) ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(c.ClientID),
		kgo.WithLogger(logger{log}),
	}
	switch c.SASLMechanism {
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: c.SASLUsername, Pass: c.SASLPassword}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASLUsername, Pass: c.SASLPassword}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASLUsername, Pass: c.SASLPassword}.AsSha512Mechanism()))
	}
	if c.On() {
		cfg, err := c.TLS.Config()
		if err != nil {
			return nil, fmt.Errorf("kafka: %w", err)
		}
		opts = append(opts, kgo.Dialer((&tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}).DialContext))
	}
	return opts, nil
}

// producerOpts returns the options of the sink's producer client.
func (c *Config) producerOpts() []kgo.Opt {
	batchMax := max(c.BatchMaxBytes, c.MaxMessageBytes+1024) // one record of max_message_bytes must fit a batch
	opts := []kgo.Opt{
		kgo.ProducerBatchMaxBytes(int32(batchMax)),
		kgo.ProducerLinger(c.Linger),
		kgo.RecordPartitioner(partitioner{progress: c.ProgressTopic, data: dataPartitioner(c.Partitioner)}),
		kgo.MaxBufferedRecords(64 << 10),
	}
	switch c.Acks {
	case "all":
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	case "leader":
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	case "none":
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	}
	switch c.Compression {
	case "gzip":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.GzipCompression()))
	case "snappy":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.SnappyCompression()))
	case "lz4":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	case "zstd":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.ZstdCompression()))
	default:
		opts = append(opts, kgo.ProducerBatchCompression(kgo.NoCompression()))
	}
	if c.AutoCreateTopics {
		opts = append(opts, kgo.AllowAutoTopicCreation())
	}
	if c.Transactional {
		// A record still unwritten after transaction_timeout fails with the brokers' last error: by then
		// the coordinator aborts the transaction anyway.
		opts = append(opts, kgo.TransactionalID(c.TransactionalID), kgo.TransactionTimeout(c.TransactionTimeout),
			kgo.RecordDeliveryTimeout(c.TransactionTimeout))
	}
	return opts
}

func dataPartitioner(name string) kgo.Partitioner {
	if name == "round_robin" {
		return kgo.RoundRobinPartitioner()
	}
	return kgo.StickyKeyPartitioner(nil) // murmur2 of the key, as Kafka's Java client
}

// partitioner sends progress messages to the partition progressPartition names (set on the record) and
// partitions everything else with data.
type partitioner struct {
	progress string
	data     kgo.Partitioner
}

func (p partitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == p.progress {
		return kgo.ManualPartitioner().ForTopic(topic)
	}
	return p.data.ForTopic(topic)
}

// progressPartition returns the partition of the progress topic (of n partitions) that holds key's
// messages: murmur2 of the key, as Kafka's Java client would choose.
func progressPartition(key []byte, n int) int32 {
	return int32(kgo.StickyKeyPartitioner(nil).ForTopic("").Partition(&kgo.Record{Key: key}, n))
}

// logger forwards franz-go's log lines (warnings and errors only) to the host's log.
type logger struct{ l *slog.Logger }

func (l logger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l logger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	if l.l == nil {
		return
	}
	lv := slog.LevelWarn
	if level == kgo.LogLevelError {
		lv = slog.LevelError
	}
	l.l.Log(context.Background(), lv, "kafka client: "+msg, keyvals...)
}
