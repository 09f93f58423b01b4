package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	"github.com/go-viper/mapstructure/v2"

	"github.com/sluicehq/sluice/sdk/record"
)

// ErrDone is returned by a finite Source's Read when it has no more records. The host then waits for every
// record to be acknowledged and completes the pipeline.
var ErrDone = errors.New("sdk: source is done")

// OpenRequest is what the host hands a stage when it opens it.
type OpenRequest struct {
	// Pipeline is the id of the pipeline the stage belongs to.
	Pipeline string
	// Settings are the stage's settings from the connector file, validated against the plugin's Spec and
	// with defaults applied.
	Settings Settings
	// After is the position to resume strictly after: for a Source, the last source position stored
	// downstream; for a Buffer, the last buffer position the sink has stored (where reading resumes). Nil
	// means none is stored: a source starts where its settings say, a buffer reads from its oldest entry.
	After record.Position
	// MaxBatchRecords and MaxBatchBytes bound the batches a Source's or Buffer's Read returns; the SDK
	// splits larger ones. A single record larger than MaxBatchBytes travels alone.
	MaxBatchRecords int
	MaxBatchBytes   int
	// DeadLetter reports that the pipeline has a dead-letter sink. Only then may a Source emit dead-letter
	// records (records with record.MetaError set) and a Sink's Write return a *RejectError; without one a
	// record that cannot be delivered must fail the stage instead, so that nothing is dropped silently.
	DeadLetter bool
	// Fence is the fencing token of the lease under which the host runs the pipeline when several hosts
	// share pipelines (a connector file's cluster:), 0 otherwise. Each new holder of a pipeline's lease
	// gets a greater token than every earlier one. A stage that writes to a shared system should store
	// the largest token it has seen there, atomically with its writes, and refuse (sdk.Permanent) writes
	// carrying a smaller one: a host that lost the lease while frozen can then no longer write, even
	// before it notices. The Redis buffer does; a stage with its own fencing (Kafka's transactional id)
	// may ignore it.
	Fence int64
	// Lane and Lanes are set for the sinks of a pipeline with ordered: false: the host runs Lanes
	// instances of the sink (Lanes > 1), and this one is lane Lane (0 .. Lanes-1). Each lane gets every
	// record of the keys that hash to it, in order, and stores its own positions. Lane 0 is opened with
	// the pipeline's id, lane i > 0 with "<pipeline>.lane-<i>", so that what a sink derives from Pipeline
	// differs between lanes; a sink that takes such a name from its settings instead (a transactional
	// id, a file path) must make it differ too, for example by appending ".lane-<i>" when Lane > 0. Both
	// are 0 for sources, buffers, and the sink of an ordered pipeline.
	Lane, Lanes int
	// Logger writes to the host's log, tagged with the plugin's name and the pipeline.
	Logger *slog.Logger
	// Metrics is where the stage registers metrics of its own, which the host collects and shows on its
	// /metrics endpoint (see Metrics). A buffer also reports its fill here (Metrics.BufferFill).
	Metrics *Metrics

	ctx context.Context
}

// Context returns the stage's context. Unlike the context passed to Open, which ends when Open returns,
// it lives as long as the stage: through every Read, Write, Append, Ack and Checkpoint, until Close has
// returned. Tie to it what the stage keeps open between calls and must not outlive it: a database/sql
// pool, a client with background goroutines, a goroutine of your own:
//
//	db, err := sql.Open("sqlite", path)
//	…
//	context.AfterFunc(req.Context(), func() { db.Close() })
//
// It ends (context.Cause says why) with ErrStageClosed once Close has returned, or with ErrStageAbandoned
// when the stage ends without Close: the host aborted it, or its calls did not return in time to be
// closed. In a plugin process that the host kills, nothing runs at all.
//
// It returns context.Background() for an OpenRequest the SDK did not make (a unit test's), unless one
// was set with WithContext.
func (r OpenRequest) Context() context.Context {
	if r.ctx == nil {
		return context.Background()
	}
	return r.ctx
}

// WithContext returns a copy of r whose Context is ctx, for calling a stage's Open directly in a unit
// test.
func (r OpenRequest) WithContext(ctx context.Context) OpenRequest {
	r.ctx = ctx
	return r
}

// Source produces records. Embed UnimplementedSource so that methods added to this interface later have a
// default.
//
// The SDK calls Open once, first. Once it has succeeded, Read is called repeatedly from one goroutine,
// while Ack is called from another as batches become durable downstream. When the host restarts the read
// stream, Read and Ack start again, after the previous ones have returned. Close comes last (see
// "Lifetimes" in the package documentation).
type Source interface {
	// Open prepares the source to emit records after req.After (or from its configured start). Its ctx
	// ends when Open returns; what the stage keeps open belongs to req.Context().
	Open(ctx context.Context, req OpenRequest) error
	// Read blocks until at least one record is available and returns the records, in position order. It
	// returns ErrDone when a finite source is exhausted, and ctx.Err() when ctx is cancelled. The slice and
	// the records may be reused by the source once the next Read is called.
	Read(ctx context.Context) ([]record.Record, error)
	// Ack reports that every record up to and including pos is durable downstream. Acks arrive in order.
	// Sources that keep no state of their own (the position is stored downstream) may ignore it.
	Ack(ctx context.Context, pos record.Position) error
	// Close releases the source's resources. It is called once, after every other call has returned.
	Close(ctx context.Context) error
	mustEmbedUnimplementedSource()
}

// Sink writes records to an external system. Embed UnimplementedSink.
//
// The SDK calls Open once, first. Once it has succeeded, Write is called from one goroutine with batches
// in order, and Checkpoint (only if the spec declares AtomicPosition) before Write and between writes —
// also after the host has ended a write stream, and never at the same time as Write. Close comes last
// (see "Lifetimes" in the package documentation).
type Sink interface {
	// Open prepares the sink. Its ctx ends when Open returns; what the stage keeps open belongs to
	// req.Context().
	Open(ctx context.Context, req OpenRequest) error
	// Checkpoint returns the last upstream position stored atomically with written data, or nil when none
	// is stored. Only called when the sink declares the AtomicPosition capability.
	Checkpoint(ctx context.Context) (record.Position, error)
	// Write makes a batch durable. When it returns nil the batch's records are written and, for a sink with
	// AtomicPosition, batch.Position is stored with them in the same atomic step. The batch is only valid
	// during the call. It may hold several of the host's batches (those that arrived while the previous
	// Write ran, up to 16), so a slow sink gets larger writes: plan for up to 16 × MaxBatchRecords records. Records with Op == OpHeartbeat carry no data: write nothing for them (a sink with
	// AtomicPosition still stores batch.Position). An error stops the stage; the host restarts it and
	// writes again from the last acknowledged batch.
	Write(ctx context.Context, batch record.Batch) error
	// Close releases the sink's resources. It is called once, after every other call has returned.
	Close(ctx context.Context) error
	mustEmbedUnimplementedSink()
}

// Buffer is a durable queue between a source and a sink. Embed UnimplementedBuffer.
//
// The SDK calls Open once, first. Once it has succeeded, Checkpoint, Append (from one goroutine) and
// Read and Ack (from two other goroutines) may all run at the same time. Close comes last (see
// "Lifetimes" in the package documentation).
type Buffer interface {
	// Open prepares the buffer. Its ctx ends when Open returns; what the stage keeps open belongs to
	// req.Context().
	Open(ctx context.Context, req OpenRequest) error
	// Checkpoint returns the last source position appended, stored atomically with the appended records,
	// or nil when the buffer holds none.
	Checkpoint(ctx context.Context) (record.Position, error)
	// Append stores the batch's records and batch.Position atomically. It blocks while the buffer is full
	// (backpressure) until ctx is cancelled. The batch is only valid during the call and, as for
	// Sink.Write, may hold up to 16 of the host's batches. A batch without position is stored without
	// moving the checkpoint: `sluice verify --repair` appends one, with records whose positions are nil too,
	// while the pipeline runs, and the instance running it must append on as if it had not happened.
	Append(ctx context.Context, batch record.Batch) error
	// Read returns stored records after the last one returned (initially after OpenRequest.After), with
	// the buffer's own positions. It waits a short while (at most about a second) for records and returns
	// an empty slice if none arrived, so the SDK can notice the end of input.
	Read(ctx context.Context) ([]record.Record, error)
	// Ack reports that every record up to and including pos is durable in the sink; the buffer may trim
	// them. Acks arrive in order.
	Ack(ctx context.Context, pos record.Position) error
	// Close releases the buffer's resources. It is called once, after every other call has returned.
	Close(ctx context.Context) error
	mustEmbedUnimplementedBuffer()
}

// PositionFormatter is implemented by a Source or Buffer that can render its positions for people. The host
// shows positions in its log (where a stage resumes) and in its API (/api/pipelines, `sluice status`); with
// it, a MongoDB resume token reads as its cluster time, a sequence number as a number, instead of hex.
//
// The host asks only when it shows a position — never per record or batch — so it costs nothing while
// records flow. FormatPosition may be called at any time in the stage's life, before Open and after Close
// too, and at the same time as other calls: it must depend on pos alone. An error (pos is not one of this
// stage's positions) makes the host show the position as it does for stages without a formatter.
type PositionFormatter interface {
	FormatPosition(pos record.Position) (string, error)
}

// PositionComparer is implemented by a Buffer that can order its positions. A pipeline with ordered: false
// needs it: each of its sink lanes stores the buffer position of the last record it wrote, and after a
// restart the host reads the buffer from the smallest of them and skips, for each lane, what that lane
// already holds. Without it the host refuses ordered: false.
//
// The host asks only while it resumes a pipeline (a few times per batch, until every lane is past its
// stored position), never while records flow. Like FormatPosition, ComparePositions may be called at any
// time in the stage's life, and at the same time as other calls: it must depend on a and b alone. It
// returns a negative number when a is before b, 0 when they are the same position and a positive one
// when a is after b; an error when either is not one of this buffer's positions.
type PositionComparer interface {
	ComparePositions(a, b record.Position) (int, error)
}

// Rejection names one record of a batch passed to Sink.Write that the sink cannot write, ever: it is larger
// than the destination accepts, or the destination refuses its content. Retrying would not help.
type Rejection struct {
	// Index is the record's index in batch.Records.
	Index int
	// Reason says why, for the operator reading the dead-letter record.
	Reason string
}

// RejectError is returned by Sink.Write when the sink wrote every record of the batch except the rejected
// ones, and (for a sink with AtomicPosition) stored batch.Position with them: the batch counts as written,
// and the host sends the rejected records to the pipeline's dead-letter sink. A sink may return it only
// when OpenRequest.DeadLetter is true; otherwise it must fail Write without writing the batch.
type RejectError struct {
	Rejections []Rejection
}

func (e *RejectError) Error() string {
	if len(e.Rejections) == 1 {
		return fmt.Sprintf("sink rejected record %d: %s", e.Rejections[0].Index, e.Rejections[0].Reason)
	}
	return fmt.Sprintf("sink rejected %d records", len(e.Rejections))
}

// ErrUnimplemented is returned by the Unimplemented* defaults.
var ErrUnimplemented = errors.New("sdk: not implemented")

// UnimplementedSource gives every Source method a default: Ack and Close do nothing, the rest return
// ErrUnimplemented.
type UnimplementedSource struct{}

func (UnimplementedSource) Open(context.Context, OpenRequest) error { return ErrUnimplemented }
func (UnimplementedSource) Read(context.Context) ([]record.Record, error) {
	return nil, ErrUnimplemented
}
func (UnimplementedSource) Ack(context.Context, record.Position) error { return nil }
func (UnimplementedSource) Close(context.Context) error                { return nil }
func (UnimplementedSource) mustEmbedUnimplementedSource()              {}

// UnimplementedSink gives every Sink method a default: Checkpoint returns no position, Close does
// nothing, the rest return ErrUnimplemented.
type UnimplementedSink struct{}

func (UnimplementedSink) Open(context.Context, OpenRequest) error { return ErrUnimplemented }
func (UnimplementedSink) Checkpoint(context.Context) (record.Position, error) {
	return nil, nil
}
func (UnimplementedSink) Write(context.Context, record.Batch) error { return ErrUnimplemented }
func (UnimplementedSink) Close(context.Context) error               { return nil }
func (UnimplementedSink) mustEmbedUnimplementedSink()               {}

// UnimplementedBuffer gives every Buffer method a default: Checkpoint returns no position, Close does
// nothing, the rest return ErrUnimplemented.
type UnimplementedBuffer struct{}

func (UnimplementedBuffer) Open(context.Context, OpenRequest) error { return ErrUnimplemented }
func (UnimplementedBuffer) Checkpoint(context.Context) (record.Position, error) {
	return nil, nil
}
func (UnimplementedBuffer) Append(context.Context, record.Batch) error { return ErrUnimplemented }
func (UnimplementedBuffer) Read(context.Context) ([]record.Record, error) {
	return nil, ErrUnimplemented
}
func (UnimplementedBuffer) Ack(context.Context, record.Position) error { return ErrUnimplemented }
func (UnimplementedBuffer) Close(context.Context) error                { return nil }
func (UnimplementedBuffer) mustEmbedUnimplementedBuffer()              {}

// Settings holds a stage's settings as the host sent them: JSON values keyed by setting name, already
// validated against the Spec and with defaults applied.
type Settings map[string]any

// ParseSettings decodes the JSON object the host sends.
func ParseSettings(data []byte) (Settings, error) {
	s := Settings{}
	if len(data) == 0 {
		return s, nil
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("sdk: settings are not a JSON object: %w", err)
	}
	return s, nil
}

// Decode copies the settings into the struct pointed to by v, matching keys to fields by their `setting`
// tag (or, without one, by name, case-insensitively). The fields' tags declare the settings (see
// SettingsOf): Decode checks each value against them as the host does (Resolve), fills an absent
// setting with its default, and fails on a missing required one, so a stage opened without the host (a
// unit test) sees what the host would send. An absent setting without a default leaves its field as it
// was. Durations accept Go duration strings. Keys without a field are ignored: the host has already
// rejected unknown keys. Errors wrap ErrInvalidSettings.
func (s Settings) Decode(v any) error {
	if t := reflect.TypeOf(v); t != nil && t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct {
		decl, err := settingsOf(t.Elem())
		if err != nil {
			return err
		}
		if s, err = resolve(decl, s, true); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidSettings, err)
		}
	}
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		TagName:          "setting",
		Result:           v,
		WeaklyTypedInput: false,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			floatToInt,
		),
	})
	if err != nil {
		return err
	}
	if err := dec.Decode(map[string]any(s)); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSettings, err)
	}
	return nil
}

// floatToInt lets whole JSON numbers (decoded as float64) fill integer fields.
func floatToInt(from, to reflect.Type, data any) (any, error) {
	f, ok := data.(float64)
	if !ok || from.Kind() != reflect.Float64 {
		return data, nil
	}
	switch to.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if f != float64(int64(f)) {
			return nil, fmt.Errorf("%v is not a whole number", f)
		}
		if to == reflect.TypeFor[time.Duration]() {
			return nil, fmt.Errorf("durations are strings like \"5s\", got %v", f)
		}
		return int64(f), nil
	}
	return data, nil
}
