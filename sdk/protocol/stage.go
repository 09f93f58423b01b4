package protocol

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/sdk/proto/sluicev1"
	"github.com/sluicehq/sluice/sdk/record"
)

// OpenRequest is what the host sends a stage when it opens it (see sdk.OpenRequest for the meaning).
type OpenRequest struct {
	Pipeline        string
	Settings        map[string]any
	After           record.Position
	MaxBatchRecords int
	MaxBatchBytes   int
	DeadLetter      bool
	Fence           int64
	// Lane and Lanes: see sdk.OpenRequest (sinks of a pipeline with ordered: false).
	Lane, Lanes int
}

func (r OpenRequest) wire() (*sluicev1.OpenRequest, error) {
	settings, err := json.Marshal(r.Settings)
	if err != nil {
		return nil, fmt.Errorf("encoding settings: %w", err)
	}
	return &sluicev1.OpenRequest{
		Pipeline:        r.Pipeline,
		SettingsJson:    settings,
		After:           r.After,
		MaxBatchRecords: uint32(max(r.MaxBatchRecords, 0)),
		MaxBatchBytes:   uint64(max(r.MaxBatchBytes, 0)),
		DeadLetter:      r.DeadLetter,
		Fence:           r.Fence,
		Lane:            uint32(max(r.Lane, 0)),
		Lanes:           uint32(max(r.Lanes, 0)),
	}, nil
}

// Source drives a plugin's source stage.
type Source struct{ c sluicev1.SourceClient }

// Open opens the source.
func (s *Source) Open(ctx context.Context, req OpenRequest) error {
	w, err := req.wire()
	if err == nil {
		_, err = s.c.Open(ctx, w)
	}
	return fromWire(err)
}

// Read starts the source's record stream. Cancelling ctx ends it.
func (s *Source) Read(ctx context.Context) (*ReadStream, error) {
	st, err := s.c.Read(ctx)
	if err != nil {
		return nil, fromWire(err)
	}
	return &ReadStream{s: st}, nil
}

// FormatPosition asks the source to render pos for people (sdk.PositionFormatter). It fails with
// ErrNoFormat when the plugin does not render its positions.
func (s *Source) FormatPosition(ctx context.Context, pos record.Position) (string, error) {
	resp, err := s.c.FormatPosition(ctx, &sluicev1.FormatPositionRequest{Position: pos})
	return formatted(resp, err)
}

// Close closes the source.
func (s *Source) Close(ctx context.Context) error {
	_, err := s.c.Close(ctx, &sluicev1.Empty{})
	return fromWire(err)
}

// Sink drives a plugin's sink stage.
type Sink struct{ c sluicev1.SinkClient }

// Open opens the sink.
func (s *Sink) Open(ctx context.Context, req OpenRequest) error {
	w, err := req.wire()
	if err == nil {
		_, err = s.c.Open(ctx, w)
	}
	return fromWire(err)
}

// Checkpoint returns the last upstream position the sink stored atomically with its data, or nil.
func (s *Sink) Checkpoint(ctx context.Context) (record.Position, error) {
	resp, err := s.c.Checkpoint(ctx, &sluicev1.Empty{})
	if err != nil {
		return nil, fromWire(err)
	}
	return nonEmpty(resp.GetPosition()), nil
}

// Write starts the sink's write stream. Cancelling ctx ends it.
func (s *Sink) Write(ctx context.Context) (*WriteStream, error) {
	st, err := s.c.Write(ctx)
	if err != nil {
		return nil, fromWire(err)
	}
	return &WriteStream{s: st}, nil
}

// Close closes the sink.
func (s *Sink) Close(ctx context.Context) error {
	_, err := s.c.Close(ctx, &sluicev1.Empty{})
	return fromWire(err)
}

// Buffer drives a plugin's buffer stage.
type Buffer struct{ c sluicev1.BufferClient }

// Open opens the buffer; req.After is where reading resumes.
func (b *Buffer) Open(ctx context.Context, req OpenRequest) error {
	w, err := req.wire()
	if err == nil {
		_, err = b.c.Open(ctx, w)
	}
	return fromWire(err)
}

// Checkpoint returns the last source position the buffer stored with appended records, or nil.
func (b *Buffer) Checkpoint(ctx context.Context) (record.Position, error) {
	resp, err := b.c.Checkpoint(ctx, &sluicev1.Empty{})
	if err != nil {
		return nil, fromWire(err)
	}
	return nonEmpty(resp.GetPosition()), nil
}

// Append starts the buffer's append stream. Closing it (CloseSend) tells the buffer the input has ended.
func (b *Buffer) Append(ctx context.Context) (*WriteStream, error) {
	st, err := b.c.Append(ctx)
	if err != nil {
		return nil, fromWire(err)
	}
	return &WriteStream{s: st}, nil
}

// Read starts the buffer's read stream.
func (b *Buffer) Read(ctx context.Context) (*ReadStream, error) {
	st, err := b.c.Read(ctx)
	if err != nil {
		return nil, fromWire(err)
	}
	return &ReadStream{s: st}, nil
}

// FormatPosition asks the buffer to render pos for people (sdk.PositionFormatter). It fails with
// ErrNoFormat when the plugin does not render its positions.
func (b *Buffer) FormatPosition(ctx context.Context, pos record.Position) (string, error) {
	resp, err := b.c.FormatPosition(ctx, &sluicev1.FormatPositionRequest{Position: pos})
	return formatted(resp, err)
}

// ComparePositions asks the buffer to order two of its positions (sdk.PositionComparer): negative when a
// is before b, 0 when equal, positive when after. It fails with ErrNoCompare when the plugin does not
// compare its positions; two empty positions ask only that.
func (b *Buffer) ComparePositions(ctx context.Context, a, c record.Position) (int, error) {
	resp, err := b.c.ComparePositions(ctx, &sluicev1.ComparePositionsRequest{A: a, B: c})
	if status.Code(err) == codes.Unimplemented {
		return 0, ErrNoCompare
	}
	if err != nil {
		return 0, fromWire(err)
	}
	return int(resp.GetOrder()), nil
}

// ErrNoCompare is ComparePositions' error for a buffer that does not compare its positions.
var ErrNoCompare = errors.New("the buffer does not compare its positions")

// Close closes the buffer.
func (b *Buffer) Close(ctx context.Context) error {
	_, err := b.c.Close(ctx, &sluicev1.Empty{})
	return fromWire(err)
}

// ReadStream receives batches from a source or buffer and sends acks back. Recv and Ack may be called
// from different goroutines; neither from two at once.
type ReadStream struct {
	s grpc.BidiStreamingClient[sluicev1.Ack, sluicev1.Batch]
}

// Recv returns the next batch. It returns io.EOF when the stage has ended the stream after all its
// batches were acked.
func (r *ReadStream) Recv() (*Batch, error) {
	b, err := r.s.Recv()
	if err != nil {
		return nil, fromWire(err)
	}
	return batchFromWire(b), nil
}

// Ack acknowledges every batch up to and including seq: they are durable downstream.
func (r *ReadStream) Ack(seq uint64) error {
	return sendErr(r.s.Send(&sluicev1.Ack{Seq: seq}))
}

// CloseSend tells the stage no more acks will come.
func (r *ReadStream) CloseSend() error { return r.s.CloseSend() }

// WriteStream sends batches to a sink or buffer and receives acks. Send and Recv may be called from
// different goroutines; neither from two at once.
type WriteStream struct {
	s   grpc.BidiStreamingClient[sluicev1.Batch, sluicev1.Ack]
	seq uint64
}

// Send sends b, numbering it: it sets b.Seq to the stream's next sequence number.
func (w *WriteStream) Send(b *Batch) error {
	w.seq++
	b.Seq = w.seq
	return sendErr(w.s.Send(b.wire(w.seq)))
}

// NextSeq returns the sequence number the next Send will give its batch.
func (w *WriteStream) NextSeq() uint64 { return w.seq + 1 }

// Recv returns the sequence number of the latest batch acknowledged: every batch up to it is durable. It
// returns io.EOF after CloseSend once the stage has acked everything. A sink's rejections are dropped:
// use RecvAck where they matter.
func (w *WriteStream) Recv() (uint64, error) {
	a, err := w.RecvAck()
	return a.Seq, err
}

// Ack is a stage's acknowledgement: every batch up to and including Seq is durable, except Rejects.
type Ack struct {
	Seq uint64
	// Rejects are records of the acknowledged batches that the sink did not write and never will
	// (sdk.RejectError); only sinks opened with DeadLetter send them.
	Rejects []Reject
}

// Reject names a record by its batch's sequence number and its index in that batch.
type Reject struct {
	Seq    uint64
	Index  int
	Reason string
}

// RecvAck is Recv with the sink's rejections.
func (w *WriteStream) RecvAck() (Ack, error) {
	a, err := w.s.Recv()
	if err != nil {
		return Ack{}, fromWire(err)
	}
	ack := Ack{Seq: a.GetSeq()}
	for _, r := range a.GetRejects() {
		ack.Rejects = append(ack.Rejects, Reject{Seq: r.GetSeq(), Index: int(r.GetIndex()), Reason: r.GetReason()})
	}
	return ack, nil
}

// CloseSend tells the stage that no more batches will come.
func (w *WriteStream) CloseSend() error { return w.s.CloseSend() }

// ErrNoFormat is FormatPosition's error for a plugin that does not render its positions.
var ErrNoFormat = errors.New("the plugin does not render its positions")

func formatted(resp *sluicev1.FormatPositionResponse, err error) (string, error) {
	if status.Code(err) == codes.Unimplemented {
		return "", ErrNoFormat
	}
	if err != nil {
		return "", fromWire(err)
	}
	return resp.GetText(), nil
}

func nonEmpty(p []byte) record.Position {
	if len(p) == 0 {
		return nil
	}
	return p
}
