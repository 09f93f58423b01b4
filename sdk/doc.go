// Package sdk is what a sluice plugin is written with. A plugin is a program whose main calls Serve with
// its Spec and a constructor for each stage kind it serves; the sluice host starts it as a subprocess,
// talks to it over gRPC (protocol v1, mutual TLS) and moves records to and from it in batches.
//
// # A sink in thirty lines
//
//	package main
//
//	import (
//		"context"
//
//		"github.com/sluicehq/sluice/sdk"
//		"github.com/sluicehq/sluice/sdk/record"
//	)
//
//	// config declares the stage's settings: its tags are the spec's settings (SettingsOf), and Decode
//	// fills it, applying their defaults.
//	type config struct {
//		Prefix string `setting:"prefix" default:">" doc:"Written before each payload."`
//	}
//
//	type sink struct {
//		sdk.UnimplementedSink // defaults for methods added to Sink later
//		cfg config
//	}
//
//	func (s *sink) Open(_ context.Context, req sdk.OpenRequest) error {
//		return req.Settings.Decode(&s.cfg) // checked and defaulted as the host does
//	}
//
//	func (s *sink) Write(_ context.Context, b record.Batch) error {
//		for _, r := range b.Records {
//			if r.Op == record.OpHeartbeat {
//				continue // position-only: nothing to write
//			}
//			// write s.cfg.Prefix + r.Payload somewhere durable…
//		}
//		return nil // returning nil says: durable. The host then acknowledges the source.
//	}
//
//	func main() {
//		sdk.Serve(sdk.Plugin{
//			Spec: sdk.Spec{Name: "prefixer", Version: "0.1.0", Summary: "writes prefixed payloads",
//				Sink: &sdk.Stage{Summary: "writes each payload with a prefix", Settings: sdk.MustSettingsOf[config]()}},
//			NewSink: func() sdk.Sink { return &sink{} },
//		})
//	}
//
// Build it, put the binary in a plugins directory (bin/plugins/, or one given with --plugins-dir), and
// `sluice plugins list` shows it. Test it with package sdktest, which drives it over real gRPC exactly as
// the host does.
//
// # Building outside the sluice repository
//
// This module's path, github.com/sluicehq/sluice/sdk, is not served by the Go module proxy (there are no
// released versions yet), so a plugin's go.mod names a checkout of sluice with a replace directive:
//
//	go mod init example.com/prefixer
//	go mod edit -require github.com/sluicehq/sluice/sdk@v0.0.0 \
//	            -replace github.com/sluicehq/sluice/sdk=/path/to/sluice/sdk
//	go mod tidy
//
// `sluice plugin init NAME --kind source|sink|buffer` writes such a module, with a working stage of that
// kind and a test running package sdktest, pointing at the SDK of the checkout the sluice binary was built
// from (or at --sdk DIR).
//
// # Lifetimes
//
// The host runs one stage per plugin process (first-party plugins may also run in its own process). For
// that stage the SDK calls, in this order:
//
//   - Open, once, first. Its ctx is the call's and ends when Open returns (the host bounds it with its open
//     timeout). req.Context() is the stage's context: it lives until Close has returned.
//   - Then, only if Open succeeded: a Source's Read (one goroutine) and Ack (another); a Sink's Checkpoint
//     (with AtomicPosition) and Write (one goroutine), never both at once; a Buffer's Checkpoint, Append,
//     Read and Ack, concurrently. Checkpoint may come before the first write, between writes and after the
//     host has ended a write stream. When the host restarts a stream, its calls start again after the
//     previous ones have returned. Each call's ctx is cancelled when the host ends the stream or begins
//     to close the stage: return promptly.
//   - Close, at most once and last: the SDK cancels the running calls and waits until every one has
//     returned (Open and Checkpoint included) before calling it. It is called when Open was called (also
//     when Open failed: release what Open got), and whether the host closed the stage or stopped the
//     plugin without closing it (then within about a second). Then req.Context() ends, with
//     ErrStageClosed.
//
// A stage can also end without Close: its process killed (a crash, SIGKILL, the host aborting a pipeline
// whose lease it lost), or, in the host's process, aborted. Nothing runs in a killed process. An aborted
// in-process stage, or one whose calls did not return in time to be closed, has req.Context() ended with
// ErrStageAbandoned. So tie what the stage keeps open between calls to req.Context(), and it is released
// however the stage ends:
//
//	db, err := sql.Open("sqlite", cfg.Path)
//	if err != nil {
//		return err
//	}
//	context.AfterFunc(req.Context(), func() { db.Close() })
//
// Keep Close for what must happen on an orderly stop only (flushing a client's buffer, leaving a consumer
// group). sdktest checks the crash path: an aborted instance must leave no goroutine behind once its
// context has ended.
//
// # Positions for people
//
// A Source or Buffer may implement PositionFormatter to render its positions for the host's log and API
// (a resume token as its time, a sequence number as a number); without it the host shows them as text or
// hex. The host asks only when it shows a position, never per record.
//
// # Verify
//
// A Source or a Sink may implement Verifier so that `sluice verify` can check a pipeline end to end: the
// source streams what a snapshot made now would emit, the host runs it through the pipeline's transforms,
// and compares it key by key with what the sink streams (the latest record it holds per key, deletions
// included). Verify runs on a stage that is not opened, beside the running pipeline, so it must read
// without taking anything over. Without it, `sluice verify` says which stage cannot be verified.
//
// # Metrics and event time
//
// A stage can count what it does: OpenRequest.Metrics registers counters, gauges and histograms, which the
// host collects when its /metrics endpoint is scraped and shows as sluice_plugin_<plugin>_<name> with the
// labels pipeline, stage and plugin. Register in Open and keep the result; updating never allocates.
//
//	func (s *sink) Open(_ context.Context, req sdk.OpenRequest) error {
//		s.written = req.Metrics.Counter("bytes_written_total", "Bytes of payload written.")
//		s.latency = req.Metrics.Histogram("request_seconds", "Time of one request to the server.", nil)
//		return req.Settings.Decode(&s.cfg)
//	}
//
// Metrics.GaugeFunc computes a value when the host asks for it (an age, a queue length); a buffer reports
// how full it is with Metrics.BufferFill, which the host shows as its buffer fill. Plugins in other
// languages answer the Plugin service's Metrics call with the Prometheus text format their own client
// library writes, or leave it unimplemented.
//
// A source that knows when each change happened sets record.Record.Time (MongoDB: the event's time; a
// heartbeat: its resume token's). The time travels with the record, through a buffer too, and the SDK
// tells the host each batch's latest time, from which the host measures the pipeline's source lag and
// end-to-end latency. Records without a time leave both unknown.
//
// # Rules a plugin must keep
//
//   - stdout belongs to the protocol handshake: log with OpenRequest.Logger (stderr), which the host forwards.
//     What a plugin prints on stdout later is logged by the host as a warning, unless its stage declares
//     Capabilities.WritesStdout (its output is meant for the host's stdout, like the stdout sink's).
//   - Every record a Source or Buffer emits has a Position, monotone in emission order; the host hands the
//     last stored one back in OpenRequest.After and the stage resumes strictly after it.
//   - Write and Append return nil only when the batch is durable. A sink that can store batch.Position in
//     the same atomic step as the data declares Capabilities.AtomicPosition and returns it from
//     Checkpoint: that is what makes a pipeline exactly-once.
//   - Batches passed to Write and Append are only valid during the call: copy what you keep.
//   - Cancellation of the context passed to a method means the host is stopping the stage: return promptly.
//
// # What is in this module
//
// Package sdk is the author API only: Serve, the stage interfaces, OpenRequest, Spec, the error classes,
// Metrics. The record type and its wire encoding are in sdk/record, the acceptance suite in sdk/sdktest,
// the host's side of the protocol in sdk/protocol, the protocol itself in sdk/proto. The gRPC plumbing
// both sides share (handshake, options, buffer pool, batch codec) is internal to the module.
package sdk
