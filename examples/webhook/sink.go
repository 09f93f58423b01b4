package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// snippetBytes is how much of a failed response's body an error quotes.
const snippetBytes = 512

// drainBytes is how much of a response's body is read so that its connection can be reused.
const drainBytes = 64 << 10

// StatusError is the error Write returns (wrapped) when the endpoint answers with a status that is not
// 2xx: at once for a status that is not retried, or for the last attempt when retries ran out.
type StatusError struct {
	// Method and Endpoint describe the request; Endpoint is the url's scheme and host only.
	Method, Endpoint string
	// Code is the status code and Status the status line's text ("400 Bad Request").
	Code   int
	Status string
	// Snippet is the start of the response body: at most 512 bytes, on one line (control characters
	// become spaces), invalid UTF-8 replaced.
	Snippet string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s %s: %s", e.Method, e.Endpoint, e.Status)
	if e.Snippet != "" {
		msg += ": " + e.Snippet
	}
	return msg
}

// retryable reports whether a response with this status may succeed when sent again.
func retryable(code int) bool {
	return code == http.StatusTooManyRequests || code >= 500
}

// Sink sends batches of records to an HTTP endpoint. Create it with Plugin().NewSink or as a zero Sink.
//
// The SDK calls Open once, then Write from one goroutine with batches in order, then Close once; Write
// must not be called concurrently with itself, Open or Close. Cancelling the context passed to Write
// aborts the request in flight or the wait before a retry, and Write returns the context's error.
type Sink struct {
	sdk.UnimplementedSink

	cfg      Config
	url      string // cfg.URL, checked
	endpoint string // scheme://host, the only part of the URL logs and errors show
	client   *http.Client
	log      *slog.Logger
}

// Open checks the settings and prepares the HTTP client; it does not contact the endpoint. Settings that
// no retry can fix return an error wrapping sdk.ErrInvalidSettings; an unreadable tls_ca_file returns a
// plain error, so the host retries (the file may not be mounted yet).
func (s *Sink) Open(_ context.Context, req sdk.OpenRequest) error {
	cfg, u, err := parseConfig(req.Settings)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.TLSInsecureSkipVerify} // opt-in, documented as never for production
	if cfg.TLSCAFile != "" {
		pem, err := os.ReadFile(cfg.TLSCAFile)
		if err != nil {
			return fmt.Errorf("webhook: tls_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("webhook: tls_ca_file %s holds no PEM certificate: %w", cfg.TLSCAFile, sdk.ErrInvalidSettings)
		}
		tlsConfig.RootCAs = pool
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConfig
	s.cfg = cfg
	s.url = u.String()
	s.endpoint = u.Scheme + "://" + u.Host
	s.client = &http.Client{
		Transport: transport,
		// Following a redirect could turn a POST into a GET that "succeeds" without delivering anything.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	s.log = req.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Write sends the batch's data records as one request and returns nil once the endpoint answered 2xx. A
// batch without data records (only heartbeats, or none) sends nothing and returns nil.
//
// A network error, a timeout, a 429 or a 5xx is retried, with the same body and Idempotency-Key, up to
// max_retries times, after waits growing from retry_initial to retry_max (or the response's Retry-After,
// when longer); each retry is logged at warn level. Any other status fails at once with a *StatusError
// marked permanent (sdk.ErrPermanent: the host fails the pipeline instead of retrying),
// as does a certificate the endpoint presents that cannot be verified. When ctx is cancelled Write
// returns promptly with an error wrapping ctx.Err(); the endpoint may or may not have received the batch.
func (s *Sink) Write(ctx context.Context, b record.Batch) error {
	if s.client == nil {
		return errors.New("webhook: sink is not open")
	}
	body, n, key, err := encodeBody(b.Records)
	if err != nil {
		return fmt.Errorf("webhook: encoding the batch: %w", err)
	}
	if n == 0 {
		return nil
	}
	for attempt := 0; ; attempt++ {
		retryAfter, err := s.send(ctx, body, key)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("webhook: %s %s interrupted: %w", s.cfg.Method, s.endpoint, ctx.Err())
		}
		if errors.Is(err, sdk.ErrPermanent) {
			return fmt.Errorf("webhook: %w", err)
		}
		if attempt >= s.cfg.MaxRetries {
			return fmt.Errorf("webhook: giving up after %d attempts: %w", attempt+1, err)
		}
		wait := max(s.backoff(attempt), min(retryAfter, MaxRetryAfter))
		// Never log header values (or the full URL): they may hold secrets.
		s.log.Warn("webhook: request failed; retrying",
			slog.String("endpoint", s.endpoint),
			slog.Int("retry", attempt+1),
			slog.Int("max_retries", s.cfg.MaxRetries),
			slog.String("wait", wait.String()), // a string: the host forwards attributes through hclog
			slog.Int("records", n),
			slog.String("idempotency_key", key),
			slog.String("error", err.Error()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("webhook: waiting to retry %s %s: %w", s.cfg.Method, s.endpoint, ctx.Err())
		case <-t.C:
		}
	}
}

// send makes one attempt. It returns nil after a 2xx; otherwise the error (marked sdk.Permanent when
// retrying cannot help) and, for a retryable status, the wait its Retry-After header asks for.
func (s *Sink) send(ctx context.Context, body []byte, key string) (retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, s.cfg.Method, s.url, bytes.NewReader(body))
	if err != nil {
		return 0, sdk.Permanent(fmt.Errorf("%s %s: %w", s.cfg.Method, s.endpoint, err))
	}
	for name, v := range s.cfg.Headers {
		req.Header.Set(name, v)
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("User-Agent", "sluice-webhook/"+Version)
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message repeats the full URL, which may hold a token
		}
		err = fmt.Errorf("%s %s: %w", s.cfg.Method, s.endpoint, err)
		var cert *tls.CertificateVerificationError
		if errors.As(err, &cert) {
			return 0, sdk.Permanent(err)
		}
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainBytes)) // lets the connection be reused
		return 0, nil
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, snippetBytes))
	se := &StatusError{
		Method:   s.cfg.Method,
		Endpoint: s.endpoint,
		Code:     resp.StatusCode,
		Status:   resp.Status,
		Snippet:  oneLine(snippet),
	}
	if !retryable(resp.StatusCode) {
		return 0, sdk.Permanent(se)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainBytes))
	return parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), se
}

// oneLine returns b as valid UTF-8 on one line: control characters become spaces, and leading and
// trailing space is cut.
func oneLine(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(string(b), string(utf8.RuneError)))
	return strings.TrimSpace(s)
}

// backoff returns the wait before retry number attempt+1: retry_initial doubled attempt times, plus up to
// 20% jitter so that sinks that failed together do not retry together, capped at retry_max.
func (s *Sink) backoff(attempt int) time.Duration {
	d := s.cfg.RetryInitial
	for range attempt {
		if d >= s.cfg.RetryMax {
			break
		}
		d *= 2
	}
	if j := int64(d / 5); j > 0 {
		d += time.Duration(rand.Int64N(j))
	}
	return min(d, s.cfg.RetryMax)
}

// parseRetryAfter returns the wait a Retry-After header value asks for, in seconds or as an HTTP date,
// or 0 when it is absent or malformed.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(MaxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// Close releases the sink's idle connections. It is safe to call when Open failed or was never called.
func (s *Sink) Close(context.Context) error {
	if s.client != nil {
		s.client.CloseIdleConnections()
	}
	return nil
}
