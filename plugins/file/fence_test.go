package file_test

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/plugins/file"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// fenceFixture is a data file in a temporary directory, shared by the sinks of a test.
type fenceFixture struct {
	t    *testing.T
	path string
}

func newFenceFixture(t *testing.T) fenceFixture {
	return fenceFixture{t: t, path: filepath.Join(t.TempDir(), "out.jsonl")}
}

func (x fenceFixture) openReq(fence int64) sdk.OpenRequest {
	return sdk.OpenRequest{Settings: sdk.Settings{"path": x.path, "sync": true}, Fence: fence}
}

// open opens a new sink on the file with the fencing token fence and closes it when the test ends.
func (x fenceFixture) open(fence int64) *file.AtomicSink {
	x.t.Helper()
	s := &file.AtomicSink{}
	if err := s.Open(context.Background(), x.openReq(fence)); err != nil {
		x.t.Fatal(err)
	}
	x.t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// stored returns the committed length and the token in PATH.position, which must have format 1.
func (x fenceFixture) stored() (size, fence int64) {
	x.t.Helper()
	data, err := os.ReadFile(x.path + ".position")
	if err != nil {
		x.t.Fatal(err)
	}
	if len(data) < 17 || data[0] != 0x81 {
		x.t.Fatalf("position file % x is not format 1", data)
	}
	return int64(binary.BigEndian.Uint64(data[1:])), int64(binary.BigEndian.Uint64(data[9:]))
}

func (x fenceFixture) lines() []string {
	x.t.Helper()
	if info, err := os.Stat(x.path); err == nil && info.Size() == 0 {
		return nil
	}
	return readLines(x.t, x.path)
}

func posN(n uint64) record.Position { return binary.BigEndian.AppendUint64(nil, n) }

// batchN is a batch of one record, {"n":N}, at position N.
func batchN(n uint64) record.Batch {
	return record.Batch{Position: posN(n), Records: []record.Record{{Payload: []byte(`{"n":` + strconv.FormatUint(n, 10) + `}`)}}}
}

func checkpoint(t *testing.T, s *file.AtomicSink) record.Position {
	t.Helper()
	cp, err := s.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// TestAtomicSinkReadsFormat0: a position file written before fencing (length, then position) is read:
// the file is cut back to its length and Checkpoint returns its position; the next commit writes format
// 1, with token 0 without cluster mode, and an Open with a token stores it.
func TestAtomicSinkReadsFormat0(t *testing.T) {
	x := newFenceFixture(t)
	committed := "{\"n\":1}\n{\"n\":2}\n"
	if err := os.WriteFile(x.path, []byte(committed+"{\"n\":3}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := binary.BigEndian.AppendUint64(nil, uint64(len(committed)))
	if err := os.WriteFile(x.path+".position", append(old, posN(2)...), 0o644); err != nil {
		t.Fatal(err)
	}
	s := x.open(0)
	if cp := checkpoint(t, s); !cp.Equal(posN(2)) {
		t.Fatalf("checkpoint %x, want 2", []byte(cp))
	}
	if got := x.lines(); len(got) != 2 {
		t.Fatalf("lines after opening: %q, want the 2 committed", got)
	}
	if err := s.Write(context.Background(), batchN(3)); err != nil {
		t.Fatal(err)
	}
	if size, fence := x.stored(); size != int64(len(committed))+8 || fence != 0 {
		t.Fatalf("stored length %d token %d, want %d and 0", size, fence, len(committed)+8)
	}
	_ = s.Close(context.Background())

	s = x.open(7)
	if cp := checkpoint(t, s); !cp.Equal(posN(3)) {
		t.Fatalf("checkpoint after reopening %x, want 3", []byte(cp))
	}
	if _, fence := x.stored(); fence != 7 {
		t.Fatalf("stored token %d after an Open with 7", fence)
	}
}

// TestAtomicSinkRefusesBadPositionFile: a position file that is too short, or of a format this sink does
// not know, is a permanent error on Open, and the data file stays as it is.
func TestAtomicSinkRefusesBadPositionFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"format 0, short", []byte{0, 0, 0}, "corrupt (3 bytes)"},
		{"format 1, short", []byte{0x81, 0, 0, 0, 0, 0, 0, 0, 0, 1}, "corrupt (10 bytes, format 1)"},
		{"a later format", []byte{0x82, 0, 0, 0, 0, 0, 0, 0, 0}, "has format 0x82"},
		{"negative token", append([]byte{0x81, 0, 0, 0, 0, 0, 0, 0, 0}, 0xff, 0, 0, 0, 0, 0, 0, 0), "corrupt (length 0, token -"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newFenceFixture(t)
			if err := os.WriteFile(x.path+".position", tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			s := &file.AtomicSink{}
			err := s.Open(context.Background(), x.openReq(1))
			if err == nil || !errors.Is(err, sdk.ErrPermanent) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open: %v; want a permanent error with %q", err, tc.want)
			}
			if b, _ := os.ReadFile(x.path + ".position"); string(b) != string(tc.data) {
				t.Fatalf("the position file changed: % x", b)
			}
		})
	}
}

// TestAtomicSinkRefusesOlderToken: once a sink opened the file with token 5, an Open with 3 is refused
// (permanent) and changes nothing; 5 again (the same holder), 0 (no cluster) and 6 are opened.
func TestAtomicSinkRefusesOlderToken(t *testing.T) {
	x := newFenceFixture(t)
	s := x.open(5)
	if err := s.Write(context.Background(), batchN(1)); err != nil {
		t.Fatal(err)
	}
	_ = s.Close(context.Background())
	before, _ := os.ReadFile(x.path + ".position")

	old := &file.AtomicSink{}
	err := old.Open(context.Background(), x.openReq(3))
	if err == nil || !errors.Is(err, sdk.ErrPermanent) {
		t.Fatalf("Open with token 3 after 5: %v, want a permanent error", err)
	}
	for _, want := range []string{"fenced: a newer holder of the pipeline's lease writes " + x.path, "token 5", "this sink's 3"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %q", err, want)
		}
	}
	if after, _ := os.ReadFile(x.path + ".position"); string(after) != string(before) {
		t.Fatalf("the refused Open changed the position file: % x, was % x", after, before)
	}

	for i, fence := range []int64{5, 0, 6} {
		s := x.open(fence)
		if cp := checkpoint(t, s); !cp.Equal(posN(uint64(i + 1))) {
			t.Fatalf("Open with %d: checkpoint %x, want %d", fence, []byte(cp), i+1)
		}
		if err := s.Write(context.Background(), batchN(uint64(i+2))); err != nil {
			t.Fatalf("Write after Open with %d: %v", fence, err)
		}
		_ = s.Close(context.Background())
		if _, stored := x.stored(); stored != max(fence, 5) {
			t.Fatalf("after Open with %d the stored token is %d", fence, stored)
		}
	}
	if got := x.lines(); len(got) != 4 {
		t.Fatalf("lines %q, want 4", got)
	}
}

// TestAtomicSinkFencesStaleWriter: two sinks on one file, a with token 1, then b with token 2 (b took
// the pipeline's lease over while a did not know). a's writes after b's Open write nothing and fail
// permanently; b goes on from a's last commit.
func TestAtomicSinkFencesStaleWriter(t *testing.T) {
	ctx := context.Background()
	x := newFenceFixture(t)
	a := x.open(1)
	if err := a.Write(ctx, batchN(1)); err != nil {
		t.Fatal(err)
	}
	b := x.open(2)
	if cp := checkpoint(t, b); !cp.Equal(posN(1)) {
		t.Fatalf("b's checkpoint %x, want a's last commit 1", []byte(cp))
	}
	err := a.Write(ctx, batchN(2))
	if err == nil || !errors.Is(err, sdk.ErrPermanent) || !strings.Contains(err.Error(), "fenced: a newer holder of the pipeline's lease writes "+x.path+" (token 2 > this sink's 1)") {
		t.Fatalf("a's Write after b's Open: %v, want fenced (token 2 > 1), permanent", err)
	}
	if err := b.Write(ctx, batchN(2)); err != nil {
		t.Fatal(err)
	}
	if err := a.Write(ctx, batchN(3)); err == nil || !errors.Is(err, sdk.ErrPermanent) {
		t.Fatalf("a's second Write after b's Open: %v, want fenced", err)
	}
	if got := x.lines(); strings.Join(got, " ") != `{"n":1} {"n":2}` {
		t.Fatalf("lines %q, want n 1 and 2 once each", got)
	}
	if size, fence := x.stored(); size != 16 || fence != 2 {
		t.Fatalf("stored length %d token %d, want 16 and 2 (b's)", size, fence)
	}
}

// TestAtomicSinkRefusesSecondWriter: two sinks on one file without cluster mode (two pipelines given one
// path): the second to write finds a commit it did not make and writes nothing.
func TestAtomicSinkRefusesSecondWriter(t *testing.T) {
	ctx := context.Background()
	x := newFenceFixture(t)
	a, b := x.open(0), x.open(0)
	if err := a.Write(ctx, batchN(1)); err != nil {
		t.Fatal(err)
	}
	err := b.Write(ctx, batchN(5))
	if err == nil || !errors.Is(err, sdk.ErrPermanent) || !strings.Contains(err.Error(), "another sink writes the same file") {
		t.Fatalf("b's Write after a's: %v, want a permanent error naming another sink", err)
	}
	if got := x.lines(); len(got) != 1 || got[0] != `{"n":1}` {
		t.Fatalf("lines %q, want a's only", got)
	}
}

// lockedWrite starts a Write of batchN(1) on a sink opened with token 1 and returns once that Write holds
// the lock, has checked the position file and has not appended yet. release lets it go on; its error
// arrives on the returned channel.
func lockedWrite(t *testing.T, x fenceFixture) (release func(), done <-chan error) {
	t.Helper()
	inWrite, proceed := make(chan struct{}), make(chan struct{})
	a := &file.AtomicSink{}
	file.SetLockHooks(a, nil, func() {
		close(inWrite)
		<-proceed
	})
	if err := a.Open(context.Background(), x.openReq(1)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(context.Background()) })
	errc := make(chan error, 1)
	go func() { errc <- a.Write(context.Background(), batchN(1)) }()
	<-inWrite
	var once sync.Once
	release = func() { once.Do(func() { close(proceed) }) }
	t.Cleanup(release)
	return release, errc
}

// TestAtomicSinkOpenWaitsForWrite: the race fencing must close. a's Write has checked the token and not
// yet appended when b opens the file with a newer token: b's Open waits for the lock a holds, a's write
// commits, and b's Open then finds it committed and goes on after it. a's next Write is fenced.
func TestAtomicSinkOpenWaitsForWrite(t *testing.T) {
	x := newFenceFixture(t)
	release, written := lockedWrite(t, x)

	blocked := make(chan struct{})
	var once sync.Once
	b := &file.AtomicSink{}
	file.SetLockHooks(b, func() { once.Do(func() { close(blocked) }) }, nil)
	opened := make(chan error, 1)
	go func() { opened <- b.Open(context.Background(), x.openReq(2)) }()
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	select {
	case err := <-opened:
		t.Fatalf("b's Open returned (%v) while a's Write held the lock", err)
	case <-blocked:
	}

	release()
	if err := <-written; err != nil {
		t.Fatalf("a's Write, checked before b's Open: %v", err)
	}
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
	if cp := checkpoint(t, b); !cp.Equal(posN(1)) {
		t.Fatalf("b's checkpoint %x, want a's write 1", []byte(cp))
	}
	if got := x.lines(); len(got) != 1 || got[0] != `{"n":1}` {
		t.Fatalf("lines %q, want a's write once", got)
	}
	if err := b.Write(context.Background(), batchN(2)); err != nil {
		t.Fatal(err)
	}
	if size, fence := x.stored(); size != 16 || fence != 2 {
		t.Fatalf("stored length %d token %d, want 16 and 2", size, fence)
	}
}

// TestAtomicSinkOpenGivesUpWithItsContext: an Open that waits for a lock held by another writer ends
// when its context does, with the context's error (transient: the host tries again), changing nothing.
func TestAtomicSinkOpenGivesUpWithItsContext(t *testing.T) {
	x := newFenceFixture(t)
	release, written := lockedWrite(t, x)
	before, _ := os.ReadFile(x.path + ".position")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := &file.AtomicSink{}
	file.SetLockHooks(b, cancel, nil)
	err := b.Open(ctx, x.openReq(2))
	if err == nil || !errors.Is(err, context.Canceled) || errors.Is(err, sdk.ErrPermanent) || !strings.Contains(err.Error(), "locked by another writer") {
		t.Fatalf("Open while the lock is held, context cancelled: %v; want context.Canceled, not permanent, saying why", err)
	}
	if after, _ := os.ReadFile(x.path + ".position"); string(after) != string(before) {
		t.Fatalf("the abandoned Open changed the position file: % x, was % x", after, before)
	}
	release()
	if err := <-written; err != nil {
		t.Fatalf("a's Write: %v", err)
	}
	if _, fence := x.stored(); fence != 1 {
		t.Fatalf("stored token %d, want a's 1", fence)
	}
}
