package services

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RedisOptions configures a redis-server started by NewRedis or StartRedis. The zero value is the default:
// a free port, AOF on with appendfsync always, no RDB snapshots.
type RedisOptions struct {
	// Port is the TCP port on 127.0.0.1. Default (0): a free port (FreePort).
	Port int
	// Persistence is "always" (the default, ""): an append-only file fsynced before every reply, the
	// setting under which nothing Redis acknowledged is lost even if the machine crashes; "everysec": AOF
	// fsynced once a second (a Redis process crash loses nothing, a machine crash up to about a second);
	// "no": AOF written, flushing left to the operating system; "rdb": snapshots only (save 60 1);
	// "none": no persistence at all, a restart starts empty.
	Persistence string
	// TLSCertFile and TLSKeyFile, when set, make the server speak only TLS on Port, with this
	// certificate; TLSCAFile is the CA that signed it (and, for mutual TLS, the clients' certificates;
	// clients need no certificate unless TLSAuthClients).
	TLSCertFile, TLSKeyFile, TLSCAFile string
	TLSAuthClients                     bool
	// Password, when set, is required of the default user (requirepass); the readiness check uses it.
	Password string
	// Args are added to redis-server's command line ("--maxmemory", "100mb", or ACL users: "--user",
	// "alice", "on", ">secret", "~*", "+@all").
	Args []string
}

const redisInstall = "install Debian's package: apt-get install -y redis-server redis-tools"

// Redis is a redis-server child process listening on 127.0.0.1 only, with its data and its log
// (LogPath) in its own directory. Its methods are meant for one goroutine at a time.
type Redis struct {
	*Process
	// Addr is host:port to connect to.
	Addr string
	// Port is the TCP port.
	Port int

	password string
	tls      *tls.Config // for the readiness check; nil without TLS
}

// NewRedis describes a redis-server with its files in dir; it is not started until Start. It fails when
// redis-server is not installed, saying what to install, or when opts.Persistence is unknown.
func NewRedis(dir string, opts RedisOptions) (*Redis, error) {
	bin, err := LookPath("redis-server", redisInstall)
	if err != nil {
		return nil, err
	}
	port := opts.Port
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	args := []string{bin, "--bind", "127.0.0.1", "--protected-mode", "yes", "--dir", dir, "--daemonize", "no", "--logfile", ""}
	var tc *tls.Config
	if opts.TLSCertFile != "" {
		args = append(args, "--port", "0", "--tls-port", fmt.Sprint(port),
			"--tls-cert-file", opts.TLSCertFile, "--tls-key-file", opts.TLSKeyFile, "--tls-ca-cert-file", opts.TLSCAFile,
			"--tls-auth-clients", map[bool]string{true: "yes", false: "no"}[opts.TLSAuthClients])
		pem, err := os.ReadFile(opts.TLSCAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tc = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
		if opts.TLSAuthClients {
			cert, err := tls.LoadX509KeyPair(opts.TLSCertFile, opts.TLSKeyFile)
			if err != nil {
				return nil, err
			}
			tc.Certificates = []tls.Certificate{cert}
		}
	} else {
		args = append(args, "--port", fmt.Sprint(port))
	}
	switch opts.Persistence {
	case "", "always", "everysec", "no":
		fsync := opts.Persistence
		if fsync == "" {
			fsync = "always"
		}
		args = append(args, "--save", "", "--appendonly", "yes", "--appendfsync", fsync)
	case "rdb":
		args = append(args, "--save", "60 1", "--appendonly", "no")
	case "none":
		args = append(args, "--save", "", "--appendonly", "no")
	default:
		return nil, fmt.Errorf("redis: unknown persistence %q (want always, everysec, no, rdb or none)", opts.Persistence)
	}
	if opts.Password != "" {
		args = append(args, "--requirepass", opts.Password)
	}
	args = append(args, opts.Args...)
	return &Redis{Process: NewProcess("redis", dir, args), Addr: Addr(port), Port: port, password: opts.Password, tls: tc}, nil
}

// Start starts redis-server and waits (up to 30s) until it answers PING, which it does only once it has
// loaded its data.
func (r *Redis) Start() error {
	if err := r.Process.Start(); err != nil {
		return err
	}
	if err := r.WaitFor(30*time.Second, func(ctx context.Context) error { return ping(ctx, r.Addr, r.tls, r.password) }); err != nil {
		_ = r.Kill()
		return err
	}
	return nil
}

// Restart stops redis-server gracefully (SIGTERM: it flushes its files) and starts it again on the same
// port and directory.
func (r *Redis) Restart() error {
	if err := r.Stop(10 * time.Second); err != nil {
		return err
	}
	return r.Start()
}

// Crash kills redis-server with SIGKILL (nothing is flushed that was not already) and starts it again on
// the same port and directory, waiting until it has reloaded its data.
func (r *Redis) Crash() error {
	if err := r.Kill(); err != nil {
		return err
	}
	return r.Start()
}

// ping sends PING to addr (over TLS with tc, when set; after AUTH with password, if set) and wants +PONG (a server still loading its
// data answers -LOADING).
func ping(ctx context.Context, addr string, tc *tls.Config, password ...string) error {
	var c net.Conn
	var err error
	if tc != nil {
		c, err = (&tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: tc}).DialContext(ctx, "tcp", addr)
	} else {
		c, err = (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(2 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	cmd, replies := "PING\r\n", 1
	if len(password) > 0 && password[0] != "" {
		cmd = fmt.Sprintf("*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(password[0]), password[0]) + cmd
		replies++
	}
	if _, err := c.Write([]byte(cmd)); err != nil {
		return err
	}
	rd := bufio.NewReader(c)
	var line string
	for range replies {
		if line, err = rd.ReadString('\n'); err != nil {
			return err
		}
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		return fmt.Errorf("PING: %s", line)
	}
	return nil
}

// StartRedis starts a redis-server for a test in a directory under t.TempDir() and stops it when the test
// ends. It fails the test when redis-server is missing or does not start; it never skips.
func StartRedis(t testing.TB, opts RedisOptions) *Redis {
	t.Helper()
	r, err := startServer(func() (*Redis, error) { return NewRedis(filepath.Join(t.TempDir(), "redis"), opts) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = r.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("end of %s:\n%s", r.LogPath, r.LogTail(20))
		}
	})
	return r
}
