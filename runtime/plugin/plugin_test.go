package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/sdk/sdktest"
)

// bins holds the binaries TestMain builds: misbehave, misbehave-v2 (serves plugin protocol version 2),
// misbehave-broken (answers with an invalid spec) and the stdout plugin.
var bins string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-plugin-test-")
	if err != nil {
		panic(err)
	}
	bins = dir
	code := func() int {
		defer os.RemoveAll(dir)
		if err := build(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

func build(dir string) error {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	misbehave := filepath.Join(root, "runtime", "internal", "testplugin", "misbehave")
	for _, b := range []struct{ name, dir, ldflags string }{
		{"misbehave", misbehave, ""},
		{"misbehave-v2", misbehave, "-X main.protocolVersion=2"},
		{"misbehave-broken", misbehave, "-X main.brokenSpec=true"},
		{"stdout", filepath.Join(root, "plugins", "stdout", "cmd", "stdout"), ""},
	} {
		cmd := exec.Command("go", "build", "-ldflags", b.ldflags, "-o", filepath.Join(dir, b.name), ".")
		cmd.Dir = b.dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %v\n%s", b.name, err, out)
		}
	}
	return nil
}

// waitFor waits until the log b holds text.
func waitFor(t *testing.T, b *sdktest.Output, text string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in:\n%s", text, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newLog() (*sdktest.Output, *slog.Logger) {
	b := &sdktest.Output{}
	return b, slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func writeExec(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

func link(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

func TestDiscoverSkipsBadExecutables(t *testing.T) {
	dir := t.TempDir()
	link(t, filepath.Join(bins, "misbehave"), filepath.Join(dir, "misbehave"))
	link(t, filepath.Join(bins, "misbehave-v2"), filepath.Join(dir, "v2"))
	link(t, filepath.Join(bins, "misbehave-broken"), filepath.Join(dir, "broken-spec"))
	link(t, filepath.Join(dir, "no-such-file"), filepath.Join(dir, "dangling"))
	writeExec(t, filepath.Join(dir, "garbage"), "#!/bin/sh\necho 'hello, world'\nsleep 30\n")
	writeExec(t, filepath.Join(dir, "exits"), "#!/bin/sh\necho 'usage: exits CONFIG' >&2\nexit 64\n")
	writeExec(t, filepath.Join(dir, "crashes"), "#!/bin/sh\nprintf 'panic: bad init\\n\\ngoroutine 1 [running]:\\nmain.init.0()\\n\\t/src/x/main.go:9 +0x1d\\n' >&2\nexit 2\n")
	writeExec(t, filepath.Join(dir, "hangs"), "#!/bin/sh\necho 'waiting for a license server' >&2\nsleep 60\n")
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("not executable: ignored"), 0o644); err != nil {
		t.Fatal(err)
	}
	logs, logger := newLog()
	start := time.Now()
	c, err := Discover(context.Background(), Options{Dirs: []string{dir}, Logger: logger, StartTimeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	t.Logf("discovery took %s", time.Since(start))
	if p, ok := c.Lookup("misbehave"); !ok || p.Path != filepath.Join(dir, "misbehave") {
		t.Errorf("misbehave (a symlink) not found: %+v", p)
	}
	want := map[string]string{
		"v2":          "speaks plugin protocol version 2; this sluice speaks version 1",
		"broken-spec": "invalid spec: ",
		"dangling":    "broken symlink: no such file or directory",
		"garbage":     `printed "hello, world" on stdout instead of the plugin handshake: not a sluice plugin`,
		"exits":       "ended before the plugin handshake: it exited with status 64: usage: exits CONFIG",
		"crashes":     "ended before the plugin handshake: it panicked: bad init (main.init.0 at /src/x/main.go:9)",
		"hangs":       "did not complete the plugin handshake within 2s",
	}
	skipped := map[string]string{}
	for _, s := range c.Skipped() {
		skipped[filepath.Base(s.Path)] = s.Reason
	}
	for name, reason := range want {
		if !strings.HasPrefix(skipped[name], reason) {
			t.Errorf("%s: skipped with %q, want %q", name, skipped[name], reason)
		}
	}
	if len(skipped) != len(want) {
		t.Errorf("skipped %v, want %d files", skipped, len(want))
	}
	out := logs.String()
	for name := range want {
		if n := strings.Count(out, `msg="skipping plugin file" path=`+filepath.Join(dir, name)+" "); n != 1 {
			t.Errorf("%d warnings about %s, want 1:\n%s", n, name, out)
		}
	}
	if n := strings.Count(out, "level="); n != len(want) {
		t.Errorf("%d log lines, want only the %d warnings:\n%s", n, len(want), out)
	}
	// The warning shows the last stderr lines where they say more than the reason.
	if !strings.Contains(out, `stderr="waiting for a license server"`) {
		t.Errorf("the warning about hangs misses its stderr:\n%s", out)
	}
}

func TestDiscoverDuplicateNames(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	data, err := os.ReadFile(filepath.Join(bins, "misbehave"))
	if err != nil {
		t.Fatal(err)
	}
	writeExec(t, filepath.Join(a, "misbehave"), string(data))
	writeExec(t, filepath.Join(b, "copy"), string(data))
	_, err = Discover(context.Background(), Options{Dirs: []string{a, b}})
	want := fmt.Sprintf(`plugin "misbehave" is provided twice: by %s and by %s; remove one`, filepath.Join(a, "misbehave"), filepath.Join(b, "copy"))
	if err == nil || err.Error() != want {
		t.Fatalf("Discover: %v, want %q", err, want)
	}
}

// A symlink to a binary in another searched directory is the same plugin, not a duplicate.
func TestDiscoverSameBinaryTwice(t *testing.T) {
	dir := t.TempDir()
	link(t, filepath.Join(bins, "misbehave"), filepath.Join(dir, "mb"))
	c, err := Discover(context.Background(), Options{Dirs: []string{dir, bins}})
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := c.Lookup("misbehave"); !ok || p.Path != filepath.Join(dir, "mb") {
		t.Fatalf("misbehave: %+v", p)
	}
}

func TestUnknownPluginMessage(t *testing.T) {
	dir := t.TempDir()
	writeExec(t, filepath.Join(dir, "garbage"), "#!/bin/sh\necho nope\n")
	missing := filepath.Join(t.TempDir(), "gone")
	c, err := Discover(context.Background(), Options{Dirs: []string{dir, missing}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Start(context.Background(), "nope", sdk.KindSink, false, slog.New(slog.DiscardHandler))
	want := fmt.Sprintf(`unknown plugin "nope"; searched %s, %s (does not exist); skipped: %s (printed "nope" on stdout instead of the plugin handshake: not a sluice plugin)`,
		dir, missing, filepath.Join(dir, "garbage"))
	if err == nil || err.Error() != want {
		t.Fatalf("Start: %v\nwant %s", err, want)
	}
}

// startSink discovers the binary of plugin name and starts its sink, opened with settings.
func startSink(t *testing.T, name string, settings map[string]any, stdout *sdktest.Output) (*protocol.Conn, *sdktest.Output, error) {
	t.Helper()
	logs, logger := newLog()
	dir := t.TempDir()
	link(t, filepath.Join(bins, name), filepath.Join(dir, name))
	opts := Options{Dirs: []string{dir}, Logger: logger}
	if stdout != nil {
		opts.Stdout = stdout
	}
	c, err := Discover(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.Start(context.Background(), name, sdk.KindSink, false, logger.With("plugin", name, "stage", "sink"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Kill)
	err = conn.Sink().Open(context.Background(), protocol.OpenRequest{Pipeline: "p", Settings: settings})
	return conn, logs, err
}

func TestPluginCrashExplained(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out.jsonl")
	t.Run("panic in open", func(t *testing.T) {
		conn, logs, err := startSink(t, "misbehave", map[string]any{"open": "panic", "path": out}, nil)
		if err == nil {
			t.Fatal("Open succeeded")
		}
		e := conn.WaitExit(10 * time.Second)
		if e == nil {
			t.Fatal("no exit")
		}
		if !strings.HasPrefix(e.Panic, "misbehave: panic in open (main.(*config).act at ") || !strings.Contains(e.Panic, "misbehave/main.go:") {
			t.Errorf("Panic = %q", e.Panic)
		}
		waitFor(t, logs, `level=ERROR msg="plugin panicked" plugin=misbehave stage=sink panic="misbehave: panic in open (main.(*config).act at `)
		if n := strings.Count(logs.String(), "level=ERROR"); n != 1 {
			t.Errorf("%d error lines, want one for the panic:\n%s", n, logs)
		}
	})
	t.Run("exit 7", func(t *testing.T) {
		conn, _, err := startSink(t, "misbehave", map[string]any{"open": "exit", "path": out}, nil)
		if err == nil {
			t.Fatal("Open succeeded")
		}
		e := conn.WaitExit(10 * time.Second)
		if want := "exited with status 7: misbehave: exiting with status 7 in open"; e == nil || e.Code != 7 || e.String() != want {
			t.Errorf("Exit %+v, want %q", e, want)
		}
	})
	t.Run("SIGKILL", func(t *testing.T) {
		conn, _, err := startSink(t, "misbehave", map[string]any{"path": out}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(conn.Pid(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if e := conn.WaitExit(10 * time.Second); e == nil || e.String() != "was killed by signal SIGKILL" {
			t.Errorf("Exit %+v", e)
		}
	})
	t.Run("SIGSTOP then Kill", func(t *testing.T) {
		conn, logs, err := startSink(t, "misbehave", map[string]any{"path": out, "ignore_sigterm": true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		pid := conn.Pid()
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		conn.Kill()
		if took := time.Since(start); took > protocol.KillTimeout+2*time.Second {
			t.Errorf("Kill took %s, bound %s", took, protocol.KillTimeout)
		}
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("process %d still exists", pid)
		}
		if e := conn.Exit(); e == nil || e.Signal != "SIGKILL" {
			t.Errorf("Exit %+v", e)
		}
		if !strings.Contains(logs.String(), `level=WARN msg="plugin did not exit when asked; killing it" plugin=misbehave stage=sink pid=`) {
			t.Errorf("no warning about the kill:\n%s", logs)
		}
	})
}

// write sends one batch of a record to an opened sink and waits for its ack.
func write(t *testing.T, conn *protocol.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := conn.Sink().Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pos := record.Position("1")
	if err := w.Send(protocol.NewBatch([]record.Record{{Position: pos, Op: record.OpInsert, Payload: []byte(`{"seq":1}`)}}, pos)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
}

func TestPluginStdout(t *testing.T) {
	t.Run("logged", func(t *testing.T) {
		stdout := &sdktest.Output{}
		conn, logs, err := startSink(t, "misbehave", map[string]any{"write": "stdout", "path": filepath.Join(t.TempDir(), "out")}, stdout)
		if err != nil {
			t.Fatal(err)
		}
		write(t, conn)
		waitFor(t, logs, `level=WARN msg="plugin wrote to stdout" plugin=misbehave stage=sink line="misbehave: a line on stdout in write"`)
		conn.Kill()
		if stdout.String() != "" {
			t.Errorf("the host's stdout got %q", stdout.String())
		}
	})
	t.Run("forwarded", func(t *testing.T) {
		buf := &sdktest.Output{}
		conn, logs, err := startSink(t, "stdout", map[string]any{"format": "payload"}, buf)
		if err != nil {
			t.Fatal(err)
		}
		write(t, conn)
		waitFor(t, buf, `{"seq":1}`)
		conn.Kill()
		if buf.String() != "{\"seq\":1}\n" {
			t.Errorf("the host's stdout got %q", buf.String())
		}
		if strings.Contains(logs.String(), "plugin wrote to stdout") {
			t.Errorf("the stdout sink's output was logged:\n%s", logs)
		}
	})
}
