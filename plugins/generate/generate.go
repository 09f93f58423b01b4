// Package generate is a sluice source that produces synthetic JSON records: a deterministic, resumable
// sequence for demos, tests and benchmarks. No external service is needed.
//
// Record i (counting from 0) has payload {"seq":i,"pad":"xxx…"} padded to payload_bytes, encoding JSON, op
// insert, key the decimal i, and position i as 8 bytes, big-endian. The same settings always produce the
// same records, so a pipeline resumed after position i continues with record i+1.
package generate

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// Plugin returns the generate plugin: its spec and its source constructor. Each call returns a new value;
// the host calls it once per process (or per in-process instance).
func Plugin() sdk.Plugin {
	return sdk.Plugin{
		Spec: sdk.Spec{
			Name:    "generate",
			Version: "0.1.0",
			Summary: "Synthetic JSON records: a deterministic, resumable sequence for demos, tests and benchmarks.",
			Author:  "sluice",
			Source: &sdk.Stage{
				Summary:  `Emits records {"seq":N,"pad":"…"} with N counting from 0; key is N in decimal, position N as 8 bytes big-endian. Resumes after a stored position.`,
				Settings: sdk.MustSettingsOf[Config](),
			},
		},
		NewSource: func() sdk.Source { return &Source{} },
	}
}

// MaxPayloadBytes is the largest payload_bytes: 16 MiB, the size of the largest MongoDB document, so the
// source can stand in for any real one. A record that size fits the host's default 64 MiB message, and a
// Read builds about a batch's bytes (one such record), never MaxBatchRecords of them.
const MaxPayloadBytes = 16 << 20

// recordOverhead is what a record takes in a Read's buffer besides its padding: 8 position bytes, up to
// 20 key digits, and up to 28 bytes of {"seq":N,"pad":""} around the padding.
const recordOverhead = 8 + 20 + 28

// Config holds the source's settings; its tags declare them (sdk.SettingsOf). payload_bytes' max is
// MaxPayloadBytes (TestOpenErrors and TestLargePayloadReads open the source at it and just above it).
type Config struct {
	Count        int64   `setting:"count" default:"0" min:"0" doc:"Records to produce, then the source is done and the pipeline completes. Default 0: unlimited."`
	Rate         float64 `setting:"rate" default:"0" min:"0" doc:"Records per second, spread evenly (a 10/s source emits one record every 100ms, not ten each second). Default 0: as fast as downstream takes them."`
	PayloadBytes int     `setting:"payload_bytes" default:"200" min:"0" max:"16777216" doc:"Size of each JSON payload in bytes: {\"seq\":N} is padded with a \"pad\" string field to this size. Default 200; larger payloads exercise throughput in bytes, smaller ones per-record overhead. At most 16 MiB, MongoDB's document limit; a record larger than batch_max_bytes travels in a batch of its own."`
}

// Source is the generate source. The SDK calls Open once, then Read from one goroutine; Ack is a no-op
// (the position is stored downstream) and Close releases nothing. A Source is not for reuse after Close.
type Source struct {
	sdk.UnimplementedSource

	cfg      Config
	next     int64 // seq of the next record
	maxBatch int

	recs []record.Record // reused between Reads
	buf  []byte          // reused between Reads: positions, keys and payloads of one Read
	pad  []byte          // payload_bytes of filler

	// Pacing: record slot k is due at start + k/rate; slots counts the slots used.
	start time.Time
	slots int64
	chunk int64 // records per Read when on schedule: about a millisecond's worth
	slack int64 // how far behind schedule the source may fall before it forgives the rest
	timer *time.Timer
}

// Open reads the settings and, with req.After, continues after that record.
func (s *Source) Open(_ context.Context, req sdk.OpenRequest) error {
	var cfg Config // Decode applies the defaults and checks the bounds the tags declare
	if err := req.Settings.Decode(&cfg); err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	s.cfg = cfg
	if req.After != nil {
		if len(req.After) != 8 {
			return fmt.Errorf("generate: position %x is not a generate position (want 8 bytes)", []byte(req.After))
		}
		s.next = int64(binary.BigEndian.Uint64(req.After)) + 1
	}
	s.maxBatch = max(req.MaxBatchRecords, 1)
	if req.MaxBatchBytes > 0 {
		// Build no more than a batch's bytes per Read (at least one record): large payloads must not
		// multiply into gigabytes of buffer.
		s.maxBatch = max(min(s.maxBatch, req.MaxBatchBytes/(recordOverhead+cfg.PayloadBytes)), 1)
	}
	s.pad = make([]byte, cfg.PayloadBytes)
	for i := range s.pad {
		s.pad[i] = 'x'
	}
	if cfg.Rate > 0 {
		// Emit about a millisecond's worth per Read (at least one record, at most a batch): even at high
		// rates, without a timer per record. After a stall of up to 100ms (a slow sink, a GC pause) the
		// source catches up; beyond that it drops the schedule's debt rather than bursting.
		s.chunk = int64(math.Min(float64(s.maxBatch), math.Max(1, cfg.Rate/1000)))
		s.slack = max(s.chunk, int64(cfg.Rate/10))
		s.start = time.Now()
	}
	return nil
}

// Read returns the next records: at most MaxBatchRecords, fewer when the rate allows fewer. It returns
// sdk.ErrDone after count records. The returned records alias buffers that the next Read reuses.
func (s *Source) Read(ctx context.Context) ([]record.Record, error) {
	n := int64(s.maxBatch)
	if s.cfg.Count > 0 {
		if s.next >= s.cfg.Count {
			return nil, sdk.ErrDone
		}
		n = min(n, s.cfg.Count-s.next)
	}
	if s.cfg.Rate > 0 {
		due, err := s.wait(ctx, n)
		if err != nil {
			return nil, err
		}
		n = min(n, due)
		s.slots += n
	} else if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.fill(int(n)), nil
}

// wait blocks until min(chunk, limit) records are due under the rate, and returns how many are due.
func (s *Source) wait(ctx context.Context, limit int64) (int64, error) {
	want := min(s.chunk, limit)
	for {
		due := int64(time.Since(s.start).Seconds()*s.cfg.Rate) + 1 - s.slots
		if due > s.slack {
			s.slots += due - s.slack // too far behind: forgive the rest
			due = s.slack
		}
		if due >= want {
			return due, nil
		}
		// Slot slots+want-1 is the one that makes want records due.
		at := s.start.Add(time.Duration(float64(s.slots+want-1) / s.cfg.Rate * float64(time.Second)))
		d := time.Until(at)
		if s.timer == nil {
			s.timer = time.NewTimer(d)
		} else {
			s.timer.Reset(d)
		}
		select {
		case <-ctx.Done():
			s.timer.Stop()
			return 0, ctx.Err()
		case <-s.timer.C:
		}
	}
}

// fill builds n records starting at s.next in the reused slice and buffer.
func (s *Source) fill(n int) []record.Record {
	need := n * (recordOverhead + len(s.pad))
	if cap(s.buf) < need {
		s.buf = make([]byte, 0, need)
	}
	if cap(s.recs) < n {
		s.recs = make([]record.Record, n)
	}
	recs := s.recs[:n]
	buf := s.buf[:0]
	for i := range recs {
		seq := s.next + int64(i)
		start := len(buf)
		buf = binary.BigEndian.AppendUint64(buf, uint64(seq))
		keyStart := len(buf)
		buf = strconv.AppendInt(buf, seq, 10)
		digits := len(buf) - keyStart
		payStart := len(buf)
		buf = append(buf, `{"seq":`...)
		buf = append(buf, buf[keyStart:keyStart+digits]...)
		// {"seq":N} is 8+digits bytes; with ,"pad":"" around the filler, 17+digits.
		if padLen := len(s.pad) - 17 - digits; padLen >= 0 {
			buf = append(buf, `,"pad":"`...)
			buf = append(buf, s.pad[:padLen]...)
			buf = append(buf, '"')
		}
		buf = append(buf, '}')
		recs[i] = record.Record{
			Position: record.Position(buf[start:keyStart:keyStart]),
			Op:       record.OpInsert,
			Key:      buf[keyStart:payStart:payStart],
			Payload:  buf[payStart:len(buf):len(buf)],
			Encoding: record.EncodingJSON,
		}
	}
	s.buf = buf
	s.next += int64(n)
	return recs
}
