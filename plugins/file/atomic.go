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
	"time"

	"github.com/gofrs/flock"
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
// syncing them, with sync) it replaces PATH.position — the file's committed length, the fencing token and
// the batch's position — by writing a temporary file and renaming it over the old one. The rename is the
// commit: on Open, the data file is cut back to the committed length, so lines written after the last
// committed position (a crash between the two steps) disappear, and Checkpoint returns that position.
// The SDK calls Open, Checkpoint, then Write from one goroutine, then Close.
//
// PATH.position has two layouts. Format 1, written since fencing:
//
//	0x81 | length (8 bytes, big-endian) | token (8 bytes, big-endian) | position (the rest)
//
// Format 0, written before, is read as well and has token 0:
//
//	length (8 bytes, big-endian) | position (the rest)
//
// A length is a non-negative int64, so a format-0 file never begins with a byte of 0x80 or more: the first
// byte tells the two apart, and a first byte of 0x82 or more is a later format, refused. (A format-1 file
// read by a file-atomic of before fencing reads as a length beyond any file: it refuses to open it rather
// than take the token for part of the position.)
//
// # Fencing
//
// The token is the largest fencing token (sdk.OpenRequest.Fence) any sink has opened the file with. Open
// with a token refuses (sdk.ErrPermanent) a file whose stored token is greater, and otherwise stores its
// own; Open without one (0: no cluster) adopts the stored token. Each Write first reads PATH.position
// again and writes nothing, failing with sdk.ErrPermanent, when the stored token is greater than the
// sink's own (a newer holder of the pipeline's lease opened the file), or when the committed length is not
// the one this sink committed last (another sink writes the same file).
//
// That check and the change it guards are one step: every Open (its cut-back and token store) and every
// Write (its check, append and commit) holds an exclusive lock (flock, LockFileEx on Windows) on
// PATH.lock, a file kept empty beside the data file. Say the sink a, with token 1, and the sink b, with
// token 2, share the file. If b's Open takes the lock first, it stores 2, and every Write of a after that
// reads 2 and writes nothing. If a's Write takes it first, it appends and commits before b's Open can read
// PATH.position, so b's Open finds that write committed, and b resumes after it. Nothing of a lands after
// b's cut-back, and a never renames its PATH.position over one b has written. A writer frozen while it
// holds the lock (SIGSTOP of the plugin) holds b's Open back until it runs again or dies (the system
// releases a dead process's locks); b's Open waits as long as its context lets it (the host's
// open_timeout), then fails and is retried. The lock is local to one machine, like the file.
type AtomicSink struct {
	Sink

	posPath string
	lock    *flock.Flock
	pos     record.Position
	size    int64 // the committed length
	fence   int64 // this sink's fencing token
	stored  bool  // PATH.position exists: read by Open or written since
	broken  bool  // a Write failed after appending: the file's end is unknown until Open cuts it back

	// Hooks for tests, nil otherwise: lockBusy runs each time the lock is found held by another writer,
	// locked runs in Write once the lock is held and the checks passed, before the append.
	lockBusy, locked func()
}

// The files beside the data file.
const (
	positionSuffix = ".position"
	lockSuffix     = ".lock"
)

// Position file formats (see AtomicSink).
const (
	positionFormat1 = 0x81
	format1Header   = 1 + 8 + 8
)

// lockRetry is how long a sink waits before it tries again to take a lock another writer holds.
const lockRetry = 10 * time.Millisecond

// commit is what PATH.position holds.
type commit struct {
	size  int64
	fence int64
	pos   record.Position
}

// Open opens the file like Sink.Open, then, holding the lock, cuts it back to the length its position file
// records and stores its fencing token. A data file that has lines but no position file was not written
// by this sink: Open refuses it rather than guess.
func (s *AtomicSink) Open(ctx context.Context, req sdk.OpenRequest) error {
	cfg, format, f, err := openSinkFile(req)
	if err != nil {
		return err
	}
	lock := flock.New(cfg.Path+lockSuffix, flock.SetPermissions(0o644))
	if err := s.acquire(ctx, lock); err != nil {
		f.Close()
		return err
	}
	c, stored, err := s.restore(f, cfg, req)
	if err := errors.Join(err, unlock(lock)); err != nil {
		f.Close()
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg, s.format, s.f = cfg, format, f
	s.posPath, s.lock = cfg.Path+positionSuffix, lock
	s.size, s.pos, s.fence, s.stored, s.broken = c.size, c.pos, c.fence, stored, false
	return nil
}

// restore brings f, the data file, back to its last commit and stores the sink's fencing token; the
// caller holds the lock. It returns the commit, with the sink's token, and whether PATH.position exists.
func (s *AtomicSink) restore(f *os.File, cfg SinkConfig, req sdk.OpenRequest) (commit, bool, error) {
	posPath := cfg.Path + positionSuffix
	if err := repairLogged(f, cfg.Path, req.Logger); err != nil {
		return commit{}, false, err
	}
	c, err := readPosition(posPath)
	stored := err == nil
	switch {
	case errors.Is(err, os.ErrNotExist):
		c = commit{}
	case err != nil:
		return commit{}, false, err
	}
	if req.Fence > 0 && c.fence > req.Fence {
		return commit{}, false, sdk.Permanentf("file: fenced: a newer holder of the pipeline's lease writes %s (token %d in %s > this sink's %d)",
			cfg.Path, c.fence, posPath, req.Fence)
	}
	info, err := f.Stat()
	if err != nil {
		return commit{}, false, fsErr(err)
	}
	switch size := info.Size(); {
	case size < c.size:
		return commit{}, false, sdk.Permanentf("file: %s holds %d bytes but %s says %d were written: the file was changed by someone else",
			cfg.Path, size, posPath, c.size)
	case size > c.size:
		if !stored {
			return commit{}, false, fmt.Errorf("file: %s is not empty and has no %s: it was not written by the file-atomic sink; remove it or choose another path: %w",
				cfg.Path, positionSuffix, sdk.ErrInvalidSettings)
		}
		if err := f.Truncate(c.size); err != nil {
			return commit{}, false, fsErr(err)
		}
		if err := f.Sync(); err != nil {
			return commit{}, false, fsErr(err)
		}
		if req.Logger != nil {
			req.Logger.Warn("file: cut off lines written after the last stored position; they will be written again",
				slog.String("path", cfg.Path), slog.Int64("bytes", size-c.size))
		}
	}
	if req.Fence > c.fence {
		// Always synced: a token lost in a machine crash would let an older holder write again.
		c.fence = req.Fence
		if err := writePosition(posPath, c, true); err != nil {
			return commit{}, false, fsErr(fmt.Errorf("storing the fencing token in %s: %w", posPath, err))
		}
		stored = true
	}
	return c, stored, nil
}

// Checkpoint returns the position stored with the last write, or nil.
func (s *AtomicSink) Checkpoint(context.Context) (record.Position, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pos.Clone(), nil
}

// Write, holding the lock, checks that no other sink has written the file since this one's last commit
// (see AtomicSink), appends the batch's lines, then commits batch.Position with the file's new length.
func (s *AtomicSink) Write(ctx context.Context, b record.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.f == nil:
		return errors.New("file: sink is not open")
	case s.broken:
		return fmt.Errorf("file: an earlier write to %s failed after appending; the sink must be opened again", s.cfg.Path)
	}
	buf, err := s.encode(b)
	if err != nil {
		return err
	}
	if err := s.acquire(ctx, s.lock); err != nil {
		return err
	}
	err = s.writeLocked(b.Position, buf)
	return errors.Join(err, unlock(s.lock))
}

// writeLocked is Write's part under the lock.
func (s *AtomicSink) writeLocked(pos record.Position, buf []byte) error {
	if err := s.check(); err != nil {
		return err
	}
	if s.locked != nil {
		s.locked()
	}
	if err := s.appendBuf(buf); err != nil {
		s.broken = true
		return err
	}
	c := commit{size: s.size + int64(len(buf)), fence: s.fence, pos: pos}
	if err := writePosition(s.posPath, c, s.cfg.Sync); err != nil {
		s.broken = true
		return fsErr(fmt.Errorf("storing the position in %s: %w", s.posPath, err))
	}
	s.size, s.pos, s.stored = c.size, pos.Clone(), true
	return nil
}

// check reads PATH.position and refuses to write when another sink has changed it since this sink's last
// commit: a newer fencing token, or another committed length.
func (s *AtomicSink) check() error {
	c, err := readPosition(s.posPath)
	switch {
	case errors.Is(err, os.ErrNotExist) && !s.stored:
		c = commit{}
	case errors.Is(err, os.ErrNotExist):
		return sdk.Permanentf("file: %s was removed while this sink writes %s", s.posPath, s.cfg.Path)
	case err != nil:
		return err
	}
	if c.fence > s.fence {
		return sdk.Permanentf("file: fenced: a newer holder of the pipeline's lease writes %s (token %d > this sink's %d); nothing written",
			s.cfg.Path, c.fence, s.fence)
	}
	if c.size != s.size {
		return sdk.Permanentf("file: %s says %d bytes of %s are committed, this sink committed %d: another sink writes the same file; nothing written",
			s.posPath, c.size, s.cfg.Path, s.size)
	}
	return nil
}

// acquire takes the exclusive lock l, trying again every lockRetry while another writer holds it, until
// ctx ends.
func (s *AtomicSink) acquire(ctx context.Context, l *flock.Flock) error {
	for {
		ok, err := l.TryLock()
		if err != nil {
			return fsErr(fmt.Errorf("locking %s: %w", l.Path(), err))
		}
		if ok {
			return nil
		}
		if s.lockBusy != nil {
			s.lockBusy()
		}
		t := time.NewTimer(lockRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("file: waiting for %s, locked by another writer of the file: %w", l.Path(), context.Cause(ctx))
		case <-t.C:
		}
	}
}

func unlock(l *flock.Flock) error {
	if err := l.Unlock(); err != nil {
		return fsErr(fmt.Errorf("unlocking %s: %w", l.Path(), err))
	}
	return nil
}

// readPosition reads a position file of either format. A file that is not one is a permanent error: it
// does not heal by itself.
func readPosition(path string) (commit, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return commit{}, err
		}
		return commit{}, fsErr(err)
	}
	var c commit
	switch {
	case len(data) > 0 && data[0] == positionFormat1:
		if len(data) < format1Header {
			return commit{}, sdk.Permanentf("file: %s is corrupt (%d bytes, format 1)", path, len(data))
		}
		c.size = int64(binary.BigEndian.Uint64(data[1:]))
		c.fence = int64(binary.BigEndian.Uint64(data[9:]))
		c.pos = record.Position(data[format1Header:]).Clone()
	case len(data) > 0 && data[0] >= 0x80:
		return commit{}, sdk.Permanentf("file: %s has format %#x, which this file-atomic does not know: a newer version wrote it", path, data[0])
	default:
		if len(data) < 8 {
			return commit{}, sdk.Permanentf("file: %s is corrupt (%d bytes)", path, len(data))
		}
		c.size = int64(binary.BigEndian.Uint64(data))
		c.pos = record.Position(data[8:]).Clone()
	}
	if c.size < 0 || c.fence < 0 {
		return commit{}, sdk.Permanentf("file: %s is corrupt (length %d, token %d)", path, c.size, c.fence)
	}
	return c, nil
}

// writePosition replaces path atomically with c, in format 1; with sync, the new file and the rename are
// flushed to disk before it returns.
func writePosition(path string, c commit, sync bool) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	data := append(make([]byte, 0, format1Header+len(c.pos)), positionFormat1)
	data = binary.BigEndian.AppendUint64(data, uint64(c.size))
	data = binary.BigEndian.AppendUint64(data, uint64(c.fence))
	data = append(data, c.pos...)
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
