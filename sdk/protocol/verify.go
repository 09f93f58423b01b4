package protocol

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/sdk/proto/sluicev1"
	"github.com/sluicehq/sluice/sdk/record"
)

// VerifyRequest is what the host asks a stage's Verify (see sdk.VerifyRequest for the meaning).
type VerifyRequest struct {
	Pipeline string
	Settings map[string]any
	Routes   []string
	Keys     [][]byte
}

// VerifyResult is what a stage's Verify reports besides its records (see sdk.VerifyResult).
type VerifyResult struct {
	Position    record.Position
	Time        time.Time
	Destination string
}

// ErrNoVerify is Verify's error for a plugin whose stage cannot be verified (no sdk.Verifier).
var ErrNoVerify = errors.New("the plugin cannot verify this stage")

// Verify asks the source for its current state; fn receives the records, which alias a buffer that the
// next call reuses.
func (s *Source) Verify(ctx context.Context, req VerifyRequest, fn func([]record.Record) error) (VerifyResult, error) {
	return verify(ctx, req, fn, s.c.Verify)
}

// Verify asks the sink for the latest record it holds per key; fn receives the records, which alias a
// buffer that the next call reuses.
func (s *Sink) Verify(ctx context.Context, req VerifyRequest, fn func([]record.Record) error) (VerifyResult, error) {
	return verify(ctx, req, fn, s.c.Verify)
}

type verifyCall func(context.Context, *sluicev1.VerifyRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[sluicev1.VerifyResponse], error)

func verify(ctx context.Context, req VerifyRequest, fn func([]record.Record) error, call verifyCall) (VerifyResult, error) {
	settings, err := json.Marshal(req.Settings)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("encoding settings: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := call(ctx, &sluicev1.VerifyRequest{Pipeline: req.Pipeline, SettingsJson: settings, Routes: req.Routes, Keys: req.Keys})
	if err != nil {
		return VerifyResult{}, verifyErr(err)
	}
	var recs []record.Record
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return VerifyResult{}, errors.New("the plugin ended its verify stream without saying it was done")
		}
		if err != nil {
			return VerifyResult{}, verifyErr(err)
		}
		if m.GetCount() > 0 {
			if recs, err = record.Decode(recs[:0], m.GetData(), int(m.GetCount())); err != nil {
				return VerifyResult{}, fmt.Errorf("decoding the plugin's verify records: %w", err)
			}
			if err := fn(recs); err != nil {
				return VerifyResult{}, err
			}
		}
		if m.GetDone() {
			res := VerifyResult{Position: nonEmpty(m.GetPosition()), Destination: m.GetDestination()}
			if ns := m.GetTimeUnixNano(); ns != 0 {
				res.Time = time.Unix(0, ns)
			}
			return res, nil
		}
	}
}

func verifyErr(err error) error {
	if status.Code(err) == codes.Unimplemented {
		return ErrNoVerify
	}
	return fromWire(err)
}
