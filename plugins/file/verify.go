package file

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// The file stages implement sdk.Verifier, so that `sluice verify` can compare a pipeline between two
// files: the source emits every record it would read, the sink the last line it holds per key.
var (
	_ sdk.Verifier = (*Source)(nil)
	_ sdk.Verifier = (*Sink)(nil)
	_ sdk.Verifier = (*AtomicSink)(nil)
)

// verifyChunk is how many records a Verify hands to emit at a time.
const verifyChunk = 1024

// Verify emits, as record.OpSnapshot, every record a source opened now from the start would read: one per
// non-empty line, with the payload, metadata and position Read gives it. With follow, a last line without
// its newline is left out, as Read leaves it until the newline is written. The result's position is the
// offset after the last line emitted. The lines have no keys (a transform gives them one), so req.Keys
// cannot narrow the answer: every record is emitted.
func (s *Source) Verify(ctx context.Context, req sdk.VerifyRequest, emit func([]record.Record) error) (sdk.VerifyResult, error) {
	var cfg SourceConfig
	if err := req.Settings.Decode(&cfg); err != nil {
		return sdk.VerifyResult{}, fmt.Errorf("file: %w", err)
	}
	if err := checkPath(cfg.Path); err != nil {
		return sdk.VerifyResult{}, err
	}
	f, err := os.Open(cfg.Path)
	if err != nil {
		return sdk.VerifyResult{}, fsErr(err)
	}
	defer f.Close()
	meta := sourceMeta(cfg.Path)
	var (
		recs  []record.Record
		arena []byte
		off   int64
	)
	flush := func() error {
		if len(recs) == 0 {
			return nil
		}
		err := emit(recs)
		recs, arena = recs[:0], arena[:0] // emit keeps nothing of them (sdk.Verifier)
		return err
	}
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		if err := ctx.Err(); err != nil {
			return sdk.VerifyResult{}, err
		}
		line, err := r.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return sdk.VerifyResult{}, fsErr(fmt.Errorf("reading %s: %w", cfg.Path, err))
		}
		eof := err != nil
		if eof && (len(line) == 0 || cfg.Follow) {
			break
		}
		off += int64(len(line))
		recs, arena, _ = appendLine(recs, arena, line, off, record.OpSnapshot, meta)
		if len(recs) == verifyChunk {
			if err := flush(); err != nil {
				return sdk.VerifyResult{}, err
			}
		}
		if eof {
			break
		}
	}
	if err := flush(); err != nil {
		return sdk.VerifyResult{}, err
	}
	return sdk.VerifyResult{Position: binary.BigEndian.AppendUint64(nil, uint64(off))}, nil
}

// Verify emits the last line the file holds for each key (of those in req.Keys, when given), in the order
// the keys were first written: a line whose op is delete or that has no payload as a record.OpDelete
// without payload. Its metadata is the line's, so a record written with a route (record.MetaRoute) reads
// back with it. Only format record stores keys: a sink writing format payload cannot be verified. The
// result's destination is the file's path; its position is nil (the host stores the plain sink's
// positions).
func (s *Sink) Verify(ctx context.Context, req sdk.VerifyRequest, emit func([]record.Record) error) (sdk.VerifyResult, error) {
	cfg, err := verifiableSink(req.Settings)
	if err != nil {
		return sdk.VerifyResult{}, err
	}
	if err := verifyLines(ctx, cfg.Path, -1, req.KeySet(), emit); err != nil {
		return sdk.VerifyResult{}, err
	}
	return sdk.VerifyResult{Destination: cfg.Path}, nil
}

// Verify is Sink.Verify on the lines up to the length stored with the last position (later lines are
// cut off when the sink opens), and returns that position.
func (s *AtomicSink) Verify(ctx context.Context, req sdk.VerifyRequest, emit func([]record.Record) error) (sdk.VerifyResult, error) {
	cfg, err := verifiableSink(req.Settings)
	if err != nil {
		return sdk.VerifyResult{}, err
	}
	c, err := readPosition(cfg.Path + positionSuffix)
	switch {
	case errors.Is(err, os.ErrNotExist):
		c = commit{}
	case err != nil:
		return sdk.VerifyResult{}, err
	}
	size, pos := c.size, c.pos
	if err := verifyLines(ctx, cfg.Path, size, req.KeySet(), emit); err != nil {
		return sdk.VerifyResult{}, err
	}
	return sdk.VerifyResult{Position: pos, Destination: cfg.Path}, nil
}

// verifiableSink decodes a sink's settings and refuses format payload, whose lines carry no key.
func verifiableSink(settings sdk.Settings) (SinkConfig, error) {
	var cfg SinkConfig
	if err := settings.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("file: %w", err)
	}
	if err := checkPath(cfg.Path); err != nil {
		return cfg, err
	}
	if Format(cfg.Format) != FormatRecord {
		return cfg, sdk.InvalidSettings(fmt.Errorf("file: only a sink writing format %q can be verified: format %q writes no keys to compare by", FormatRecord, cfg.Format))
	}
	return cfg, nil
}

// verifyLines reads the envelopes of path, up to limit bytes (all with limit < 0), and emits the last one
// per key, restricted to the keys in want when it is not nil. A missing file holds nothing.
func verifyLines(ctx context.Context, path string, limit int64, want map[string]bool, emit func([]record.Record) error) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fsErr(err)
	}
	defer f.Close()
	var in io.Reader = f
	if limit >= 0 {
		in = io.LimitReader(f, limit)
	}
	latest := map[string]int{} // key → index in recs
	var recs []record.Record
	r := bufio.NewReaderSize(in, 64<<10)
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		line, err := r.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fsErr(fmt.Errorf("reading %s: %w", path, err))
		}
		eof := err != nil
		if eof && !bytes.HasSuffix(line, []byte("\n")) {
			break // a torn last line: the sink cuts it off when it opens
		}
		if len(bytes.TrimSpace(line)) > 0 {
			rec, err := parseEnvelope(line)
			if err != nil {
				return sdk.Permanentf("file: %s line %d: %v", path, n, err)
			}
			if want == nil || want[string(rec.Key)] {
				if i, ok := latest[string(rec.Key)]; ok {
					recs[i] = rec
				} else {
					latest[string(rec.Key)] = len(recs)
					recs = append(recs, rec)
				}
			}
		}
		if eof {
			break
		}
	}
	for chunk := range slices.Chunk(recs, verifyChunk) {
		if err := emit(chunk); err != nil {
			return err
		}
	}
	return nil
}

// parseEnvelope reads one FormatRecord line back into a record; a delete, or a line without payload,
// becomes an OpDelete without payload.
func parseEnvelope(line []byte) (record.Record, error) {
	var e struct {
		Position []byte            `json:"position"`
		Op       string            `json:"op"`
		Key      *string           `json:"key"`
		KeyB64   []byte            `json:"key_b64"`
		Meta     map[string]string `json:"meta"`
		Encoding string            `json:"encoding"`
		Payload  json.RawMessage   `json:"payload"`
	}
	if err := json.Unmarshal(line, &e); err != nil {
		return record.Record{}, fmt.Errorf("not a record envelope (format record): %w", err)
	}
	op, ok := record.ParseOp(e.Op)
	if !ok {
		return record.Record{}, fmt.Errorf("unknown op %q", e.Op)
	}
	rec := record.Record{Position: e.Position, Op: op, Key: e.KeyB64}
	if e.Key != nil {
		rec.Key = []byte(*e.Key)
	}
	metaKeys := make([]string, 0, len(e.Meta))
	for k := range e.Meta {
		metaKeys = append(metaKeys, k)
	}
	sort.Strings(metaKeys)
	for _, k := range metaKeys {
		rec.Meta = append(rec.Meta, record.Field{Key: k, Value: e.Meta[k]})
	}
	switch e.Encoding {
	case "json":
		rec.Encoding = record.EncodingJSON
	case "bson":
		rec.Encoding = record.EncodingBSON
	case "raw", "":
		rec.Encoding = record.EncodingRaw
	default:
		return record.Record{}, fmt.Errorf("unknown encoding %q", e.Encoding)
	}
	switch {
	case len(e.Payload) == 0 || string(e.Payload) == "null":
	case rec.Encoding == record.EncodingJSON:
		rec.Payload = e.Payload
	default:
		var s string
		if err := json.Unmarshal(e.Payload, &s); err != nil {
			return record.Record{}, fmt.Errorf("the %s payload is not a base64 string: %w", rec.Encoding, err)
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return record.Record{}, fmt.Errorf("the %s payload is not base64: %w", rec.Encoding, err)
		}
		rec.Payload = b
	}
	if op == record.OpDelete || len(rec.Payload) == 0 {
		rec.Op, rec.Payload = record.OpDelete, nil
	}
	return rec, nil
}
