package services

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Process is a server running as a child process.
//
// Its methods are safe to call from one goroutine at a time; Stop and Kill may be called more than once.
type Process struct {
	// Name is a short label for messages ("redis", "kafka").
	Name string
	// Dir is the server's working directory: its data and its log (LogPath) live there.
	Dir string
	// LogPath is the file the process's stdout and stderr go to.
	LogPath string

	args []string
	env  []string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// NewProcess describes a server started with args (args[0] is the program) in dir, with env added to the
// current environment. It is not started until Start.
func NewProcess(name, dir string, args []string, env ...string) *Process {
	return &Process{Name: name, Dir: dir, LogPath: filepath.Join(dir, name+".log"), args: args, env: env}
}

// Start starts the process. The process gets its own process group so that Stop reaches its children, and is
// killed if this process dies (Linux parent-death signal).
func (p *Process) Start() error {
	if p.Running() {
		return fmt.Errorf("%s: already running", p.Name)
	}
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return err
	}
	log, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Dir = p.Dir
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: starting %s: %w", p.Name, p.args[0], err)
	}
	p.cmd, p.done, p.err = cmd, make(chan struct{}), nil
	go func(done chan struct{}) {
		p.err = cmd.Wait()
		close(done)
	}(p.done)
	return nil
}

// Pid returns the process id, or 0 when it is not running.
func (p *Process) Pid() int {
	if !p.Running() {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process has been started and has not exited.
func (p *Process) Running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Exited returns a channel closed when the process exits.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Stop sends SIGTERM to the process group and waits up to grace for it to exit, then kills it.
func (p *Process) Stop(grace time.Duration) error {
	if !p.Running() {
		return nil
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		return p.Kill()
	}
}

// Kill sends SIGKILL to the process group and waits for the process to exit.
func (p *Process) Kill() error {
	if !p.Running() {
		return nil
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	return nil
}

// WaitTCP waits until addr accepts TCP connections, the process exits, or timeout passes. Errors include
// the end of the process's log.
func (p *Process) WaitTCP(addr string, timeout time.Duration) error {
	return p.WaitFor(timeout, func(ctx context.Context) error {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// WaitFor calls ready every 100ms until it returns nil, the process exits, or timeout passes. Errors
// include the end of the process's log.
func (p *Process) WaitFor(timeout time.Duration, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		if last = ready(ctx); last == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited while starting (%v); end of %s:\n%s", p.Name, p.err, p.LogPath, p.LogTail(40))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s (%v); end of %s:\n%s", p.Name, timeout, last, p.LogPath, p.LogTail(40))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// LogTail returns the last n lines of the process's log.
func (p *Process) LogTail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RefusedAddr returns an address of 127.0.0.1 where nothing listens: connections to it are refused, as to a
// server that is down. The port is held until the test ends by a socket that is bound but never listens, so
// no other listener (another test's server, a service started later) can be given it meanwhile — a port that
// was merely free a moment ago can be, and a test would then reach that server instead of a refusal.
func RefusedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("a socket for a refused address: %v", err)
	}
	syscall.CloseOnExec(fd)
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("binding a refused address: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("the port of a refused address: %v", err)
	}
	return Addr(sa.(*syscall.SockaddrInet4).Port)
}

// server is what the Start helpers (StartRedis, StartKafka, StartMongo) start.
type server interface {
	Start() error
	portTaken() bool
}

// startServer makes a server with newServer and starts it, up to three times while it fails only because
// a port that was free when chosen was bound by another process before the server bound it: tests start
// many servers and plugins at once, each on a port the kernel hands out.
func startServer[S server](newServer func() (S, error)) (S, error) {
	for attempt := 1; ; attempt++ {
		s, err := newServer()
		if err != nil {
			return s, err
		}
		if err = s.Start(); err == nil || attempt == 3 || !s.portTaken() {
			return s, err
		}
	}
}

// portTaken reports whether the process's log says a port it wanted to listen on was in use.
func (p *Process) portTaken() bool {
	b, err := os.ReadFile(p.LogPath)
	return err == nil && bytes.Contains(b, []byte("Address already in use"))
}

// Addr formats 127.0.0.1:port.
func Addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// LookPath finds a program and, when it is missing, says how to install it.
func LookPath(program, install string) (string, error) {
	path, err := exec.LookPath(program)
	if errors.Is(err, exec.ErrNotFound) {
		return "", fmt.Errorf("%s is not installed; %s", program, install)
	}
	return path, err
}

// quote joins args for a readable message.
func quote(args []string) string { return strings.Join(args, " ") }
