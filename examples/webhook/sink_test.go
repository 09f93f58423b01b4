package webhook_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/examples/webhook"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// fast are retry settings that keep tests quick.
var fast = map[string]any{"retry_initial": "1ms", "retry_max": "5ms"}

func TestWrite(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings map[string]any // added to fast and the url
		respond  respondFunc
		wantErr  []string // substrings of the error; none: Write returns nil
		requests int
		warnings int
		minTime  time.Duration
		check    func(t *testing.T, err error)
	}{
		{name: "2xx at once", respond: ok, requests: 1},
		{
			name: "503 twice, then success",
			respond: func(n int, w http.ResponseWriter, _ *http.Request) bool {
				if n < 2 {
					http.Error(w, "try later", http.StatusServiceUnavailable)
					return false
				}
				w.WriteHeader(http.StatusAccepted)
				return true
			},
			requests: 3, warnings: 2,
		},
		{
			name:     "429 with Retry-After waits as asked",
			settings: map[string]any{"max_retries": 1},
			respond: func(n int, w http.ResponseWriter, _ *http.Request) bool {
				if n == 0 {
					w.Header().Set("Retry-After", "1")
					http.Error(w, "slow down", http.StatusTooManyRequests)
					return false
				}
				return true
			},
			requests: 2, warnings: 1, minTime: time.Second,
		},
		{
			name: "400 fails at once with the status and body",
			respond: func(_ int, w http.ResponseWriter, _ *http.Request) bool {
				http.Error(w, `{"error":"field \"total\" is required"}`, http.StatusBadRequest)
				return false
			},
			wantErr:  []string{"400 Bad Request", `field \"total\" is required`},
			requests: 1,
			check: func(t *testing.T, err error) {
				var se *webhook.StatusError
				if !errors.As(err, &se) || se.Code != http.StatusBadRequest || !strings.Contains(se.Snippet, `\"total\"`) {
					t.Errorf("error %v is not a StatusError with code 400 and the body", err)
				}
				if !errors.Is(err, sdk.ErrPermanent) {
					t.Errorf("error %v is not permanent: the host would retry a request the endpoint refuses", err)
				}
			},
		},
		{
			name: "a long error body is cut to a snippet",
			respond: func(_ int, w http.ResponseWriter, _ *http.Request) bool {
				http.Error(w, strings.Repeat("x", 10_000), http.StatusUnprocessableEntity)
				return false
			},
			wantErr:  []string{"422 Unprocessable Entity", strings.Repeat("x", 512)},
			requests: 1,
			check: func(t *testing.T, err error) {
				if len(err.Error()) > 700 {
					t.Errorf("error is %d bytes long", len(err.Error()))
				}
			},
		},
		{
			name:     "5xx until the retries run out",
			settings: map[string]any{"max_retries": 2},
			respond: func(_ int, w http.ResponseWriter, _ *http.Request) bool {
				http.Error(w, "still down", http.StatusServiceUnavailable)
				return false
			},
			wantErr:  []string{"giving up after 3 attempts", "503 Service Unavailable: still down"},
			requests: 3, warnings: 2,
		},
		{
			name:     "max_retries 0 fails at the first 500",
			settings: map[string]any{"max_retries": 0},
			respond: func(_ int, w http.ResponseWriter, _ *http.Request) bool {
				http.Error(w, "boom", http.StatusInternalServerError)
				return false
			},
			wantErr:  []string{"giving up after 1 attempts", "500 Internal Server Error", "boom"},
			requests: 1,
		},
		{
			name: "a dropped connection is retried",
			respond: func(n int, w http.ResponseWriter, _ *http.Request) bool {
				if n == 0 {
					panic(http.ErrAbortHandler)
				}
				return true
			},
			requests: 2, warnings: 1,
		},
		{
			name:     "a request over timeout is retried",
			settings: map[string]any{"timeout": "100ms"},
			respond: func(n int, w http.ResponseWriter, r *http.Request) bool {
				if n == 0 {
					select {
					case <-r.Context().Done():
					case <-time.After(5 * time.Second):
					}
					return false
				}
				return true
			},
			requests: 2, warnings: 1,
		},
		{
			name: "a redirect is not followed",
			respond: func(_ int, w http.ResponseWriter, r *http.Request) bool {
				http.Redirect(w, r, "/elsewhere", http.StatusFound)
				return false
			},
			wantErr:  []string{"302 Found"},
			requests: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newReceiver(t, tc.respond)
			s, logs := open(t, with(with(fast, tc.settings), map[string]any{"url": rc.srv.URL}))
			start := time.Now()
			err := s.Write(context.Background(), batch(3))
			elapsed := time.Since(start)
			switch {
			case len(tc.wantErr) == 0 && err != nil:
				t.Fatalf("Write: %v", err)
			case len(tc.wantErr) > 0 && err == nil:
				t.Fatalf("Write succeeded, want an error with %q", tc.wantErr)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if tc.check != nil {
				tc.check(t, err)
			}
			if got := len(rc.requests()); got != tc.requests {
				t.Errorf("%d requests, want %d", got, tc.requests)
			}
			if got := logs.warnings(); got != tc.warnings {
				t.Errorf("%d warnings logged, want %d:\n%s", got, tc.warnings, logs)
			}
			if elapsed < tc.minTime {
				t.Errorf("Write took %v, want at least %v", elapsed, tc.minTime)
			}
		})
	}
}

func TestWriteCancelled(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings map[string]any
		respond  respondFunc
	}{
		{"during the backoff", map[string]any{"retry_initial": "1m", "retry_max": "1m"},
			func(_ int, w http.ResponseWriter, _ *http.Request) bool {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return false
			}},
		{"during a Retry-After wait", fast,
			func(_ int, w http.ResponseWriter, _ *http.Request) bool {
				w.Header().Set("Retry-After", "120")
				http.Error(w, "slow down", http.StatusTooManyRequests)
				return false
			}},
		{"during a request", map[string]any{"timeout": "1m"},
			func(_ int, _ http.ResponseWriter, r *http.Request) bool {
				select {
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
				return false
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			arrived := make(chan struct{}, 10)
			rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) bool {
				arrived <- struct{}{}
				return tc.respond(n, w, r)
			})
			s, _ := open(t, with(tc.settings, map[string]any{"url": rc.srv.URL}))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Write(ctx, batch(2)) }()
			<-arrived
			time.Sleep(20 * time.Millisecond) // let Write reach its wait (or stay in the request)
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("Write = %v, want context.Canceled", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Write did not return within 2s of the cancellation")
			}
			if got := len(rc.requests()); got != 1 {
				t.Errorf("%d requests, want 1", got)
			}
		})
	}
}

func TestWriteHeaders(t *testing.T) {
	const token, queryToken = "s3cret-header-token", "s3cret-query-token"
	for _, tc := range []struct {
		name     string
		settings map[string]any
		method   string
		wantType string
	}{
		{"defaults", nil, http.MethodPost, "application/json"},
		{"PUT and a custom Content-Type", map[string]any{
			"method":  "PUT",
			"headers": map[string]any{"Authorization": "Bearer " + token, "X-Tenant": "acme", "Content-Type": "application/vnd.acme+json"},
		}, http.MethodPut, "application/vnd.acme+json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) bool {
				switch n {
				case 0:
					http.Error(w, "retry me", http.StatusBadGateway)
					return false
				case 1:
					return true
				}
				http.Error(w, "no", http.StatusForbidden)
				return false
			})
			settings := with(with(fast, tc.settings), map[string]any{
				"headers": map[string]any{"Authorization": "Bearer " + token, "X-Tenant": "acme"},
				"url":     rc.srv.URL + "/in?token=" + queryToken,
			})
			if tc.settings["headers"] != nil {
				settings["headers"] = tc.settings["headers"]
			}
			s, logs := open(t, settings)
			b := batch(5)
			b.Records[0].Op = record.OpHeartbeat // the key covers the records sent: 2nd to 5th
			if err := s.Write(context.Background(), b); err != nil {
				t.Fatalf("Write: %v", err)
			}
			err := s.Write(context.Background(), batch(1))
			if err == nil {
				t.Fatal("Write after a 403 succeeded")
			}
			wantKey := webhook.IdempotencyKey(b.Records[1].Position, b.Records[4].Position)
			reqs := rc.requests()
			if len(reqs) != 3 {
				t.Fatalf("%d requests, want 3", len(reqs))
			}
			for i, r := range reqs[:2] { // the first batch and its retry
				for name, want := range map[string]string{
					"Authorization":   "Bearer " + token,
					"X-Tenant":        "acme",
					"Content-Type":    tc.wantType,
					"Idempotency-Key": wantKey,
					"User-Agent":      "sluice-webhook/" + webhook.Version,
				} {
					if got := r.header.Get(name); got != want {
						t.Errorf("request %d: %s %q, want %q", i, name, got, want)
					}
				}
				if r.method != tc.method || r.path != "/in?token="+queryToken {
					t.Errorf("request %d: %s %s, want %s to the url", i, r.method, r.path, tc.method)
				}
			}
			if logs.warnings() != 1 {
				t.Errorf("want one warning for the retry, got:\n%s", logs)
			}
			for what, text := range map[string]string{"the log": logs.String(), "the error": err.Error()} {
				for _, secret := range []string{token, queryToken} {
					if strings.Contains(text, secret) {
						t.Errorf("%s shows %q:\n%s", what, secret, text)
					}
				}
			}
		})
	}
}

func TestBody(t *testing.T) {
	pos := func(b ...byte) record.Position { return b }
	for _, tc := range []struct {
		name       string
		records    []record.Record
		want       string
		first, end record.Position // the positions the Idempotency-Key covers
	}{
		{
			name: "json payload embedded",
			records: []record.Record{{Position: pos(1), Op: record.OpInsert, Key: []byte("k1"), Meta: record.Meta{{Key: "db", Value: "shop"}, {Key: "coll", Value: "orders"}},
				Payload: []byte("{\"id\": 1,\n \"html\": \"<b>&</b>\"}"), Encoding: record.EncodingJSON}},
			want:  `{"records":[{"position":"AQ==","op":"insert","encoding":"json","key":"k1","meta":{"coll":"orders","db":"shop"},"payload":{"id":1,"html":"<b>&</b>"}}]}`,
			first: pos(1), end: pos(1),
		},
		{
			name:    "raw payload as base64",
			records: []record.Record{{Position: pos(2), Op: record.OpUpdate, Key: []byte("k2"), Payload: []byte("raw"), Encoding: record.EncodingRaw}},
			want:    `{"records":[{"position":"Ag==","op":"update","encoding":"raw","key":"k2","payload_b64":"cmF3"}]}`,
			first:   pos(2), end: pos(2),
		},
		{
			name:    "bson payload as base64",
			records: []record.Record{{Position: pos(3), Op: record.OpReplace, Payload: []byte{5, 0, 0, 0, 0}, Encoding: record.EncodingBSON}},
			want:    `{"records":[{"position":"Aw==","op":"replace","encoding":"bson","payload_b64":"BQAAAAA="}]}`,
			first:   pos(3), end: pos(3),
		},
		{
			name:    "invalid json is sent as base64, not dropped",
			records: []record.Record{{Position: pos(4), Op: record.OpInsert, Payload: []byte("{oops"), Encoding: record.EncodingJSON}},
			want:    `{"records":[{"position":"BA==","op":"insert","encoding":"json","payload_b64":"e29vcHM="}]}`,
			first:   pos(4), end: pos(4),
		},
		{
			name: "binary key as base64, delete without payload, heartbeats skipped",
			records: []record.Record{
				{Position: pos(5), Op: record.OpHeartbeat},
				{Position: pos(6), Op: record.OpDelete, Key: []byte{0xff, 0x00}},
				{Position: pos(7), Op: record.OpHeartbeat},
				{Position: pos(8), Op: record.OpInsert, Key: []byte("é"), Payload: []byte(`[1,2]`), Encoding: record.EncodingJSON},
				{Position: pos(9), Op: record.OpHeartbeat},
			},
			want:  `{"records":[{"position":"Bg==","op":"delete","encoding":"raw","key_b64":"/wA="},{"position":"CA==","op":"insert","encoding":"json","key":"é","payload":[1,2]}]}`,
			first: pos(6), end: pos(8),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newReceiver(t, nil)
			s, _ := open(t, with(fast, map[string]any{"url": rc.srv.URL}))
			if err := s.Write(context.Background(), record.Batch{Records: tc.records, Position: tc.records[len(tc.records)-1].Position}); err != nil {
				t.Fatalf("Write: %v", err)
			}
			reqs := rc.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			if got := strings.TrimSpace(string(reqs[0].body)); got != tc.want {
				t.Errorf("body\n got %s\nwant %s", got, tc.want)
			}
			if got, want := reqs[0].header.Get("Idempotency-Key"), webhook.IdempotencyKey(tc.first, tc.end); got != want {
				t.Errorf("Idempotency-Key %s, want %s", got, want)
			}
		})
	}
}

func TestNothingToSend(t *testing.T) {
	for _, tc := range []struct {
		name  string
		batch record.Batch
	}{
		{"heartbeats only", record.Batch{Records: []record.Record{{Position: record.Position{1}, Op: record.OpHeartbeat}, {Position: record.Position{2}, Op: record.OpHeartbeat}}, Position: record.Position{2}}},
		{"no records", record.Batch{Position: record.Position{3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newReceiver(t, nil)
			s, _ := open(t, with(fast, map[string]any{"url": rc.srv.URL}))
			if err := s.Write(context.Background(), tc.batch); err != nil {
				t.Fatalf("Write: %v", err)
			}
			if n := len(rc.requests()); n != 0 {
				t.Errorf("%d requests, want none", n)
			}
		})
	}
}

func TestIdempotencyKey(t *testing.T) {
	a, b := record.Position("ab"), record.Position("c")
	for _, tc := range []struct {
		name       string
		k1, k2     string
		wantEquals bool
	}{
		{"deterministic", webhook.IdempotencyKey(a, b), webhook.IdempotencyKey(a, b), true},
		{"order matters", webhook.IdempotencyKey(a, b), webhook.IdempotencyKey(b, a), false},
		{"lengths are framed", webhook.IdempotencyKey(record.Position("a"), record.Position("bc")), webhook.IdempotencyKey(a, b), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if (tc.k1 == tc.k2) != tc.wantEquals {
				t.Errorf("%s vs %s: equal = %v, want %v", tc.k1, tc.k2, tc.k1 == tc.k2, tc.wantEquals)
			}
			if len(tc.k1) != 64 || strings.ToLower(tc.k1) != tc.k1 {
				t.Errorf("%q is not lower-case hex SHA-256", tc.k1)
			}
		})
	}
}

// discardLog is a server error log that drops everything.
func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }

// writeCA writes the certificate srv presents to a PEM file and returns its path.
func writeCA(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeOtherCA writes a new self-signed CA certificate, which signed nothing, to a PEM file and returns
// its path.
func writeOtherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "other test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestTLS(t *testing.T) {
	otherCA := writeOtherCA(t)
	for _, tc := range []struct {
		name     string
		settings func(t *testing.T, srv *httptest.Server) map[string]any
		wantErr  string
	}{
		{"tls_ca_file trusts the private CA", func(t *testing.T, srv *httptest.Server) map[string]any {
			return map[string]any{"tls_ca_file": writeCA(t, srv)}
		}, ""},
		{"system roots reject it, without retrying", func(*testing.T, *httptest.Server) map[string]any {
			return nil
		}, "certificate"},
		{"another CA rejects it", func(t *testing.T, _ *httptest.Server) map[string]any {
			return map[string]any{"tls_ca_file": otherCA}
		}, "certificate"},
		{"tls_insecure_skip_verify accepts it", func(*testing.T, *httptest.Server) map[string]any {
			return map[string]any{"tls_insecure_skip_verify": true}
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := &receiver{respond: ok}
			rc.srv = httptest.NewUnstartedServer(rc)
			rc.srv.Config.ErrorLog = discardLog() // failed handshakes are expected here
			rc.srv.StartTLS()
			defer rc.srv.Close()
			settings := with(tc.settings(t, rc.srv), map[string]any{"url": rc.srv.URL, "retry_initial": "1m", "retry_max": "1m"})
			s, logs := open(t, settings)
			err := s.Write(context.Background(), batch(2))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Write: %v", err)
				}
				if n := len(rc.requests()); n != 1 {
					t.Errorf("%d requests, want 1", n)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Write = %v, want an error about the %s", err, tc.wantErr)
			}
			var cve *tls.CertificateVerificationError
			if !errors.As(err, &cve) {
				t.Errorf("error %v is not a certificate verification error", err)
			}
			if logs.warnings() != 0 || len(rc.requests()) != 0 {
				t.Errorf("retried or reached the handler:\n%s", logs)
			}
		})
	}
}

func TestOpenInvalidSettings(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	const url = "https://hooks.example.com/in"
	for _, tc := range []struct {
		name     string
		settings map[string]any
		want     string
		invalid  bool // wraps sdk.ErrInvalidSettings
	}{
		{"no url", map[string]any{}, `missing required setting "url"`, true},
		{"not http", map[string]any{"url": "ftp://example.com/x"}, `scheme "ftp"`, true},
		{"no host", map[string]any{"url": "http:///x"}, "no host", true},
		{"bad url, not echoed", map[string]any{"url": "http://h/%zzsecret"}, "not a valid URL", true},
		{"method GET", map[string]any{"url": url, "method": "GET"}, `setting "method": "GET" is not allowed; want one of "POST", "PUT"`, true},
		{"header not a string", map[string]any{"url": url, "headers": map[string]any{"X-Count": 5}}, `header "X-Count": want a string`, true},
		{"header name", map[string]any{"url": url, "headers": map[string]any{"Bad Name": "v"}}, "not a valid header name", true},
		{"reserved header", map[string]any{"url": url, "headers": map[string]any{"idempotency-key": "v"}}, "set by the sink", true},
		{"header value with a newline", map[string]any{"url": url, "headers": map[string]any{"X-A": "a\r\nX-B: b"}}, "line break", true},
		{"timeout 0", map[string]any{"url": url, "timeout": "0s"}, "timeout", true},
		{"timeout as a number", map[string]any{"url": url, "timeout": 5}, "timeout", true},
		{"negative retries", map[string]any{"url": url, "max_retries": -1}, "max_retries", true},
		{"retry_max below retry_initial", map[string]any{"url": url, "retry_initial": "2s", "retry_max": "1s"}, "retry_max", true},
		{"tls settings on http", map[string]any{"url": "http://example.com", "tls_insecure_skip_verify": true}, "need an https url", true},
		{"both tls settings", map[string]any{"url": url, "tls_ca_file": notPEM, "tls_insecure_skip_verify": true}, "together", true},
		{"CA file without PEM", map[string]any{"url": url, "tls_ca_file": notPEM}, "no PEM certificate", true},
		{"CA file missing: retryable", map[string]any{"url": url, "tls_ca_file": filepath.Join(t.TempDir(), "missing.pem")}, "no such file", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, err := tryOpen(tc.settings)
			if err == nil {
				_ = s.Close(context.Background())
				t.Fatalf("Open succeeded, want an error with %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q repeats the url", err)
			}
			if got := errors.Is(err, sdk.ErrInvalidSettings); got != tc.invalid {
				t.Errorf("errors.Is(%v, ErrInvalidSettings) = %v, want %v", err, got, tc.invalid)
			}
		})
	}
}

func TestWriteBeforeOpen(t *testing.T) {
	var s webhook.Sink
	if err := s.Write(context.Background(), batch(1)); err == nil {
		t.Error("Write on a sink that is not open succeeded")
	}
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("Close on a sink that is not open: %v", err)
	}
}
