//go:build unix

package plugin

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// A plugin built with the SDK listens on a Unix socket that go-plugin creates in $PLUGIN_UNIX_SOCKET_DIR
// (else in $TMPDIR) and removes when the plugin exits normally. A plugin that is killed — as all of them
// are when the host is SIGKILLed (the parent-death signal) — leaves its socket behind. So each sluice
// process gives its plugins a directory of its own, TMPDIR/sluice-UID/host-XXXXXXXX, which it removes
// when it ends, and which holds a file it keeps locked (flock) while it lives. The kernel releases the
// lock when the process dies however it dies, so a directory whose lock can be taken belongs to a dead
// sluice process: the next sluice removes it, unless one of its sockets still accepts connections.

// envSocketDir is go-plugin's variable naming the directory a plugin creates its socket in.
const envSocketDir = "PLUGIN_UNIX_SOCKET_DIR"

// errNoSockets is socketBase's error where plugins do not listen on Unix sockets: never, here.
var errNoSockets = errors.New("plugins do not listen on Unix sockets here")

// maxSocketDir bounds the length of the directory path: a socket path (the directory, "/plugin" and ten
// digits) must fit in sockaddr_un, 104 bytes on some systems.
const maxSocketDir = 80

// socketDir is one sluice process's directory of plugin sockets.
type socketDir struct {
	path string
	lock *os.File // holds the flock while the process lives
}

// socketBase returns TMPDIR/sluice-UID, created if needed, or why it cannot be used.
func socketBase() (string, error) {
	base := filepath.Join(os.TempDir(), fmt.Sprintf("sluice-%d", os.Geteuid()))
	if err := os.Mkdir(base, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	if r := unsafeDir(base); r != "" {
		return "", fmt.Errorf("%s is %s", base, r)
	}
	return base, nil
}

// newSocketDir creates this process's directory and locks it. The directory is made under a temporary
// name and renamed once its lock is held, so that no other sluice ever sees it unlocked.
func newSocketDir(base string) (*socketDir, error) {
	tmp, err := os.MkdirTemp(base, ".new-")
	if err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(tmp, "lock"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	path := filepath.Join(base, "host-"+strings.TrimPrefix(filepath.Base(tmp), ".new-"))
	if err == nil && len(path) > maxSocketDir {
		err = fmt.Errorf("%s is too long for a socket directory", path)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		os.RemoveAll(tmp)
		return nil, err
	}
	return &socketDir{path: path, lock: lock}, nil
}

// close removes the directory, with any socket a killed plugin left in it, and releases its lock.
func (d *socketDir) close() {
	os.RemoveAll(d.path)
	d.lock.Close()
}

// cleanSockets removes the directories of dead sluice processes under base. It logs what it removed and,
// at debug level, what it left.
func cleanSockets(base string, log *slog.Logger) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range entries {
		// host-*: a sluice process's directory. .new-*: one being made, locked an instant after it is
		// created and renamed an instant later; one older than a minute was left by a process killed then.
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "host-") && !strings.HasPrefix(e.Name(), ".new-") {
			continue
		}
		if info, err := e.Info(); err != nil || strings.HasPrefix(e.Name(), ".new-") && time.Since(info.ModTime()) < time.Minute {
			continue
		}
		dir := filepath.Join(base, e.Name())
		if removed, why := removeIfDead(dir); why == "" {
			log.Debug("removed the plugin socket directory of a sluice process that ended without removing it", "dir", dir, "sockets", removed)
		} else {
			log.Debug("left a plugin socket directory", "dir", dir, "reason", why)
		}
	}
}

// removeIfDead removes dir when its lock can be taken (its process is dead) and none of its sockets
// accepts a connection. It returns how many sockets it removed, or why it left dir.
func removeIfDead(dir string) (int, string) {
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR, 0)
	if err != nil {
		return 0, "no lock file: " + errText(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return 0, "its sluice process is running"
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, errText(err)
	}
	sockets := 0
	for _, e := range entries {
		if e.Type()&os.ModeSocket == 0 {
			continue
		}
		sockets++
		path := filepath.Join(dir, e.Name())
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return 0, path + " accepts connections"
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			return 0, path + ": " + err.Error()
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return 0, err.Error()
	}
	return sockets, ""
}
