package redisconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/sdk"
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
		{name: "tls with a server name", cfg: func(c *Config) { c.Addr, c.TLS, c.TLSServerName = "10.0.0.1:6379", true, "redis.internal" },
			check: func(t *testing.T, o *goredis.UniversalOptions) {
				if o.TLSConfig == nil || o.TLSConfig.ServerName != "redis.internal" {
					t.Fatalf("TLS config %+v", o.TLSConfig)
				}
			}},
		{name: "bad url", cfg: func(c *Config) { c.URL = "http://x" }, invalid: "url"},
		{name: "cert without key", cfg: func(c *Config) { c.TLSCertFile = "/x" }, invalid: "go together"},
		{name: "missing CA file", cfg: func(c *Config) { c.TLSCAFile = "/nonexistent/ca.pem" }, invalid: "tls_ca_file"},
		{name: "CA file without a certificate", cfg: func(c *Config) { c.TLSCAFile = ca }, invalid: "holds no PEM certificate"},
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

// TestSettingsMatchDefaults checks that the spec's defaults are Defaults' and that Config decodes every
// setting Settings declares.
func TestSettingsMatchDefaults(t *testing.T) {
	s := sdk.Settings{}
	for _, d := range Settings {
		if d.Default == "" {
			continue
		}
		switch d.Type {
		case sdk.TypeInt:
			var n float64
			if _, err := fmt.Sscan(d.Default, &n); err != nil {
				t.Fatal(err)
			}
			s[d.Name] = n
		case sdk.TypeBool:
			s[d.Name] = d.Default == "true"
		default:
			s[d.Name] = d.Default
		}
	}
	var c Config
	if err := s.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if c != Defaults() {
		t.Fatalf("the spec's defaults decode to %+v; Defaults() is %+v", c, Defaults())
	}
	if len(Settings) != 13 {
		t.Fatalf("%d settings declared; Config has 13 fields: keep them in step", len(Settings))
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
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
