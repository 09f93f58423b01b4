package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/sdktest"
)

// wrapper writes an executable script at path that appends its own name to the file ran and then runs
// the misbehave plugin: a working plugin whose every start can be counted.
func wrapper(t *testing.T, path, ran string, mode os.FileMode) string {
	t.Helper()
	writeExec(t, path, fmt.Sprintf("#!/bin/sh\necho %s >> %s\nexec %s \"$@\"\n", filepath.Base(path), ran, filepath.Join(bins, "misbehave")))
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// starts returns how many times each wrapper writing to ran was started.
func starts(t *testing.T, ran string) map[string]int {
	t.Helper()
	data, err := os.ReadFile(ran)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]int{}
	}
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, l := range strings.Fields(string(data)) {
		n[l]++
	}
	return n
}

func discover(t *testing.T, opts Options) *Catalog {
	t.Helper()
	c, err := Discover(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func chown(t *testing.T, path string, uid int) {
	t.Helper()
	if err := os.Lchown(path, uid, uid); err != nil {
		t.Fatalf("giving %s to uid %d (the test needs to run as root): %v", path, uid, err)
	}
}

// TestDiscoverRefusesWhatOthersCouldReplace: executables that another user could replace — owned by
// someone else, writable by group or everyone, in such a directory, or reached by a symlink into one —
// are skipped with a warning naming the file and why, and never started.
func TestDiscoverRefusesWhatOthersCouldReplace(t *testing.T) {
	const stranger = 12345
	ran := filepath.Join(t.TempDir(), "ran")
	dir := t.TempDir()
	wrapper(t, filepath.Join(dir, "ok"), ran, 0o755)
	chown(t, wrapper(t, filepath.Join(dir, "foreign"), ran, 0o755), stranger)
	wrapper(t, filepath.Join(dir, "group-writable"), ran, 0o775)
	wrapper(t, filepath.Join(dir, "world-writable"), ran, 0o757)
	open := t.TempDir()
	if err := os.Chmod(open, 0o1777); err != nil { // sticky, like /tmp: still anyone may add files
		t.Fatal(err)
	}
	wrapper(t, filepath.Join(open, "in-open-dir"), ran, 0o755)
	theirs := t.TempDir()
	chown(t, theirs, stranger)
	wrapper(t, filepath.Join(theirs, "in-their-dir"), ran, 0o755)
	shared := t.TempDir()
	if err := os.Chmod(shared, 0o775); err != nil {
		t.Fatal(err)
	}
	link(t, wrapper(t, filepath.Join(shared, "target"), ran, 0o755), filepath.Join(dir, "link-into-shared-dir"))

	logs, logger := newLog()
	c := discover(t, Options{Dirs: []string{dir, open, theirs}, Logger: logger})
	if p, ok := c.Lookup("misbehave"); !ok || p.Path != filepath.Join(dir, "ok") {
		t.Fatalf("misbehave: %+v, want it from %s", p, filepath.Join(dir, "ok"))
	}
	uid := os.Geteuid()
	replace := "; anyone who can write it can replace the plugin"
	want := map[string]string{
		filepath.Join(dir, "foreign"):              fmt.Sprintf("is owned by uid %d, not by the user running sluice (uid %d) or root", stranger, uid) + replace,
		filepath.Join(dir, "group-writable"):       "is writable by its group (mode 0775)" + replace,
		filepath.Join(dir, "world-writable"):       "is writable by everyone (mode 0757)" + replace,
		filepath.Join(open, "in-open-dir"):         fmt.Sprintf("is in directory %s, which is writable by everyone (mode 0777)", open) + replace,
		filepath.Join(theirs, "in-their-dir"):      fmt.Sprintf("is in directory %s, which is owned by uid %d, not by the user running sluice (uid %d) or root", theirs, stranger, uid) + replace,
		filepath.Join(dir, "link-into-shared-dir"): fmt.Sprintf("is in directory %s, which is writable by its group (mode 0775)", shared) + replace,
	}
	got := map[string]string{}
	for _, s := range c.Skipped() {
		got[s.Path] = s.Reason
	}
	for path, reason := range want {
		if got[path] != reason {
			t.Errorf("%s: skipped with %q\nwant %q", path, got[path], reason)
		}
		if line := fmt.Sprintf("level=WARN msg=\"skipping plugin file\" path=%s reason=%q", path, reason); strings.Count(logs.String(), line) != 1 {
			t.Errorf("no warning %s in:\n%s", line, logs)
		}
	}
	if len(got) != len(want) {
		t.Errorf("skipped %v, want %d files", got, len(want))
	}
	if n := starts(t, ran); len(n) != 1 || n["ok"] != 1 {
		t.Errorf("started %v, want only ok, once", n)
	}
}

// TestSpecCache: a binary whose spec is cached is not started again while it is unchanged, also when it
// was touched or copied over with the same content; a changed binary, a corrupt entry and an entry for
// another file are misses, probed and rewritten.
func TestSpecCache(t *testing.T) {
	ran := filepath.Join(t.TempDir(), "ran")
	dir, cache := t.TempDir(), filepath.Join(t.TempDir(), "cache")
	bin := wrapper(t, filepath.Join(dir, "mb"), ran, 0o755)
	discoverOnce := func(t *testing.T, wantStarts int, wantLog string) *Catalog {
		t.Helper()
		logs := &sdktest.Output{}
		c := discover(t, Options{Dirs: []string{dir}, CacheDir: cache,
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		if p, ok := c.Lookup("misbehave"); !ok || p.Path != bin || p.Spec.Sink == nil {
			t.Fatalf("misbehave: %+v", p)
		}
		if n := starts(t, ran)["mb"]; n != wantStarts {
			t.Errorf("started %d times, want %d", n, wantStarts)
		}
		if !strings.Contains(logs.String(), wantLog) {
			t.Errorf("no %q in the log:\n%s", wantLog, logs)
		}
		return c
	}
	entry := func() cacheEntry {
		t.Helper()
		data, err := os.ReadFile((&specCache{dir: cache}).file(bin))
		if err != nil {
			t.Fatal(err)
		}
		var e cacheEntry
		if err := json.Unmarshal(data, &e); err != nil {
			t.Fatalf("entry %s: %v", data, err)
		}
		return e
	}

	t.Run("miss", func(t *testing.T) {
		discoverOnce(t, 1, "") // probed and cached
		digest, err := FileDigest(bin)
		if err != nil {
			t.Fatal(err)
		}
		if e := entry(); e.Path != bin || e.SHA256 != digest || e.Protocol != sdk.ProtocolVersion || !strings.Contains(string(e.Spec), `"name":"misbehave"`) {
			t.Errorf("entry %+v", e)
		}
		if info, err := os.Stat(cache); err != nil || info.Mode().Perm() != 0o700 {
			t.Errorf("cache directory: %v, %v; want mode 0700", info, err)
		}
	})
	t.Run("hit just after the binary changed: digest checked", func(t *testing.T) {
		discoverOnce(t, 1, `msg="plugin spec from cache (digest checked)" path=`+bin)
	})
	t.Run("hit", func(t *testing.T) {
		defer func(w time.Duration) { racyWindow = w }(racyWindow)
		racyWindow = 0
		discoverOnce(t, 1, `msg="plugin spec from cache" path=`+bin)
	})
	t.Run("touched: same content", func(t *testing.T) {
		old := time.Now().Add(-time.Hour)
		if err := os.Chtimes(bin, old, old); err != nil {
			t.Fatal(err)
		}
		discoverOnce(t, 1, `msg="plugin spec from cache (digest checked)" path=`+bin)
		if e := entry(); e.Identity.Mtime != old.UnixNano() {
			t.Errorf("the entry was not rewritten with the new modification time: %+v", e.Identity)
		}
	})
	t.Run("changed", func(t *testing.T) {
		data, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		writeExec(t, bin, string(data)+"# changed\n")
		discoverOnce(t, 2, `msg="plugin spec cache: binary changed" path=`+bin)
	})
	t.Run("changed, same size, modification time put back", func(t *testing.T) {
		info, err := os.Stat(bin)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(bin)
		writeExec(t, bin, strings.Replace(string(data), "# changed", "# CHANGED", 1))
		if err := os.Chtimes(bin, info.ModTime(), info.ModTime()); err != nil {
			t.Fatal(err)
		}
		discoverOnce(t, 3, `msg="plugin spec cache: binary changed" path=`+bin)
	})
	t.Run("corrupt entry", func(t *testing.T) {
		if err := os.WriteFile((&specCache{dir: cache}).file(bin), []byte(`{"format":1,"spec":`), 0o600); err != nil {
			t.Fatal(err)
		}
		discoverOnce(t, 4, `reason="not a cache entry"`)
		if e := entry(); e.Path != bin {
			t.Errorf("the corrupt entry was not rewritten: %+v", e)
		}
	})
	t.Run("entry of another file", func(t *testing.T) {
		e := entry()
		e.Path = "/elsewhere/mb"
		data, _ := json.Marshal(e)
		if err := os.WriteFile((&specCache{dir: cache}).file(bin), data, 0o600); err != nil {
			t.Fatal(err)
		}
		discoverOnce(t, 5, `reason="for /elsewhere/mb"`)
	})
	t.Run("invalid spec", func(t *testing.T) {
		e := entry()
		e.Spec = []byte(`{"name":"Not A Name","sink":{}}`)
		data, _ := json.Marshal(e)
		if err := os.WriteFile((&specCache{dir: cache}).file(bin), data, 0o600); err != nil {
			t.Fatal(err)
		}
		discoverOnce(t, 6, `reason="invalid spec: `)
	})
	t.Run("cache directory others can write", func(t *testing.T) {
		if err := os.Chmod(cache, 0o777); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = os.Chmod(cache, 0o700) }()
		discoverOnce(t, 7, `level=WARN msg="not caching plugin specs: the cache directory is writable by everyone (mode 0777)" dir=`+cache)
		discoverOnce(t, 8, "")
	})
}

// TestSpecCacheConcurrent: catalogs discovering at once through one cache directory all get the spec,
// and leave one valid entry per binary and no temporary file.
func TestSpecCacheConcurrent(t *testing.T) {
	dir, cache := t.TempDir(), filepath.Join(t.TempDir(), "cache")
	for i := range 3 {
		data, err := os.ReadFile(filepath.Join(bins, "misbehave"))
		if err != nil {
			t.Fatal(err)
		}
		// The same plugin three times would be a duplicate: three directories, one catalog each.
		d := filepath.Join(dir, fmt.Sprint(i))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		writeExec(t, filepath.Join(d, "misbehave"), string(data))
	}
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			c, err := Discover(context.Background(), Options{Dirs: []string{filepath.Join(dir, fmt.Sprint(i%3))}, CacheDir: cache})
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			if _, ok := c.Lookup("misbehave"); !ok {
				t.Errorf("catalog %d has no misbehave", i)
			}
		})
	}
	wg.Wait()
	entries, err := os.ReadDir(cache)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Errorf("%d files in the cache, want 3 entries", len(entries))
	}
	sc := &specCache{dir: cache}
	for i := range 3 {
		if _, _, err := sc.read(filepath.Join(dir, fmt.Sprint(i), "misbehave")); err != nil {
			t.Errorf("entry %d: %v", i, err)
		}
	}
}

// TestPinCheckedAtEveryStart: a pinned plugin starts while its binary has the pinned digest; once the
// binary is replaced (here by the same program with bytes appended), Start fails with a permanent error
// naming where the pin is written, the path and both digests.
func TestPinCheckedAtEveryStart(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(bins, "misbehave"))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "misbehave")
	writeExec(t, bin, string(data))
	c := discover(t, Options{Dirs: []string{dir}})
	path, digest, err := c.Digest("misbehave")
	if err != nil || path != bin || !ValidDigest(digest) {
		t.Fatalf("Digest: %q %q %v", path, digest, err)
	}
	pin := Pin{SHA256: digest, Where: "p.yaml:7:15"}
	c.Pin("misbehave", pin)
	conn, err := c.Start(context.Background(), "misbehave", sdk.KindSink, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Start with the pinned binary: %v", err)
	}
	conn.Kill()

	// Replaced by an installer: a new file renamed over the old one.
	writeExec(t, bin+".new", string(data)+"appended")
	if err := os.Rename(bin+".new", bin); err != nil {
		t.Fatal(err)
	}
	_, now, _ := c.Digest("misbehave")
	_, err = c.Start(context.Background(), "misbehave", sdk.KindSink, false, slog.New(slog.DiscardHandler))
	want := "p.yaml:7:15: " + PinMismatch("misbehave", bin, now, pin)
	if err == nil || err.Error() != want || !sdk.IsPermanent(err) {
		t.Fatalf("Start with a replaced binary: %v (permanent %t)\nwant the permanent error %s", err, sdk.IsPermanent(err), want)
	}
	wantText := fmt.Sprintf(`plugin "misbehave": binary %s has sha256 %s, but %s is pinned; if the new binary is trusted, write its digest here`, bin, now, digest)
	if PinMismatch("misbehave", bin, now, pin) != wantText {
		t.Errorf("message %q\nwant %q", PinMismatch("misbehave", bin, now, pin), wantText)
	}
	// Not pinned: started whatever its digest; in-process: no binary, nothing to check.
	c2 := discover(t, Options{Dirs: []string{dir}})
	conn, err = c2.Start(context.Background(), "misbehave", sdk.KindSink, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Start unpinned: %v", err)
	}
	conn.Kill()
}
