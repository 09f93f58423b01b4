package file

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// SourceConfig holds the source's settings; its tags declare them (sdk.SettingsOf).
type SourceConfig struct {
	Path         string        `setting:"path,required" doc:"The file to read. Relative paths are relative to the directory sluice runs in."`
	Follow       bool          `setting:"follow" default:"false" doc:"Default false: at the end of the file the source is done and the pipeline completes (a last line without a newline is read too). True: keep reading lines as they are appended, like tail -f; a line is only read once its newline is written."`
	PollInterval time.Duration `setting:"poll_interval" default:"250ms" min:"1ms" doc:"With follow, how often to look for appended lines. Default 250ms; shorter lowers latency at the cost of more system calls while the file is idle."`
}

// Source reads a JSON Lines file. The SDK calls Open, then Read from one goroutine, then Close; Ack is a
// no-op (positions are stored downstream).
type Source struct {
	sdk.UnimplementedSource

	cfg      SourceConfig
	f        *os.File
	r        *bufio.Reader
	off      int64  // offset just after the last complete line read
	partial  []byte // bytes read after off: the start of a line whose newline has not been read yet
	meta     record.Meta
	maxBatch int
	maxBytes int
	timer    *time.Timer

	recs  []record.Record // reused between Reads
	arena []byte          // reused between Reads: the records' positions and payloads
}

// Open opens the file and, with req.After, seeks just after the line at that offset.
func (s *Source) Open(_ context.Context, req sdk.OpenRequest) error {
	var cfg SourceConfig // Decode applies the defaults and checks the bounds the tags declare
	if err := req.Settings.Decode(&cfg); err != nil {
		return fmt.Errorf("file: %w", err)
	}
	if err := checkPath(cfg.Path); err != nil {
		return err
	}
	f, err := os.Open(cfg.Path)
	if err != nil {
		return fsErr(err)
	}
	if req.After != nil {
		if len(req.After) != 8 {
			f.Close()
			return fmt.Errorf("file: position %x is not a file offset (want 8 bytes)", []byte(req.After))
		}
		off := int64(binary.BigEndian.Uint64(req.After))
		info, err := f.Stat()
		if err == nil && info.Size() < off {
			err = fmt.Errorf("%s holds %d bytes, fewer than the stored position (offset %d): was it truncated or replaced?", cfg.Path, info.Size(), off)
		}
		if err == nil {
			_, err = f.Seek(off, io.SeekStart)
		}
		if err != nil {
			f.Close()
			return fsErr(err)
		}
		s.off = off
	}
	s.cfg, s.f = cfg, f
	s.r = bufio.NewReaderSize(f, 64<<10)
	s.meta = sourceMeta(cfg.Path)
	s.maxBatch = max(req.MaxBatchRecords, 1)
	s.maxBytes = max(req.MaxBatchBytes, 1)
	return nil
}

// Read returns the next lines as records, at most MaxBatchRecords and about MaxBatchBytes. At the end of
// the file it returns what it has; with nothing, it returns sdk.ErrDone, or with follow waits for more
// until ctx is done. The records alias buffers that the next Read reuses.
func (s *Source) Read(ctx context.Context) ([]record.Record, error) {
	s.recs, s.arena = s.recs[:0], s.arena[:0]
	size := 0
	for len(s.recs) < s.maxBatch && size < s.maxBytes {
		line, err := s.r.ReadSlice('\n')
		switch {
		case err == nil:
			if len(s.partial) > 0 {
				line = append(s.partial, line...)
			}
			s.partial = s.partial[:0]
			s.off += int64(len(line))
			size += s.add(line)
			continue
		case errors.Is(err, bufio.ErrBufferFull):
			s.partial = append(s.partial, line...)
			continue
		case err != io.EOF:
			return nil, fmt.Errorf("file: reading %s: %w", s.cfg.Path, err)
		}
		// End of file: line holds the start of an unterminated last line, if any.
		s.partial = append(s.partial, line...)
		if len(s.recs) > 0 {
			return s.recs, nil
		}
		if !s.cfg.Follow {
			if len(s.partial) == 0 {
				return nil, sdk.ErrDone
			}
			s.off += int64(len(s.partial))
			s.add(s.partial)
			s.partial = s.partial[:0]
			if len(s.recs) == 0 {
				return nil, sdk.ErrDone // the unterminated last line was blank
			}
			return s.recs, nil
		}
		if err := s.poll(ctx); err != nil {
			return nil, err
		}
	}
	return s.recs, nil
}

// add appends a record for line (which ends at s.off) unless the line is blank, and returns its size.
func (s *Source) add(line []byte) int {
	var n int
	s.recs, s.arena, n = appendLine(s.recs, s.arena, line, s.off, record.OpInsert, s.meta)
	return n
}

// sourceMeta is the metadata of every record the source reads from path.
func sourceMeta(path string) record.Meta { return record.Meta{{Key: "file.path", Value: path}} }

// appendLine appends to recs the record of line, a line of the file that ends at offset off, unless the
// line is blank (no record), and returns both slices and the payload's size. The record's position is the
// offset, its payload the line without its line break; both are copied into arena, which the record
// aliases. Records appended earlier keep pointing into the arena's old array if append moved it: still
// valid.
func appendLine(recs []record.Record, arena, line []byte, off int64, op record.Op, meta record.Meta) ([]record.Record, []byte, int) {
	line = bytes.TrimRight(line, "\r\n")
	if len(bytes.TrimSpace(line)) == 0 {
		return recs, arena, 0
	}
	start := len(arena)
	arena = binary.BigEndian.AppendUint64(arena, uint64(off))
	mid := len(arena)
	arena = append(arena, line...)
	return append(recs, record.Record{
		Position: arena[start:mid:mid],
		Op:       op,
		Meta:     meta,
		Payload:  arena[mid:len(arena):len(arena)],
		Encoding: record.EncodingJSON,
	}), arena, len(line)
}

// poll waits poll_interval for the file to grow, and fails if it shrank (truncated or replaced).
func (s *Source) poll(ctx context.Context) error {
	if info, err := s.f.Stat(); err != nil {
		return fsErr(err)
	} else if info.Size() < s.off+int64(len(s.partial)) {
		return sdk.Permanentf("file: %s shrank to %d bytes after %d were read: was it truncated or replaced?", s.cfg.Path, info.Size(), s.off+int64(len(s.partial)))
	}
	if s.timer == nil {
		s.timer = time.NewTimer(s.cfg.PollInterval)
	} else {
		s.timer.Reset(s.cfg.PollInterval)
	}
	select {
	case <-ctx.Done():
		s.timer.Stop()
		return ctx.Err()
	case <-s.timer.C:
		return nil
	}
}

// Close closes the file.
func (s *Source) Close(context.Context) error {
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
