package plugin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/sluicehq/sluice/sdk"
)

// The spec cache keeps, for each plugin binary discovery has asked for its spec, that spec with the
// binary's identity (device, inode, size, modification and change times) and SHA-256, one JSON file per
// binary in Options.CacheDir. Discovery takes a spec from the cache instead of starting the binary when
// the binary's identity is the one recorded; when it is not, or when the entry was written so soon after
// the binary changed that a second change in the same clock tick would have gone unseen ("racy", as
// git's index calls it), the binary is hashed and the entry used only if the digest matches. Anything
// else — no entry, an entry that does not parse, is of another format or protocol version, names
// another path, holds an invalid spec, or a digest that does not match — is a miss: the binary is probed
// and the entry rewritten. Entries are written to a temporary file and renamed into place, so that
// concurrent sluice processes never see half an entry.

const (
	// cacheFormat is the version of the entries' layout; entries of another version are misses.
	cacheFormat = 1
	// maxEntryBytes bounds what is read of one entry: a spec is a few KiB.
	maxEntryBytes = 4 << 20
)

// racyWindow is how long after a binary last changed an entry must have been written for its identity
// alone to be trusted: more than the coarsest file-time granularity in use (2 s, FAT). A variable for
// tests.
var racyWindow = 3 * time.Second

// cacheEntry is one cached spec, as stored.
type cacheEntry struct {
	Format   int             `json:"format"`
	Protocol int             `json:"protocol"`
	Path     string          `json:"path"`
	Identity identity        `json:"identity"`
	SHA256   string          `json:"sha256"`
	Written  int64           `json:"written_ns"`
	Spec     json.RawMessage `json:"spec"`
}

// specCache reads and writes entries in dir. A nil *specCache caches nothing.
type specCache struct {
	dir string
	log *slog.Logger
}

// openCache returns the cache in dir, creating dir (0700) if needed; nil, with a warning, when dir
// cannot be created or could be written by another user, and nil when dir is "".
func openCache(dir string, log *slog.Logger) *specCache {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		log.Warn("not caching plugin specs: cannot create the cache directory", "dir", dir, "error", errText(err))
		return nil
	}
	if r := unsafeDir(dir); r != "" {
		log.Warn("not caching plugin specs: the cache directory is "+r, "dir", dir)
		return nil
	}
	return &specCache{dir: dir, log: log}
}

// file is the entry file of the binary at real (an absolute path, symlinks resolved).
func (c *specCache) file(real string) string {
	sum := sha256.Sum256([]byte(real))
	return filepath.Join(c.dir, hex.EncodeToString(sum[:16])+".json")
}

// lookup returns the cached spec of the binary at real, whose identity is id, and whether there was a
// usable one.
func (c *specCache) lookup(real string, id identity) (sdk.Spec, bool) {
	if c == nil {
		return sdk.Spec{}, false
	}
	e, spec, why := c.read(real)
	if why != nil {
		if !errors.Is(why, fs.ErrNotExist) {
			c.log.Debug("plugin spec cache: ignoring entry", "path", real, "entry", c.file(real), "reason", why.Error())
		}
		return sdk.Spec{}, false
	}
	if e.Identity == id && e.Written-id.changed() >= int64(racyWindow) {
		c.log.Debug("plugin spec from cache", "path", real)
		return spec, true
	}
	// The file was touched, copied in place or changed just before the entry was written: its content
	// decides.
	digest, err := FileDigest(real)
	if err != nil || digest != e.SHA256 {
		c.log.Debug("plugin spec cache: binary changed", "path", real)
		return sdk.Spec{}, false
	}
	if now, err := identify(real); err == nil && now == id {
		c.write(real, id, digest, e.Spec)
	}
	c.log.Debug("plugin spec from cache (digest checked)", "path", real)
	return spec, true
}

// read returns the entry of real and its spec, or why there is no usable one.
func (c *specCache) read(real string) (cacheEntry, sdk.Spec, error) {
	var e cacheEntry
	var spec sdk.Spec
	f, err := os.Open(c.file(real))
	if err != nil {
		return e, spec, err
	}
	defer f.Close()
	if info, err := f.Stat(); err != nil || info.Size() > maxEntryBytes {
		return e, spec, fmt.Errorf("larger than %d bytes", maxEntryBytes)
	}
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	switch {
	case dec.Decode(&e) != nil:
		return e, spec, errors.New("not a cache entry")
	case e.Format != cacheFormat:
		return e, spec, fmt.Errorf("format %d, not %d", e.Format, cacheFormat)
	case e.Protocol != sdk.ProtocolVersion:
		return e, spec, fmt.Errorf("plugin protocol version %d, not %d", e.Protocol, sdk.ProtocolVersion)
	case e.Path != real:
		return e, spec, fmt.Errorf("for %s", e.Path)
	case !ValidDigest(e.SHA256):
		return e, spec, errors.New("no valid digest")
	case json.Unmarshal(e.Spec, &spec) != nil:
		return e, spec, errors.New("spec does not parse")
	}
	if err := spec.Validate(); err != nil {
		return e, spec, fmt.Errorf("invalid spec: %w", err)
	}
	return e, spec, nil
}

// store records the spec of the binary at real, whose identity was id both before its digest was
// computed and after it was probed.
func (c *specCache) store(real string, id identity, digest string, spec sdk.Spec) {
	if c == nil {
		return
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		c.log.Debug("plugin spec cache: cannot encode spec", "path", real, "error", err)
		return
	}
	c.write(real, id, digest, raw)
}

func (c *specCache) write(real string, id identity, digest string, spec json.RawMessage) {
	data, err := json.Marshal(cacheEntry{Format: cacheFormat, Protocol: sdk.ProtocolVersion, Path: real, Identity: id,
		SHA256: digest, Written: time.Now().UnixNano(), Spec: spec})
	if err == nil {
		err = writeAtomic(c.file(real), data)
	}
	if err != nil {
		c.log.Debug("plugin spec cache: cannot write entry", "path", real, "error", err)
	}
}

// writeAtomic replaces the file at path with data: written to a temporary file beside it, then renamed.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
