package redisconn

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/services"
)

func TestOptions(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		cfg     func(c *Config)
		check   func(t *testing.T, o *goredis.UniversalOptions)
		invalid string // a problem, wrapping sdk.ErrInvalidSettings, naming this
	}{
		{name: "defaults", cfg: func(*Config) {}, check: func(t *testing.T, o *goredis.UniversalOptions) {
			if o.Addrs[0] != "127.0.0.1:6379" || o.TLSConfig != nil || o.MaxRetries != -1 || !o.ContextTimeoutEnabled || o.IsClusterMode {
				t.Fatalf("options %+v", o)
			}
		}},
		{name: "url replaces addr and credentials", cfg: func(c *Config) {
			c.Addr, c.Username, c.Password = "elsewhere:1", "u0", "p0"
			c.URL = "redis://u1:p1@redis.example:6390/3"
		}, check: func(t *testing.T, o *goredis.UniversalOptions) {
			if o.Addrs[0] != "redis.example:6390" || o.Username != "u1" || o.Password != "p1" || o.DB != 3 || o.TLSConfig != nil {
				t.Fatalf("options %+v", o)
			}
		}},
		{name: "rediss url means TLS, verified for its host", cfg: func(c *Config) { c.URL = "rediss://redis.example:6380" },
			check: func(t *testing.T, o *goredis.UniversalOptions) {
				if o.TLSConfig == nil || o.TLSConfig.ServerName != "redis.example" {
					t.Fatalf("TLS config %+v", o.TLSConfig)
				}
			}},
		{name: "tls with a server name", cfg: func(c *Config) { c.Addr, c.Enabled, c.ServerName = "10.0.0.1:6379", true, "redis.internal" },
			check: func(t *testing.T, o *goredis.UniversalOptions) {
				if o.TLSConfig == nil || o.TLSConfig.ServerName != "redis.internal" {
					t.Fatalf("TLS config %+v", o.TLSConfig)
				}
			}},
		{name: "bad url", cfg: func(c *Config) { c.URL = "http://x" }, invalid: "url"},
		{name: "cert without key", cfg: func(c *Config) { c.CertFile = "/x" }, invalid: "go together"},
		{name: "missing CA file", cfg: func(c *Config) { c.CAFile = "/nonexistent/ca.pem" }, invalid: "tls_ca_file"},
		{name: "CA file without a certificate", cfg: func(c *Config) { c.CAFile = ca }, invalid: "holds no PEM certificate"},
		{name: "zero timeout", cfg: func(c *Config) { c.Timeout = 0 }, invalid: "must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			tc.cfg(&c)
			o, err := c.Options()
			if tc.invalid != "" {
				if !errors.Is(err, sdk.ErrInvalidSettings) || !strings.Contains(err.Error(), tc.invalid) {
					t.Fatalf("Options = %v, want an invalid-settings error naming %q", err, tc.invalid)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, o)
		})
	}
}

// TestDefaults checks that Config's tags declare valid defaults, and which: what the host's cluster
// settings (runtime/cli) start from.
func TestDefaults(t *testing.T) {
	want := Config{Addr: "127.0.0.1:6379", DialTimeout: 5 * time.Second, Timeout: 10 * time.Second}
	if c := Defaults(); c != want {
		t.Fatalf("Defaults() = %+v, want %+v", c, want)
	}
	if err := (&sdk.Spec{Name: "x", Buffer: &sdk.Stage{Summary: "s", Settings: Settings, Rules: Rules}}).Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestWhereHidesCredentials(t *testing.T) {
	c := Config{Addr: "a:1", URL: "redis://user:secret@redis.example:6390/0"}
	if w := c.Where(); w != "redis.example:6390" {
		t.Fatalf("Where = %q", w)
	}
	c.URL = ""
	if w := c.Where(); w != "a:1" {
		t.Fatalf("Where = %q", w)
	}
}

func TestTransient(t *testing.T) {
	addr := services.RefusedAddr(t)
	c := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	refused := c.Ping(context.Background()).Err()
	if refused == nil {
		t.Fatal("PING to a closed port succeeded")
	}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{refused, true},
		{io.EOF, true},
		{goredis.ErrClosed, false},
	} {
		if got := Transient(tc.err); got != tc.want {
			t.Errorf("Transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// fakeServer listens on a local port and treats every connection with serve; it returns the address.
func fakeServer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

// TestExplain pings servers that fail in each way a connection can and checks the message: it names
// the server and the setting to check, says which timeout fired, and keeps the error's class.
func TestExplain(t *testing.T) {
	firstRead := func(c net.Conn) { _, _ = c.Read(make([]byte, 64)) }
	silent := fakeServer(t, func(net.Conn) {})
	closes := fakeServer(t, func(c net.Conn) { firstRead(c); c.Close() })
	http := fakeServer(t, func(c net.Conn) { firstRead(c); _, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")) })
	noauth := fakeServer(t, func(c net.Conn) {
		for {
			if _, err := c.Read(make([]byte, 256)); err != nil {
				return
			}
			_, _ = c.Write([]byte("-NOAUTH Authentication required.\r\n"))
		}
	})
	refused := services.RefusedAddr(t)
	for _, tc := range []struct {
		name      string
		cfg       func(c *Config)
		want      []string
		transient bool
	}{
		{"refused", func(c *Config) { c.Addr = refused }, []string{refused + " refused the connection", "is addr right?"}, true},
		{"unresolvable", func(c *Config) { c.Addr = "no-such-host.invalid:6379" },
			[]string{"the host of no-such-host.invalid:6379 does not resolve", "check addr"}, true},
		{"silent", func(c *Config) { c.Addr = silent },
			[]string{silent + " accepted the connection but sent no reply within timeout (300ms)", "tls: true", "is addr right?"}, true},
		{"silent, over TLS", func(c *Config) { c.Addr, c.Enabled = silent, true },
			[]string{"no TLS handshake with " + silent + " within dial_timeout (200ms)"}, true},
		{"closes", func(c *Config) { c.URL = "redis://" + closes + "/0" },
			[]string{closes + " closed the connection without a reply: is it a Redis server", "is url right?"}, true},
		{"not Redis", func(c *Config) { c.Addr = http },
			[]string{http + " answered, but not in Redis's protocol: is it a Redis server"}, true},
		{"a Redis reply", func(c *Config) { c.Addr = noauth }, []string{"Redis at " + noauth + " replied: NOAUTH Authentication required."}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			c.DialTimeout, c.Timeout = 200*time.Millisecond, 300*time.Millisecond
			tc.cfg(&c)
			o, err := c.Options()
			if err != nil {
				t.Fatal(err)
			}
			o.DialerRetries = 1
			client := goredis.NewUniversalClient(o)
			defer client.Close()
			perr := client.Ping(context.Background()).Err()
			err = c.Explain(perr)
			var ce *ConnectError
			if !errors.As(err, &ce) || !errors.Is(err, perr) {
				t.Fatalf("Explain(%v) = %v, want a ConnectError wrapping it", perr, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Explain(%v) = %q, want it to say %q", perr, err, w)
				}
			}
			if Transient(err) != tc.transient || Transient(err) != Transient(perr) {
				t.Errorf("Transient(%v) = %v, want %v (as for %v)", err, Transient(err), tc.transient, perr)
			}
		})
	}
	if err := (&Config{}).Explain(nil); err != nil {
		t.Fatalf("Explain(nil) = %v", err)
	}
	if err := (&Config{Addr: "a:1"}).Explain(context.Canceled); err != context.Canceled {
		t.Fatalf("Explain(context.Canceled) = %v, want it unchanged", err)
	}
}
