package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// SinkConfig holds the sink's settings; its tags declare them (sdk.SettingsOf). format's values are the
// Formats.
type SinkConfig struct {
	Path   string `setting:"path,required" doc:"The file to append to. Relative paths are relative to the directory sluice runs in."`
	Format string `setting:"format" default:"payload" enum:"payload,record" doc:"payload (default): each line is the record's payload, as JSON Lines; records without a payload write no line. record: each line is a JSON envelope with position (base64), op, key (a string; key_b64 when it is not UTF-8), meta, encoding and payload, for when those matter or payloads are not JSON."`
	Sync   bool   `setting:"sync" default:"true" doc:"Default true: fsync after every write, so an acknowledged batch survives a power loss. False: leave flushing to the operating system, much faster on slow disks, but a machine crash can lose acknowledged records."`
}

// Sink appends records to a file, one line each. The SDK calls Open, then Write from one goroutine, then
// Close; the methods are also safe to call concurrently.
type Sink struct {
	sdk.UnimplementedSink

	mu     sync.Mutex
	cfg    SinkConfig
	format Format
	f      *os.File
	buf    []byte // reused between Writes
}

// Open creates the file (and its directory) if needed. If the file ends with a partial line — a crash
// in the middle of a write — it cuts it off, back to the last newline, and logs a warning: the records of
// that write were not acknowledged and the host writes them again.
func (s *Sink) Open(_ context.Context, req sdk.OpenRequest) error {
	cfg, format, f, err := openSinkFile(req)
	if err != nil {
		return err
	}
	if err := repairLogged(f, cfg.Path, req.Logger); err != nil {
		f.Close()
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg, s.format, s.f = cfg, format, f
	return nil
}

// openSinkFile decodes the sink's settings and opens (creating it and its directory if needed) the file
// to append to, without changing it.
func openSinkFile(req sdk.OpenRequest) (SinkConfig, Format, *os.File, error) {
	var cfg SinkConfig // Decode applies the defaults the tags declare
	if err := req.Settings.Decode(&cfg); err != nil {
		return cfg, "", nil, fmt.Errorf("file: %w", err)
	}
	if err := checkPath(cfg.Path); err != nil {
		return cfg, "", nil, err
	}
	if req.Lane > 0 {
		// A lane of a pipeline with ordered: false writes a file of its own: PATH (lane 0), PATH.lane-1…
		cfg.Path += fmt.Sprintf(".lane-%d", req.Lane)
	}
	format, err := ParseFormat(cfg.Format)
	if err != nil {
		return cfg, "", nil, sdk.InvalidSettings(fmt.Errorf("file: %w", err))
	}
	if dir := filepath.Dir(cfg.Path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return cfg, "", nil, fsErr(fmt.Errorf("creating the directory of %s: %w", cfg.Path, err))
		}
	}
	f, err := os.OpenFile(cfg.Path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return cfg, "", nil, fsErr(err)
	}
	return cfg, format, f, nil
}

// repairLogged runs repair on f, the file at path, and logs a warning when it cut something off.
func repairLogged(f *os.File, path string, log *slog.Logger) error {
	cut, err := repair(f)
	if err != nil {
		return fmt.Errorf("file: repairing the end of %s: %w", path, err)
	}
	if cut > 0 && log != nil {
		log.Warn("file: cut off a partial last line left by an interrupted write; its records will be written again",
			slog.String("path", path), slog.Int64("bytes", cut))
	}
	return nil
}

// repair truncates f after its last newline when it does not end with one, and returns how many bytes it
// cut off.
func repair(f *os.File) (int64, error) {
	info, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := info.Size()
	if size == 0 {
		return 0, nil
	}
	const chunk = 64 << 10
	buf := make([]byte, chunk)
	end := size
	for end > 0 {
		start := max(0, end-chunk)
		b := buf[:end-start]
		if _, err := f.ReadAt(b, start); err != nil && err != io.EOF {
			return 0, err
		}
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			end = start + int64(i) + 1
			break
		}
		if start == 0 {
			end = 0
		} else {
			end = start
		}
	}
	if end == size {
		return 0, nil
	}
	if err := f.Truncate(end); err != nil {
		return 0, err
	}
	return size - end, f.Sync()
}

// Write appends the batch's records as lines in one write (heartbeats and, in format payload, records
// without a payload write nothing) and, with sync, flushes them to disk before returning.
func (s *Sink) Write(_ context.Context, b record.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return errors.New("file: sink is not open")
	}
	buf, err := s.encode(b)
	if err != nil {
		return err
	}
	return s.appendBuf(buf)
}

// encode returns the batch's lines in s.buf, which it reuses. The caller holds s.mu.
func (s *Sink) encode(b record.Batch) ([]byte, error) {
	buf, err := AppendLines(s.buf[:0], b.Records, s.format)
	if err != nil {
		return nil, fsErr(err)
	}
	s.buf = buf
	return buf, nil
}

// appendBuf appends buf to the file in one write and, with sync, flushes it to disk. After an error some
// of buf may have been appended. The caller holds s.mu.
func (s *Sink) appendBuf(buf []byte) error {
	if len(buf) == 0 {
		return nil
	}
	if _, err := s.f.Write(buf); err != nil {
		return fsErr(err)
	}
	if s.cfg.Sync {
		if err := s.f.Sync(); err != nil {
			return fsErr(err)
		}
	}
	return nil
}

// Close flushes the file to disk and closes it.
func (s *Sink) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := errors.Join(s.f.Sync(), s.f.Close())
	s.f = nil
	if err != nil {
		return fsErr(err)
	}
	return nil
}
