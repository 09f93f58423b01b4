package protocol

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// The test binary is also the plugin these tests launch: started with envBehaviour set, TestMain serves
// crashSink instead of running tests.
const envBehaviour = "SLUICE_PROTOCOL_TEST_OPEN"

// stderr is the process's stderr before go-plugin replaces os.Stderr with a pipe.
var stderr = os.Stderr

func TestMain(m *testing.M) {
	if b, ok := os.LookupEnv(envOwnTLS); ok {
		if err := serveOwnTLS(b); err != nil {
			fmt.Fprintln(os.Stderr, "owntls:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if b, ok := os.LookupEnv(envBehaviour); ok {
		sdk.Serve(sdk.Plugin{
			Spec:    sdk.Spec{Name: "crash", Version: "1", Summary: "crashes on purpose", Sink: &sdk.Stage{Summary: "crashes"}},
			NewSink: func() sdk.Sink { return &crashSink{open: b} },
		})
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashSink does its open behaviour in Open: panic, exit (status 7, after a line on stderr), stderr (a line
// to os.Stderr, which go-plugin forwards), journal:FILE (append "open", and "close" with the state of the
// stage context at Close, to FILE) or nothing.
type crashSink struct {
	sdk.UnimplementedSink
	open string
	life context.Context
}

// journal appends line to the file named by a journal:FILE behaviour.
func (s *crashSink) journal(line string) {
	path, ok := strings.CutPrefix(s.open, "journal:")
	if !ok {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	fmt.Fprintln(f, line)
}

func (s *crashSink) Close(context.Context) error {
	if s.life != nil && s.life.Err() == nil {
		s.journal("close (context live)")
	} else {
		s.journal("close (context ended)")
	}
	return nil
}

func (s *crashSink) Open(_ context.Context, req sdk.OpenRequest) error {
	s.life = req.Context()
	s.journal("open")
	switch s.open {
	case "panic":
		panic("crash: panic in open")
	case "exit":
		fmt.Fprintln(stderr, "crash: exiting with status 7 in open")
		os.Exit(7)
	case "stderr":
		fmt.Fprintln(os.Stderr, "crash: a line on os.Stderr")
	}
	return nil
}

func (s *crashSink) Write(context.Context, record.Batch) error { return nil }

// logSink collects hclog lines.
type logSink struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func launchCrash(t *testing.T, open string) (*Conn, *logSink) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logs := &logSink{}
	c, err := Launch(LaunchConfig{
		Path:   exe,
		Env:    []string{envBehaviour + "=" + open},
		Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Kill)
	return c, logs
}

// alive reports whether pid is a process that has not been reaped.
func alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// TestKillClosesAnOpenStage: a plugin process the host stops (Kill) while its stage is open, without having
// closed it, closes the stage before it exits; its stage context is still live during Close.
func TestKillClosesAnOpenStage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	c, _ := launchCrash(t, "journal:"+path)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Sink().Open(ctx, OpenRequest{}); err != nil {
		t.Fatal(err)
	}
	ws, err := c.Sink().Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Send(NewBatch(nil, record.Position("a"))); err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Recv(); err != nil {
		t.Fatal(err)
	}
	c.Kill()
	if e := c.Exit(); e == nil || e.Code != 0 {
		t.Fatalf("the plugin did not exit by itself: %v", e)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "open\nclose (context live)\n"; string(got) != want {
		t.Fatalf("journal %q, want %q", got, want)
	}
}

func TestKillStoppedPlugin(t *testing.T) {
	c, _ := launchCrash(t, "")
	if _, err := c.Spec(context.Background()); err != nil {
		t.Fatal(err)
	}
	pid := c.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range 3 { // Kill is safe to call concurrently; every call returns when the first is done
		wg.Go(c.Kill)
	}
	wg.Wait()
	if took := time.Since(start); took > KillTimeout+2*time.Second {
		t.Errorf("Kill of a stopped plugin took %s; its bound is %s", took, KillTimeout)
	}
	if alive(pid) {
		t.Fatalf("plugin process %d still exists after Kill", pid)
	}
	e := c.Exit()
	if e == nil || e.Signal != "SIGKILL" || e.Code != -1 {
		t.Fatalf("Exit = %+v, want killed by SIGKILL", e)
	}
	select {
	case <-c.Done():
	default:
		t.Error("Done is not closed after Kill")
	}
	c.Kill() // again: returns at once
}

func TestKillRunningPluginExitsCleanly(t *testing.T) {
	c, logs := launchCrash(t, "")
	if _, err := c.Spec(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c.Exit() != nil {
		t.Fatal("Exit is set while the plugin runs")
	}
	c.Kill()
	e := c.Exit()
	if e == nil || e.Code != 0 || e.Signal != "" {
		t.Fatalf("Exit = %+v, want status 0: the plugin exits when asked", e)
	}
	if strings.Contains(logs.String(), "killing it") {
		t.Errorf("a plugin that exits when asked was killed:\n%s", logs)
	}
}

// TestAbortKillsWithoutAsking checks that Abort kills a running plugin with SIGKILL rather than asking
// it to exit (Kill lets it exit cleanly, see above), and that Kill afterwards returns at once.
func TestAbortKillsWithoutAsking(t *testing.T) {
	c, logs := launchCrash(t, "")
	if _, err := c.Spec(context.Background()); err != nil {
		t.Fatal(err)
	}
	pid := c.Pid()
	c.Abort()
	e := c.Exit()
	if e == nil || e.Signal != "SIGKILL" {
		t.Fatalf("Exit = %+v, want killed by SIGKILL", e)
	}
	if alive(pid) {
		t.Fatalf("plugin process %d still exists after Abort", pid)
	}
	if strings.Contains(logs.String(), "killing it") {
		t.Errorf("Abort waited for the plugin to exit before killing it:\n%s", logs)
	}
	start := time.Now()
	c.Kill()
	c.Abort()
	if took := time.Since(start); took > time.Second {
		t.Errorf("Kill and Abort after Abort took %s", took)
	}
}

func TestExitPanic(t *testing.T) {
	c, logs := launchCrash(t, "panic")
	err := c.Sink().Open(context.Background(), OpenRequest{Pipeline: "p"})
	if err == nil {
		t.Fatal("Open succeeded")
	}
	e := c.WaitExit(10 * time.Second)
	if e == nil {
		t.Fatal("the plugin did not exit after panicking")
	}
	if !strings.HasPrefix(e.Panic, "crash: panic in open (") || !strings.Contains(e.Panic, "protocol.(*crashSink).Open at ") || !strings.Contains(e.Panic, "process_test.go:") {
		t.Errorf("Panic = %q, want the message and the frame of crashSink.Open", e.Panic)
	}
	if e.Code != 2 || !strings.HasPrefix(e.String(), "panicked: crash: panic in open (") {
		t.Errorf("Exit: code %d, %q", e.Code, e)
	}
	if len(e.Stderr) == 0 || len(e.Stderr) > StderrLines {
		t.Errorf("%d stderr lines kept, want 1..%d", len(e.Stderr), StderrLines)
	}
	if n := strings.Count(logs.String(), "plugin panicked"); n != 1 {
		t.Errorf("%d \"plugin panicked\" lines, want 1:\n%s", n, logs)
	}
}

func TestExitStatus(t *testing.T) {
	c, _ := launchCrash(t, "exit")
	if err := c.Sink().Open(context.Background(), OpenRequest{Pipeline: "p"}); err == nil {
		t.Fatal("Open succeeded")
	}
	e := c.WaitExit(10 * time.Second)
	if e == nil {
		t.Fatal("the plugin did not exit")
	}
	if want := "exited with status 7: crash: exiting with status 7 in open"; e.Code != 7 || e.Panic != "" || e.String() != want {
		t.Errorf("Exit %+v: %q, want %q", e, e, want)
	}
}

func TestExitSignal(t *testing.T) {
	c, _ := launchCrash(t, "")
	if err := syscall.Kill(c.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e := c.WaitExit(10 * time.Second)
	if e == nil || e.Signal != "SIGKILL" || e.Code != -1 || e.String() != "was killed by signal SIGKILL" {
		t.Fatalf("Exit = %+v (%v), want killed by signal SIGKILL", e, e)
	}
}

// What a plugin writes to os.Stderr after the handshake reaches the host through go-plugin's stdio stream,
// not the raw stderr: it is kept too.
func TestForwardedStderrKept(t *testing.T) {
	c, _ := launchCrash(t, "stderr")
	if err := c.Sink().Open(context.Background(), OpenRequest{Pipeline: "p"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, lines := c.tail.snapshot()
		if strings.Contains(strings.Join(lines, "\n"), "crash: a line on os.Stderr") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stderr lines %q miss the plugin's line", lines)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.Kill()
	if e := c.Exit(); e == nil || !strings.Contains(strings.Join(e.Stderr, "\n"), "crash: a line on os.Stderr") {
		t.Fatalf("Exit = %+v", e)
	}
}

func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plugin")
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestStartErrors(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		reason       string // the start of StartError.Reason
		stderr       string // a line StartError.Stderr holds
	}{
		{"garbage on stdout", "#!/bin/sh\necho oops >&2\necho hello\nsleep 30\n", `printed "hello" on stdout instead of the plugin handshake`, "oops"},
		{"garbage with bars", "#!/bin/sh\necho 'a|b|c|d'\nsleep 30\n", "printed something other than the plugin handshake on stdout", ""},
		{"exits at once", "#!/bin/sh\necho 'cannot start: no config' >&2\nexit 3\n", "ended before the plugin handshake: it exited with status 3: cannot start: no config", "cannot start: no config"},
		{"another protocol version", "#!/bin/sh\necho '1|2|tcp|127.0.0.1:1|grpc'\nsleep 30\n", "speaks plugin protocol version 2; this sluice speaks version 1", ""},
		{"hangs", "#!/bin/sh\necho 'still thinking' >&2\nsleep 30\n", "did not complete the plugin handshake within 1s", "still thinking"},
		{"not executable by the kernel", "\x7fELF garbage", "cannot be executed: exec format error", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := script(t, tc.script)
			start := time.Now()
			_, err := Launch(LaunchConfig{Path: path, StartTimeout: time.Second})
			var se *StartError
			if !errors.As(err, &se) {
				t.Fatalf("Launch = %v, want a *StartError", err)
			}
			if took := time.Since(start); took > time.Second+KillTimeout+2*time.Second {
				t.Errorf("Launch took %s", took)
			}
			if !strings.HasPrefix(se.Reason, tc.reason) {
				t.Errorf("reason %q, want it to start with %q", se.Reason, tc.reason)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			if tc.stderr != "" && !strings.Contains(strings.Join(se.Stderr, "\n"), tc.stderr) {
				t.Errorf("stderr %q, want %q in it", se.Stderr, tc.stderr)
			}
		})
	}
}

// TestConnectErrors: a plugin that completes its handshake but cannot be reached at the address it
// announced is a *StartError that says so in one sentence, never in gRPC's words.
func TestConnectErrors(t *testing.T) {
	listen := func(hold bool) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				if hold {
					t.Cleanup(func() { c.Close() })
				} else {
					c.Close()
				}
			}
		}()
		return l.Addr().String()
	}
	silent, closing := listen(true), listen(false)
	// A port nothing listens on: one that was free a moment ago. Taken after the two listeners above, which
	// the kernel could otherwise hand that very port.
	closedPort, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closedPort.Addr().String()
	closedPort.Close()
	// Over TLS the handshake line must carry a certificate (its sixth field) for the host to go on and connect.
	certPEM, _, err := selfSigned()
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	cert := base64.RawStdEncoding.EncodeToString(block.Bytes)
	for _, plain := range []bool{false, true} {
		line := func(addr string) string {
			if plain {
				return "#!/bin/sh\necho '1|1|tcp|" + addr + "|grpc'\n"
			}
			return "#!/bin/sh\necho '1|1|tcp|" + addr + "|grpc|" + cert + "'\n"
		}
		closes := "announced " + closing + " in its plugin handshake and accepts connections there, but not over TLS"
		if plain {
			closes = "announced " + closing + " in its plugin handshake and accepts connections there, but no gRPC connection could be set up with it"
		}
		for _, tc := range []struct{ name, script, reason string }{
			{"refused", line(refused) + "sleep 30\n",
				"announced " + refused + " in its plugin handshake but nothing accepts connections there"},
			{"silent", line(silent) + "sleep 30\n",
				"announced " + silent + " in its plugin handshake but does not answer there within 1s"},
			{"closes connections", line(closing) + "sleep 30\n", closes},
			{"exits after the handshake", line(silent) + "exit 4\n",
				"ended right after its plugin handshake: it exited with status 4"},
		} {
			t.Run(fmt.Sprintf("%s/plain=%v", tc.name, plain), func(t *testing.T) {
				path := script(t, tc.script)
				_, err := Launch(LaunchConfig{Path: path, StartTimeout: time.Second, PlainText: plain})
				var se *StartError
				if !errors.As(err, &se) {
					t.Fatalf("Launch = %v, want a *StartError", err)
				}
				if se.Reason != tc.reason {
					t.Errorf("reason %q, want %q", se.Reason, tc.reason)
				}
				if strings.Contains(err.Error(), "rpc error") || strings.Contains(err.Error(), "desc =") {
					t.Errorf("error %q is in gRPC's words", err)
				}
			})
		}
	}
}

// A script that hangs in the handshake is killed with the children it started (which hold its pipes).
func TestStartTimeoutKillsChildren(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	path := script(t, "#!/bin/sh\nsleep 60 &\necho $! > "+pidFile+"\nwait\n")
	_, err := Launch(LaunchConfig{Path: path, StartTimeout: 500 * time.Millisecond})
	if err == nil {
		t.Fatal("Launch succeeded")
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	// The child was killed; it is reaped by init (it was re-parented), which may take a moment.
	deadline := time.Now().Add(5 * time.Second)
	for alive(child) && !zombie(child) {
		if time.Now().After(deadline) {
			t.Fatalf("the script's child %d is still running", child)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func zombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	return strings.Contains(string(stat), ") Z ")
}

// blockSink's Write ignores its context and never returns.
type blockSink struct{ sdk.UnimplementedSink }

func (blockSink) Open(context.Context, sdk.OpenRequest) error { return nil }
func (blockSink) Write(context.Context, record.Batch) error   { select {} }

func TestKillLocalBounded(t *testing.T) {
	c, err := Local(sdk.Plugin{
		Spec:    sdk.Spec{Name: "block", Version: "1", Summary: "blocks", Sink: &sdk.Stage{Summary: "blocks"}},
		NewSink: func() sdk.Sink { return blockSink{} },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sink := c.Sink()
	if err := sink.Open(ctx, OpenRequest{Pipeline: "p"}); err != nil {
		t.Fatal(err)
	}
	w, err := sink.Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := &Batch{Position: record.Position("1")}
	b.SetRecords([]record.Record{{Position: record.Position("1"), Op: record.OpInsert, Payload: []byte("x")}})
	if err := w.Send(b); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.Kill()
	if took := time.Since(start); took > KillTimeout+2*time.Second {
		t.Errorf("Kill took %s", took)
	}
	if c.Exit() != nil || c.WaitExit(time.Second) != nil {
		t.Error("an in-process plugin has an Exit")
	}
	select {
	case <-c.Done():
	default:
		t.Error("Done is not closed after Kill")
	}
}
