package file

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// AtomicPlugin returns the file-atomic plugin: the file sink that also stores the upstream position of
// each batch it writes, so that a pipeline ending in it is exactly-once. It is a plugin of its own
// because a capability belongs to the spec, not to a setting, and the plain file sink stays
// at-least-once with nothing beside its output file.
func AtomicPlugin() sdk.Plugin {
	sink := *Plugin().Spec.Sink
	sink.Summary = "Appends one line per record to a file, like the file sink, and stores each batch's upstream position with it (in PATH.position), so a pipeline ending here is exactly-once: after a crash, lines written after the stored position are cut off and written again."
	sink.Capabilities = sdk.Capabilities{AtomicPosition: true}
	return sdk.Plugin{
		Spec: sdk.Spec{
			Name:    "file-atomic",
			Version: "0.1.0",
			Summary: "JSON Lines output that stores the upstream position with the lines: exactly-once.",
			Author:  "sluice",
			Sink:    &sink,
		},
		NewSink: func() sdk.Sink { return &AtomicSink{} },
	}
}

// AtomicSink is a Sink that commits each write with its position. After appending a batch's lines (and
// syncing them, with sync) it replaces PATH.position — the file's length after the batch, 8 bytes
// big-endian, followed by the batch's position — by writing a temporary file and renaming it over the old
// one. The rename is the commit: on Open, the data file is cut back to the committed length, so lines
// written after the last committed position (a crash between the two steps) disappear, and Checkpoint
// returns that position. The SDK calls Open, Checkpoint, then Write from one goroutine, then Close.
type AtomicSink struct {
	Sink

	posPath string
	pos     record.Position
	size    int64
}

// positionSuffix names the position file beside the data file.
const positionSuffix = ".position"

// Open opens the file like Sink.Open, then cuts it back to the length its position file records. A data
// file that has lines but no position file was not written by this sink: Open refuses it rather than
// guess.
func (s *AtomicSink) Open(ctx context.Context, req sdk.OpenRequest) error {
	if err := s.Sink.Open(ctx, req); err != nil {
		return err
	}
	s.posPath = s.cfg.Path + positionSuffix
	committed, pos, err := readPosition(s.posPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		committed, pos = 0, nil
	case err != nil:
		return fsErr(err)
	}
	info, err := s.f.Stat()
	if err != nil {
		return fsErr(err)
	}
	switch size := info.Size(); {
	case size < committed:
		return sdk.Permanentf("file: %s holds %d bytes but %s says %d were written: the file was changed by someone else",
			s.cfg.Path, size, s.posPath, committed)
	case size > committed:
		if pos == nil {
			return fmt.Errorf("file: %s is not empty and has no %s: it was not written by the file-atomic sink; remove it or choose another path: %w",
				s.cfg.Path, positionSuffix, sdk.ErrInvalidSettings)
		}
		if err := s.f.Truncate(committed); err != nil {
			return fsErr(err)
		}
		if err := s.f.Sync(); err != nil {
			return fsErr(err)
		}
		if req.Logger != nil {
			req.Logger.Warn("file: cut off lines written after the last stored position; they will be written again",
				slog.String("path", s.cfg.Path), slog.Int64("bytes", size-committed))
		}
	}
	s.size, s.pos = committed, pos
	return nil
}

// Checkpoint returns the position stored with the last write, or nil.
func (s *AtomicSink) Checkpoint(context.Context) (record.Position, error) {
	return s.pos.Clone(), nil
}

// Write appends the batch's lines, then commits batch.Position with the file's new length.
func (s *AtomicSink) Write(ctx context.Context, b record.Batch) error {
	if err := s.Sink.Write(ctx, b); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.size += int64(len(s.buf))
	if err := writePosition(s.posPath, s.size, b.Position, s.cfg.Sync); err != nil {
		return fmt.Errorf("file: storing the position: %w", err)
	}
	s.pos = b.Position.Clone()
	return nil
}

func readPosition(path string) (int64, record.Position, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, nil, err
	}
	if len(data) < 8 {
		return 0, nil, fmt.Errorf("%s is corrupt (%d bytes)", path, len(data))
	}
	size := int64(binary.BigEndian.Uint64(data))
	return size, record.Position(data[8:]).Clone(), nil
}

// writePosition replaces path atomically with size and pos; with sync, the new file and the rename are
// flushed to disk before it returns.
func writePosition(path string, size int64, pos record.Position, sync bool) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	data := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(pos)), uint64(size))
	data = append(data, pos...)
	_, err = f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}
	if err := errors.Join(err, f.Close()); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if !sync {
		return nil
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
