package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// LockFileName is the name of the lock file that pins the plugin binaries of the connector files in its
// directory; `sluice plugins lock` writes it.
//
// It holds one line per plugin, "NAME sha256:HEX", sorted by name, after comment lines starting with '#';
// blank lines are ignored. Once it exists, every stage of those files that runs a plugin as a subprocess
// must have its plugin in it (or a sha256 key of its own), and the plugin's binary must have that digest.
const LockFileName = "sluice.lock"

// lockHeader opens every lock file WriteLock writes.
const lockHeader = `# sluice.lock: the plugin binaries the connector files in this directory may run, by SHA-256.
# Written by "sluice plugins lock FILE..."; checked by "sluice validate", "run" and "test". Commit it.
`

var lockNameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

// Lock is a lock file's pins, by plugin name.
type Lock struct {
	// Path is the lock file as given to ReadLock.
	Path string
	Pins map[string]LockPin
}

// LockPin is one plugin's line of a lock file.
type LockPin struct {
	// SHA256 is the digest in lower-case hex.
	SHA256 string
	// Pos is where the digest is written ("sha256:" included).
	Pos Pos
}

// ReadLock reads the lock file at path. It returns nil and no error when there is none, Errors (each with
// its line and column) when a line is not a pin, and another error when the file cannot be read.
func ReadLock(path string) (*Lock, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	l := &Lock{Path: path, Pins: map[string]LockPin{}}
	var errs Errors
	for i, line := range strings.Split(string(data), "\n") {
		at := func(col int) Pos { return Pos{File: path, Line: i + 1, Col: col} }
		text := strings.TrimRight(line, "\r")
		trimmed := strings.TrimLeft(text, " \t")
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		col := len(text) - len(trimmed) + 1
		if !utf8.ValidString(text) {
			errs = append(errs, &Error{Pos: at(col), Msg: "not UTF-8 text: a lock file holds lines NAME sha256:HEX"})
			continue
		}
		fields := strings.Fields(trimmed)
		name := fields[0]
		switch {
		case len(fields) == 1:
			errs = append(errs, &Error{Pos: at(col), Msg: fmt.Sprintf("%s has no digest: want NAME sha256:HEX", quote(name))})
			continue
		case len(fields) != 2:
			errs = append(errs, &Error{Pos: at(col), Msg: fmt.Sprintf("want NAME sha256:HEX, got %d fields", len(fields))})
			continue
		case !lockNameRE.MatchString(name):
			errs = append(errs, &Error{Pos: at(col), Msg: fmt.Sprintf("plugin name %s is invalid: want lower-case letters, digits, '-' or '_', starting with a letter", quote(name))})
			continue
		}
		dcol := col + strings.Index(trimmed[len(name):], fields[1]) + len(name)
		hex, ok := strings.CutPrefix(fields[1], "sha256:")
		if !ok || !lockDigestRE.MatchString(hex) {
			errs = append(errs, &Error{Pos: at(dcol), Msg: fmt.Sprintf("plugin %q: want sha256: and 64 lower-case hex digits, got %s", name, quote(fields[1]))})
			continue
		}
		if first, dup := l.Pins[name]; dup {
			errs = append(errs, &Error{Pos: at(col), Msg: fmt.Sprintf("plugin %q is pinned twice (first at line %d); keep one line", name, first.Pos.Line)})
			continue
		}
		l.Pins[name] = LockPin{SHA256: hex, Pos: at(dcol)}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return l, nil
}

var lockDigestRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// WriteLock writes a lock file at path holding pins (plugin name → SHA-256 in lower-case hex): to a
// temporary file beside it, renamed into place, so that a reader sees the old file or the new one.
func WriteLock(path string, pins map[string]string) error {
	var b strings.Builder
	b.WriteString(lockHeader)
	names := make([]string, 0, len(pins))
	for name := range pins {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(&b, "%s sha256:%s\n", name, pins[name])
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+LockFileName+".*")
	if err != nil {
		return fmt.Errorf("config: writing %s: %w", path, err)
	}
	_, err = f.WriteString(b.String())
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("config: writing %s: %w", path, err)
	}
	return nil
}
