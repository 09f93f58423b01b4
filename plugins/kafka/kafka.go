// Package kafka is sluice's Apache Kafka sink, built on franz-go.
//
// Each record becomes one Kafka message: the record's key is the message key, its payload the value (a
// record without payload, such as a delete, is a tombstone), selected metadata become headers, and the
// topic is the record's route (record.MetaRoute, set by a transform's route step) or the topic setting.
//
// # Exactly once
//
// With transactional: true (the default) every Write is one Kafka transaction holding the batch's
// messages and one progress message: the batch's upstream position, written to a compacted progress
// topic under the sink's transactional id. Messages and position become visible together or not at all,
// so Checkpoint, which reads the last committed progress message with read_committed, always names
// exactly what has been written, and the host resumes the upstream right after it: no loss and no
// duplicate for consumers reading with isolation.level=read_committed. The transactional id is derived
// from the pipeline id, so a second instance of the pipeline fences the first; the fenced one fails its
// next Write with an error saying so.
//
// With transactional: false the sink is an idempotent producer (acks=all, no duplicates from the
// producer's own retries) and the host stores positions: at-least-once.
package kafka

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/sdk"
)

// Plugin returns the kafka plugin: its spec and its sink constructor.
func Plugin() sdk.Plugin {
	return sdk.Plugin{
		Spec: sdk.Spec{
			Name:    "kafka",
			Version: "0.2.0",
			Summary: "Apache Kafka: a sink that writes each batch and its position in one Kafka transaction (exactly-once).",
			Author:  "sluice",
			Sink: &sdk.Stage{
				Summary:      "Writes records as Kafka messages (key = record key, value = payload, headers from metadata) to a static topic or the record's route. transactional: true (default) writes each batch together with its upstream position in one transaction: exactly-once for read_committed consumers. transactional: false is an idempotent producer: at-least-once. sluice verify reads the topic and the routes' topics whole (read_committed) and keeps the last message per key.",
				Settings:     settings,
				Capabilities: sdk.Capabilities{AtomicPosition: true, AtomicPositionSetting: "transactional"},
				Rules:        rules,
			},
		},
		NewSink: func() sdk.Sink { return &Sink{} },
	}
}

// settings are Config's, as its tags declare them.
var settings = sdk.MustSettingsOf[Config]()

// rules are the combinations of settings the sink refuses, declared so that validate reports them;
// ParseConfig checks them again.
var rules = append([]sdk.Rule{
	{Expr: `!(transactional && acks != "all")`, Settings: []string{"acks", "transactional"},
		Message: `acks must be "all" when transactional is true (a transaction needs every in-sync replica): remove acks, or set transactional: false`},
	{Expr: `sasl_mechanism != "none" || (sasl_username == nil && sasl_password == nil)`, Settings: []string{"sasl_username", "sasl_password", "sasl_mechanism"},
		Message: `sasl_username and sasl_password need a sasl_mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)`},
	{Expr: `sasl_mechanism == "none" || (sasl_username ?? "") != ""`, Settings: []string{"sasl_mechanism", "sasl_username"},
		Message: `a sasl_mechanism needs a sasl_username`},
}, sdk.TLSRules...)

// Config holds the sink's settings; its tags declare them (sdk.SettingsOf).
//
// Bounds: a message of max_message_bytes fits a batch of batch_max_bytes' maximum (1 GiB - 1 KiB); Kafka
// carries the transaction timeout as int32 milliseconds (24.8 days, hence 596h) and brokers refuse more
// than their transaction.max.timeout.ms (15 minutes by default).
type Config struct {
	Brokers            []string      `setting:"brokers,required" doc:"Bootstrap brokers, host:port, such as [\"kafka-1:9092\", \"kafka-2:9092\"]."`
	Topic              string        `setting:"topic" doc:"The topic to write to. A record's route (set by a route transform step) overrides it. Without it every record must carry a route."`
	Partitioner        string        `setting:"partitioner" default:"hash" enum:"hash,round_robin" doc:"hash (default): the partition is the murmur2 hash of the key, as Kafka's Java client does, so records with one key keep their order; records without a key stick to one partition at a time. round_robin: spread records evenly, ignoring keys (no per-key order)."`
	Acks               string        `setting:"acks" default:"all" enum:"all,leader,none" doc:"all (default): a write counts once every in-sync replica has it, and the producer is idempotent. leader or none are faster and can lose acknowledged records when a broker fails; they need transactional: false."`
	Compression        string        `setting:"compression" default:"none" enum:"none,gzip,snappy,lz4,zstd" doc:"Compression of message batches. Default none: no CPU spent on it; lz4 or zstd trade CPU for network and disk."`
	BatchMaxBytes      int           `setting:"batch_max_bytes" default:"1000000" min:"1024" max:"1073741824" doc:"Largest message batch sent to one partition, in bytes (default 1000000). Keep it below the broker's message.max.bytes."`
	Linger             time.Duration `setting:"linger" default:"0s" min:"0s" doc:"How long a partition's batch waits for more records before it is sent (default 0s). Every write ends with a flush, so this only matters within one large write."`
	MaxMessageBytes    int           `setting:"max_message_bytes" default:"1000000" min:"1" max:"1073740800" doc:"Largest message (key + value + headers) the sink sends, default 1000000. A larger record goes to the pipeline's dead-letter sink, or fails the pipeline when it has none: never dropped silently. Keep it below the topic's max.message.bytes."`
	Headers            []string      `setting:"headers" doc:"Metadata keys written as message headers, such as [\"mongodb.coll\"]; [\"*\"] writes all of them (except sluice.route). Default: none."`
	ClientID           string        `setting:"client_id" default:"sluice" doc:"The client id brokers see in their logs and quotas."`
	Transactional      bool          `setting:"transactional" default:"true" doc:"true (default): each write is one Kafka transaction holding the records and the batch's position: exactly-once for read_committed consumers (needs acks all). false: idempotent producer, positions kept by the host: at-least-once."`
	TransactionalID    string        `setting:"transactional_id" doc:"The Kafka transactional id, also the key of this pipeline's progress messages. Default: \"sluice-\" + the pipeline id. Two sinks with the same id fence each other: give each deployment of a pipeline id its own. With ordered: false, lane i > 0 appends \".lane-i\"."`
	TransactionTimeout time.Duration `setting:"transaction_timeout" default:"1m" min:"1s" max:"596h0m0s" doc:"How long the broker lets a transaction stay open before aborting it (default 1m); a restarted sink aborts its predecessor's open transaction at once anyway. A write the brokers have not acknowledged by then fails, and the host retries it. At most the broker's transaction.max.timeout.ms (15m by default)."`
	ProgressTopic      string        `setting:"progress_topic" default:"sluice-progress" doc:"The compacted topic holding each pipeline's last written position, keyed by transactional id (default sluice-progress). Created with one partition if missing; do not repartition it."`
	AutoCreateTopics   bool          `setting:"auto_create_topics" default:"false" doc:"Ask brokers to create missing topics (they do when auto.create.topics.enable is on). Default false: the sink creates no topic but its progress topic; a missing topic setting stops the pipeline at start, and a record routed to a missing topic goes to the dead-letter sink (without one, the pipeline stops), so a mistyped route creates nothing."`
	SASLMechanism      string        `setting:"sasl_mechanism" default:"none" enum:"none,PLAIN,SCRAM-SHA-256,SCRAM-SHA-512" doc:"SASL authentication: none (default), PLAIN (send passwords only over TLS), SCRAM-SHA-256 or SCRAM-SHA-512."`
	SASLUsername       string        `setting:"sasl_username" doc:"SASL user name."`
	SASLPassword       string        `setting:"sasl_password,secret" doc:"SASL password. Pass it as ${env:NAME} or ${file:PATH}; it is never printed or logged."`
	// TLS is the shared TLS settings group; tls_server_name defaults to the host in brokers.
	sdk.TLS `setting:",squash"`
}

// ParseConfig decodes and checks the settings of the sink of pipeline, applying the spec's defaults to
// keys that are absent and deriving the transactional id. Errors wrap sdk.ErrInvalidSettings.
func ParseConfig(s sdk.Settings, pipeline string) (Config, error) {
	var c Config // Decode applies the defaults and checks the types, enums and bounds the tags declare
	if err := s.Decode(&c); err != nil {
		return c, err
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Brokers) == 0 {
		bad("brokers: at least one broker is needed")
	}
	if c.Topic != "" {
		if err := checkTopic(c.Topic); err != nil {
			bad("topic: %v", err)
		}
	}
	if c.Transactional {
		if c.TransactionalID == "" {
			if pipeline == "" {
				bad("transactional_id: no pipeline id to derive it from")
			}
			c.TransactionalID = "sluice-" + pipeline
		}
		if c.Acks != "all" {
			bad("acks: transactions need acks all, not %q (or set transactional: false)", c.Acks)
		}
		if err := checkTopic(c.ProgressTopic); err != nil {
			bad("progress_topic: %v", err)
		}
	}
	switch c.SASLMechanism {
	case "none":
		if c.SASLUsername != "" || c.SASLPassword != "" {
			bad("sasl_username and sasl_password need a sasl_mechanism")
		}
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if c.SASLUsername == "" {
			bad("sasl_username: %s needs a user name", c.SASLMechanism)
		}
	default:
		bad("sasl_mechanism: unknown %q", c.SASLMechanism)
	}
	if err := c.TLS.Check(); err != nil {
		bad("%v", err)
	}
	if slices.Contains(c.Headers, "") {
		bad("headers: an empty metadata key")
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("%w: %w", sdk.ErrInvalidSettings, err)
	}
	return c, nil
}

// checkTopic reports whether name is a legal Kafka topic name: 1 to 249 ASCII letters, digits, '.', '_'
// and '-', and not "." or "..".
func checkTopic(name string) error {
	switch {
	case name == "":
		return errors.New("empty topic name")
	case len(name) > 249:
		return fmt.Errorf("topic name of %d characters (at most 249)", len(name))
	case name == "." || name == "..":
		return fmt.Errorf("topic name %q is not allowed", name)
	}
	if i := strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	}); i >= 0 {
		return fmt.Errorf("topic name %q: character %q is not allowed (letters, digits, '.', '_', '-')", name, name[i])
	}
	return nil
}
