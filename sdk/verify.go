package sdk

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/sdk/proto/sluicev1"
	"github.com/sluicehq/sluice/sdk/record"
)

// Verifier is implemented by a Source or a Sink that can show `sluice verify` what it holds now, so that
// the host can compare both ends of a pipeline: it runs the source's records through the pipeline's
// transforms and compares them, key by key, with the sink's.
//
// A Source emits every record a snapshot started now would emit (Op record.OpSnapshot, with the key,
// payload and metadata its snapshot gives them), in any order. A Sink emits, for each key it holds, the
// latest record it holds for it: with record.MetaRoute set to the destination it was read from when that
// is not the sink's own destination (VerifyResult.Destination), and as a record with Op record.OpDelete and
// no payload when the latest is a deletion (a Kafka tombstone), so that a deleted key is not mistaken for
// a missing one.
//
// Verify is called on a stage that is not opened, in a plugin process the host started for it; it must
// not depend on Open and must not take over what a running pipeline holds (no fencing, no transactional
// producer): verify runs while the pipeline runs. It reads as consistent a view as the system allows (a
// snapshot read, a read_committed consumer) and returns when it has emitted everything. emit may keep
// nothing of the slice after it returns; its error (the host gave up) ends Verify.
type Verifier interface {
	Verify(ctx context.Context, req VerifyRequest, emit func([]record.Record) error) (VerifyResult, error)
}

// VerifyRequest is what the host asks a Verifier.
type VerifyRequest struct {
	// Pipeline is the id of the pipeline the stage belongs to, as in OpenRequest.
	Pipeline string
	// Settings are the stage's settings, validated and with defaults applied, as in OpenRequest.
	Settings Settings
	// Routes (sinks only) are the routes (record.MetaRoute) that the records of the source's current state
	// take after the pipeline's transforms; the sink reads those destinations besides its own.
	Routes []string
	// Keys, when not empty, restricts the answer to the records with these keys: the host re-checks the
	// keys that differed, after giving the pipeline time to deliver what was in flight.
	Keys [][]byte
	// Logger writes to the host's log.
	Logger *slog.Logger
}

// KeySet returns Keys as a set, or nil when Keys is empty: then every key is wanted.
func (r VerifyRequest) KeySet() map[string]bool {
	if len(r.Keys) == 0 {
		return nil
	}
	set := make(map[string]bool, len(r.Keys))
	for _, k := range r.Keys {
		set[string(k)] = true
	}
	return set
}

// VerifyResult is what a Verifier reports besides its records.
type VerifyResult struct {
	// Position is, for a Source, its position now (where a stream started now would begin); for a Sink,
	// its checkpoint (the last upstream position it stored), nil when none.
	Position record.Position
	// Time is, for a Source, the time of Position (e.g. MongoDB's cluster time); for a Sink, the latest
	// event time (record.Record.Time) among the records it holds. Zero when unknown.
	Time time.Time
	// Destination (sinks only) names where records without a route go (Kafka: the topic setting).
	Destination string
}

// verifyChunkBytes bounds the record bytes of one VerifyResponse message.
const verifyChunkBytes = 1 << 20

// serveVerify answers a Verify call with the stage's Verifier, or Unimplemented when it has none. A panic
// in the plugin's Verify is an error of the call, not the end of the process.
func serveVerify(stage any, logger *slog.Logger, req *sluicev1.VerifyRequest, stream grpc.ServerStreamingServer[sluicev1.VerifyResponse]) (err error) {
	v, ok := stage.(Verifier)
	if !ok {
		return status.Error(codes.Unimplemented, "the stage cannot be verified")
	}
	settings, err := ParseSettings(req.GetSettingsJson())
	if err != nil {
		return protocolError("%v", err)
	}
	defer func() {
		if r := recover(); r != nil {
			err = status.Errorf(codes.Internal, "verify: panic: %v", r)
		}
	}()
	var buf []byte
	emit := func(recs []record.Record) error {
		for len(recs) > 0 {
			n, size := 0, 0
			for n < len(recs) && (n == 0 || size+record.EncodedSize(&recs[n]) <= verifyChunkBytes) {
				size += record.EncodedSize(&recs[n])
				n++
			}
			buf = record.Encode(buf[:0], recs[:n])
			if err := stream.Send(&sluicev1.VerifyResponse{Count: uint32(n), Data: buf}); err != nil {
				return fmt.Errorf("sending verify records: %w", err)
			}
			recs = recs[n:]
		}
		return nil
	}
	res, err := v.Verify(stream.Context(), VerifyRequest{
		Pipeline: req.GetPipeline(),
		Settings: settings,
		Routes:   req.GetRoutes(),
		Keys:     req.GetKeys(),
		Logger:   logger,
	}, emit)
	if err != nil {
		return toStatus(err)
	}
	last := &sluicev1.VerifyResponse{Done: true, Position: res.Position, Destination: res.Destination}
	if !res.Time.IsZero() {
		last.TimeUnixNano = res.Time.UnixNano()
	}
	return stream.Send(last)
}
