//go:build unix

package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
)

// socketsIn returns the socket files under dir, at any depth.
func socketsIn(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Type()&os.ModeSocket != 0 {
			out = append(out, path)
		}
		return nil // skip what cannot be read: WalkDir then never fails
	})
	return out
}

// TestPluginSocketsInOwnDirectory: a plugin's socket is made in TMPDIR/sluice-UID/host-…, which Close
// removes with the socket a killed plugin left there.
func TestPluginSocketsInOwnDirectory(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	dir := t.TempDir()
	link(t, filepath.Join(bins, "misbehave"), filepath.Join(dir, "misbehave"))
	c, err := Discover(context.Background(), Options{Dirs: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn, err := c.Start(context.Background(), "misbehave", sdk.KindSink, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(tmp, fmt.Sprintf("sluice-%d", os.Geteuid()))
	socks := socketsIn(t, tmp)
	if len(socks) != 1 || !strings.HasPrefix(socks[0], base+"/host-") {
		t.Fatalf("sockets %v, want one in %s/host-…", socks, base)
	}
	if info, err := os.Stat(base); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("%s: %v, %v; want mode 0700", base, info, err)
	}
	// A SIGKILLed plugin cannot remove its socket.
	if err := syscall.Kill(conn.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	conn.WaitExit(10 * time.Second)
	conn.Kill()
	if got := socketsIn(t, tmp); len(got) != 1 {
		t.Fatalf("sockets after SIGKILL: %v, want the plugin's left behind", got)
	}
	c.Close()
	if entries, _ := os.ReadDir(base); len(entries) != 0 {
		t.Errorf("%s after Close holds %v, want nothing", base, entries)
	}
}

// TestCleanSockets removes the directories of dead sluice processes whose sockets no longer accept
// connections, and nothing else.
func TestCleanSockets(t *testing.T) {
	base := t.TempDir()
	// stale makes a socket file in dir that no process listens on any more, as a killed plugin leaves.
	stale := func(dir string) string {
		path := filepath.Join(dir, "plugin1234")
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		l.Close()
		return path
	}
	mkdir := func() *socketDir {
		d, err := newSocketDir(base)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	dead := mkdir()
	stale(dead.path)
	dead.lock.Close() // the process died: the kernel released its lock

	alive := mkdir()
	defer alive.close()
	stale(alive.path)

	listening := mkdir()
	l, err := net.Listen("unix", filepath.Join(listening.path, "plugin99"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	listening.lock.Close()

	noLock := filepath.Join(base, "host-nolock")
	if err := os.Mkdir(noLock, 0o700); err != nil {
		t.Fatal(err)
	}
	stale(noLock)
	foreign := stale(base) // go-plugin's default place: not provably ours
	old := time.Now().Add(-time.Hour)
	making := filepath.Join(base, ".new-123") // being made: too young to judge, even without its lock
	if err := os.Mkdir(making, 0o700); err != nil {
		t.Fatal(err)
	}
	abandoned := filepath.Join(base, ".new-456") // its maker died between creating and locking it
	if err := os.Mkdir(abandoned, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(abandoned, "lock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(abandoned, old, old); err != nil {
		t.Fatal(err)
	}

	logs, _ := newLog()
	cleanSockets(base, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	for path, want := range map[string]bool{
		dead.path: false, alive.path: true, listening.path: true, noLock: true, foreign: true, making: true, abandoned: false,
	} {
		if _, err := os.Lstat(path); (err == nil) != want {
			t.Errorf("%s: exists %t, want %t (%v)\n%s", path, err == nil, want, err, logs)
		}
	}
	for _, line := range []string{
		`msg="removed the plugin socket directory of a sluice process that ended without removing it" dir=` + dead.path + " sockets=1",
		`msg="left a plugin socket directory" dir=` + alive.path + ` reason="its sluice process is running"`,
		`msg="left a plugin socket directory" dir=` + listening.path + ` reason="` + filepath.Join(listening.path, "plugin99") + ` accepts connections"`,
	} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("no %s in:\n%s", line, logs)
		}
	}
	// The live process's directory still works.
	if _, err := os.Stat(filepath.Join(alive.path, "lock")); err != nil {
		t.Error(err)
	}
}
