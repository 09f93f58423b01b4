// Package record defines the one record type that flows through sluice, and its compact wire encoding.
//
// A record is what a source emits, a buffer stores and a sink writes. It carries no gRPC or protobuf types:
// plugins and the host exchange records in batches encoded with Encode and decoded with Decode.
package record

import (
	"bytes"
	"strconv"
	"time"
)

// Position is an opaque, stage-specific marker of where a record came from: a MongoDB resume token, a Redis
// stream ID, a Kafka topic/partition/offset. Positions produced by one stage are monotone in emission order.
// Only the stage that produced a position interprets it; everyone else only stores it, compares it for
// equality and hands it back. A nil or empty Position means "no position".
type Position []byte

// Equal reports whether p and q are the same position.
func (p Position) Equal(q Position) bool { return bytes.Equal(p, q) }

// Clone returns a copy of p that does not alias its backing array.
func (p Position) Clone() Position {
	if len(p) == 0 {
		return nil
	}
	return append(Position(nil), p...)
}

// Op is what happened to the data a record describes.
type Op uint8

// The operations a record can carry. Sources map their native events onto these; OpOther covers the rest
// (for example a MongoDB "drop" event), with details in the payload and metadata.
const (
	OpUnknown Op = iota
	OpInsert
	OpUpdate
	OpReplace
	OpDelete
	// OpSnapshot is a record read by an initial snapshot rather than from a change log.
	OpSnapshot
	// OpHeartbeat is a position-only record: it carries no data and only advances the position (for
	// example a quiet change stream's post-batch resume token). Sinks write nothing for it.
	OpHeartbeat
	OpOther
	opCount // keep last
)

var opNames = [...]string{"unknown", "insert", "update", "replace", "delete", "snapshot", "heartbeat", "other"}

// String returns the lower-case name of the operation ("insert", "update", …).
func (o Op) String() string {
	if o < opCount {
		return opNames[o]
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// ParseOp returns the Op named s (as printed by Op.String) and whether s named one.
func ParseOp(s string) (Op, bool) {
	for i, n := range opNames {
		if n == s {
			return Op(i), true
		}
	}
	return OpUnknown, false
}

// Encoding says how a record's payload bytes are to be read.
type Encoding uint8

// The payload encodings sluice knows. A transform that needs fields decodes JSON and BSON payloads; it
// never looks inside EncodingRaw.
const (
	EncodingRaw Encoding = iota
	EncodingJSON
	EncodingBSON
	encodingCount // keep last
)

var encodingNames = [...]string{"raw", "json", "bson"}

// String returns the lower-case name of the encoding.
func (e Encoding) String() string {
	if e < encodingCount {
		return encodingNames[e]
	}
	return "encoding(" + strconv.Itoa(int(e)) + ")"
}

// Field is one metadata entry.
type Field struct {
	Key, Value string
}

// Meta is a record's metadata: a short list of string pairs such as "mongodb.db" or "kafka.topic". It is a
// slice rather than a map because records carry few entries and a slice costs no hashing or allocation per
// record. Keys are unique when set through Set.
type Meta []Field

// Get returns the value for key and whether it is present.
func (m Meta) Get(key string) (string, bool) {
	for _, f := range m {
		if f.Key == key {
			return f.Value, true
		}
	}
	return "", false
}

// Set sets key to value, replacing an existing entry, and returns the updated Meta.
func (m Meta) Set(key, value string) Meta {
	for i := range m {
		if m[i].Key == key {
			m[i].Value = value
			return m
		}
	}
	return append(m, Field{Key: key, Value: value})
}

// Delete removes key and returns the updated Meta.
func (m Meta) Delete(key string) Meta {
	for i := range m {
		if m[i].Key == key {
			return append(m[:i], m[i+1:]...)
		}
	}
	return m
}

// Metadata keys that sluice itself sets or reads. Plugin-specific keys are prefixed with the plugin's name
// ("mongodb.db", "kafka.topic").
const (
	// MetaRoute names the record's destination (a Kafka topic, a stream key), set by a transform's route
	// step. Sinks that write to named destinations use it in place of their configured one.
	MetaRoute = "sluice.route"
	// MetaError marks a dead-letter record and says why it could not be delivered. A source sets it on a
	// record it cannot deliver (only when its OpenRequest.DeadLetter is true); the host sends such records
	// straight to the pipeline's dead-letter sink. The host sets it on records it dead-letters itself.
	MetaError = "sluice.error"
	// MetaErrorStage names what failed on a dead-letter record: "source", "sink" or "transform <n>".
	MetaErrorStage = "sluice.error.stage"
	// MetaPipeline is the pipeline id, set on dead-letter records.
	MetaPipeline = "sluice.pipeline"
	// MetaTime is the metadata entry that carries Record.Time in the wire encoding (see codec.go). Decode
	// moves it into Time, so it never shows in Meta; do not set it yourself.
	MetaTime = "sluice.time"
)

// Record is one unit of data moving through a pipeline.
//
// Byte slices in a record received from sluice (a sink's Write, a buffer's Append) may alias a shared batch
// buffer: copy what must outlive the call.
type Record struct {
	// Position marks where the record came from in the stage that produced it. Required.
	Position Position
	Op       Op
	// Key identifies the entity the record is about (a document's _id, a message key). May be empty.
	Key  []byte
	Meta Meta
	// Payload is the record's data, read according to Encoding. Empty for heartbeats and most deletes.
	Payload  []byte
	Encoding Encoding
	// Time is when the change the record describes happened at its origin (for MongoDB, the event's wall or
	// cluster time; for a heartbeat, its resume token's time); zero when the source does not know. Optional.
	// It survives a buffer, and the host measures source lag and end-to-end latency with it. It is carried
	// with nanosecond precision for times between the years 1678 and 2262 and dropped outside them.
	Time time.Time
}

// Batch is a run of records together with the upstream position it accounts for.
//
// Position is the position through which the batch accounts: normally the last record's position, but it
// may be later when records after that one were filtered out, and a batch may hold no records at all and
// only advance the position. A stage that stores positions atomically with its data stores Position.
type Batch struct {
	Records  []Record
	Position Position
}
