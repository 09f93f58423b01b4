// Package state is the host's own position store, for stages that cannot store positions atomically with
// their data. It keeps, per pipeline, the last position acknowledged downstream, in an embedded bbolt
// database under the data directory; and beside it, in small files written without fsync, how many
// records were sent downstream beyond that position (the in-flight counts), so that a host that was killed
// can be followed by one that knows how many records it delivers again.
//
// A Store is safe for concurrent use. Only one process can open a data directory at a time.
package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/sluicehq/sluice/sdk/record"
)

// FileName is the database file inside the data directory.
const FileName = "state.db"

// InFlightDir is the directory, inside the data directory, of the in-flight counts: one 8-byte file per
// pipeline and stage, named PIPELINE.STAGE.
const InFlightDir = "inflight"

var positions = []byte("positions")

// Store persists positions.
type Store struct {
	db  *bolt.DB
	dir string

	mu     sync.Mutex
	counts map[string]*os.File // open in-flight count files by PIPELINE.STAGE
}

// Open opens (creating if needed) the store in dir. It fails at once if another process holds it.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state: creating data dir: %w", err)
	}
	path := filepath.Join(dir, FileName)
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, fs.ErrNotExist)
	// A file this call created and could not initialise (a full disk) holds no position: remove it, or
	// every later start would fail on it ("file size too small") even once there is room.
	discard := func() {
		if created {
			_ = os.Remove(path)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("state: %s is in use by another sluice process (one data dir per process; set --data-dir)", path)
	}
	if err != nil {
		discard()
		return nil, fmt.Errorf("state: opening %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(positions)
		return err
	}); err != nil {
		db.Close()
		discard()
		return nil, fmt.Errorf("state: %w", err)
	}
	return &Store{db: db, dir: dir, counts: map[string]*os.File{}}, nil
}

// Close closes the store.
func (s *Store) Close() error {
	s.mu.Lock()
	for name, f := range s.counts {
		f.Close()
		delete(s.counts, name)
	}
	s.mu.Unlock()
	return s.db.Close()
}

// key is pipeline id and stage name ("source" or "buffer": whose positions are stored).
func key(pipeline, stage string) []byte { return []byte(pipeline + "\x00" + stage) }

// Get returns the stored position for the pipeline's stage, or nil when none is stored.
func (s *Store) Get(pipeline, stage string) (record.Position, error) {
	var pos record.Position
	err := s.db.View(func(tx *bolt.Tx) error {
		pos = record.Position(tx.Bucket(positions).Get(key(pipeline, stage))).Clone()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	return pos, nil
}

// Put stores pos for the pipeline's stage durably (the write is fsynced before Put returns).
func (s *Store) Put(pipeline, stage string, pos record.Position) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(positions).Put(key(pipeline, stage), pos)
	})
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// LoadInFlight returns the in-flight count last stored for the pipeline's stage: 0 when none was.
func (s *Store) LoadInFlight(pipeline, stage string) (int64, error) {
	f, err := s.countFile(pipeline, stage)
	if err != nil {
		return 0, err
	}
	var b [8]byte
	if n, err := f.ReadAt(b[:], 0); n < len(b) {
		if err == io.EOF {
			return 0, nil // never written
		}
		return 0, fmt.Errorf("state: reading %s: %w", f.Name(), err)
	}
	return int64(binary.BigEndian.Uint64(b[:])), nil
}

// StoreInFlight stores n as the in-flight count of the pipeline's stage: the records sent downstream beyond
// its stored position. The write is not fsynced: it survives the sluice process being killed (the kernel
// holds it), not the machine crashing, and costs one small write.
func (s *Store) StoreInFlight(pipeline, stage string, n int64) error {
	f, err := s.countFile(pipeline, stage)
	if err != nil {
		return err
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	if _, err := f.WriteAt(b[:], 0); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// countFile opens (creating) the in-flight count file of the pipeline's stage, once.
func (s *Store) countFile(pipeline, stage string) (*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := pipeline + "." + stage
	if f := s.counts[name]; f != nil {
		return f, nil
	}
	dir := filepath.Join(s.dir, InFlightDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	s.counts[name] = f
	return f, nil
}

// Exists reports whether dir holds a state store, without creating one.
func Exists(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, FileName))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("state: %w", err)
}

// List returns the ids of the pipelines with stored positions, sorted.
func (s *Store) List() ([]string, error) {
	var ids []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(positions).ForEach(func(k, _ []byte) error {
			id, _, _ := bytes.Cut(k, []byte{0})
			if len(ids) == 0 || ids[len(ids)-1] != string(id) {
				ids = append(ids, string(id))
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// Delete forgets the pipeline's stored positions and in-flight counts (`sluice reset`).
func (s *Store) Delete(pipeline string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(positions)
		for _, stage := range []string{"source", "buffer"} {
			if err := b.Delete(key(pipeline, stage)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, stage := range []string{"source", "buffer"} {
		name := pipeline + "." + stage
		if f := s.counts[name]; f != nil {
			f.Close()
			delete(s.counts, name)
		}
		if err := os.Remove(filepath.Join(s.dir, InFlightDir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("state: %w", err)
		}
	}
	return nil
}
