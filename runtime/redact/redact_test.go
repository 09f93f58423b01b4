package redact

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/sdk"
)

func TestString(t *testing.T) {
	var s Set
	if got := s.String("nothing to hide"); got != "nothing to hide" {
		t.Fatalf("empty set changed the text: %q", got)
	}
	s.Add("s3cret-pw", "abc", "", "Bearer s3cret-token", "s3cret-token")
	for _, tt := range []struct{ in, want string }{
		{"password=s3cret-pw", "password=" + Marker},
		{"s3cret-pw and s3cret-pw", Marker + " and " + Marker},
		{"abc is too short to hide", "abc is too short to hide"},
		{"Authorization: Bearer s3cret-token", "Authorization: " + Marker},
		{"token s3cret-token", "token " + Marker},
		{"no secret here", "no secret here"},
	} {
		if got := s.String(tt.in); got != tt.want {
			t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	var nilSet *Set
	if got := nilSet.String("s3cret-pw"); got != "s3cret-pw" {
		t.Errorf("a nil set changed the text: %q", got)
	}
}

func TestForms(t *testing.T) {
	var s Set
	s.Add(`pa"ss/wo rd`, "mongodb://app:p%40ss-word@h1:27017,h2:27017/?replicaSet=rs")
	for _, tt := range []struct{ in, want string }{
		// As a JSON writer escapes it, and percent-encoded in a URL.
		{`{"password":"pa\"ss/wo rd"}`, `{"password":"` + Marker + `"}`},
		{"https://h/?p=pa%22ss%2Fwo+rd", "https://h/?p=" + Marker},
		{"/x/pa%22ss%2Fwo%20rd", "/x/" + Marker},
		// The password of a URL, as written and decoded; the whole URL.
		{"auth failed for app with p@ss-word", "auth failed for app with " + Marker},
		{"uri app:p%40ss-word@h1", "uri app:" + Marker + "@h1"},
		{"dial mongodb://app:p%40ss-word@h1:27017,h2:27017/?replicaSet=rs: refused", "dial " + Marker + ": refused"},
	} {
		if got := s.String(tt.in); got != tt.want {
			t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if p, ok := urlPassword("redis://:only-password@h:6379/0"); !ok || p != "only-password" {
		t.Errorf("urlPassword = %q, %v", p, ok)
	}
	for _, v := range []string{"no url", "https://host/p@th", "https://user@host/", "https://user:@host/"} {
		if p, ok := urlPassword(v); ok {
			t.Errorf("urlPassword(%q) = %q, want none", v, p)
		}
	}
}

func TestError(t *testing.T) {
	var s Set
	s.Add("s3cret-pw")
	base := sdk.Permanentf("auth failed with s3cret-pw")
	err := s.Error(fmt.Errorf("opening: %w", base))
	if strings.Contains(err.Error(), "s3cret-pw") || !strings.Contains(err.Error(), "opening: auth failed with "+Marker) {
		t.Fatalf("Error() = %q", err)
	}
	if !errors.Is(err, sdk.ErrPermanent) {
		t.Fatalf("the redacted error lost its class: %v", err)
	}
	plain := errors.New("nothing secret")
	if s.Error(plain) != plain || s.Error(nil) != nil {
		t.Fatal("an error without a secret was replaced")
	}
}

type stringer struct{ s string }

func (x stringer) String() string { return x.s }

func TestHandler(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var s Set
			var buf bytes.Buffer
			var h slog.Handler = slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
			if format == "json" {
				h = slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
			}
			l := slog.New(s.Handler(h))
			l.Info("before any secret is known: s3cret-pw")
			s.Add("s3cret-pw")
			l = l.With("bound", "with s3cret-pw")
			l.WithGroup("g").Warn("message s3cret-pw", "err", errors.New("error s3cret-pw"), "str", "string s3cret-pw",
				"stringer", stringer{"stringer s3cret-pw"}, "bytes", []byte("bytes s3cret-pw"),
				slog.Group("inner", "x", "grouped s3cret-pw"), "n", 42, "list", []string{"a", "s3cret-pw"})
			l.Debug("plain", "n", 42, "ok", true)
			out := buf.String()
			if n := strings.Count(out, "s3cret-pw"); n != 1 || !strings.Contains(out, "before any secret is known: s3cret-pw") {
				t.Fatalf("the secret shows %d times, want once (before it was added):\n%s", n, out)
			}
			if n := strings.Count(out, Marker); n != 9 {
				t.Fatalf("%d markers, want 9:\n%s", n, out)
			}
			if format == "json" && !strings.Contains(out, `"n":42`) {
				t.Fatalf("a number attribute lost its type:\n%s", out)
			}
		})
	}
}

func TestConcurrentAdd(t *testing.T) {
	var s Set
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				s.Add(fmt.Sprintf("secret-%d-%d", i, j))
				_ = s.String("text with secret-0-0 in it")
			}
		})
	}
	wg.Wait()
	if s.Len() != 400 || s.String("secret-7-49") != Marker {
		t.Fatalf("Len = %d; String = %q", s.Len(), s.String("secret-7-49"))
	}
}

// BenchmarkHandler is the cost of redaction per log line: a line of about 200 bytes with five attributes
// through a text handler, without the redacting handler, and with it holding no value, 20 values none of
// which the line holds, and 20 values one of which it holds.
func BenchmarkHandler(b *testing.B) {
	for _, tt := range []struct {
		name    string
		wrap    bool
		secrets int
		leak    bool
	}{{"unwrapped", false, 0, false}, {"empty-set", true, 0, false}, {"20-secrets", true, 20, false}, {"20-secrets-one-leaked", true, 20, true}} {
		b.Run(tt.name, func(b *testing.B) {
			var s Set
			for i := range tt.secrets {
				s.Add(fmt.Sprintf("secret-value-%02d-%s", i, strings.Repeat("x", 16)))
			}
			h := slog.Handler(slog.NewTextHandler(io.Discard, nil))
			if tt.wrap {
				h = s.Handler(h)
			}
			l := slog.New(h)
			dsn := "mongodb://app@127.0.0.1:27017/"
			if tt.leak {
				dsn = "mongodb://app:secret-value-07-" + strings.Repeat("x", 16) + "@127.0.0.1:27017/"
			}
			err := errors.New("dial tcp 127.0.0.1:27017: connection refused")
			b.ReportAllocs()
			for b.Loop() {
				l.Info("plugin line: connected to the cluster and opened the stream", "pipeline", "orders",
					"plugin", "mongodb", "pid", 4242, "err", err, "dsn", dsn)
			}
		})
	}
}
