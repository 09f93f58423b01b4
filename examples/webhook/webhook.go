// Package webhook is an example third-party sluice plugin: a sink that sends each batch of records to an
// HTTP endpoint as one JSON document. It uses only the standard library and the sluice SDK, the way an
// outside author would write a plugin.
//
// Each batch with at least one data record becomes one request (POST by default):
//
//	Content-Type: application/json
//	Idempotency-Key: <IdempotencyKey of the first and last record sent>
//
//	{"records":[
//	  {"position":"AAAAAAAAAAE=","op":"insert","encoding":"json","key":"key-0","meta":{"db":"shop"},"payload":{"i":0}},
//	  {"position":"AAAAAAAAAAI=","op":"update","encoding":"raw","key_b64":"/w==","payload_b64":"cmF3"}
//	]}
//
// position is base64. key is a string when it is valid UTF-8, otherwise base64 under key_b64. payload is
// embedded as JSON when the encoding is json (and the bytes are valid JSON), otherwise it is base64 under
// payload_b64. key, meta and payload are left out when empty. Heartbeat records are not sent, and a
// batch holding nothing else sends no request.
//
// # Delivery guarantee
//
// The sink is at-least-once. Write returns nil only after a 2xx response; on a network error, a 429 or a
// 5xx it retries the same request with exponential backoff, so a request whose response was lost is sent
// again. After a crash, or when the retries run out, the host restarts the sink and sends every batch
// that was not acknowledged again. A receiver that must not apply a batch twice drops a request whose
// Idempotency-Key it has already applied (retries of one batch always carry the same key); after a
// restart the host may cut batches differently, so a receiver that needs exact deduplication should
// remember the position of each record it applied: positions are unique (and opaque: compare them for
// equality only).
package webhook

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/sdk"
)

// Version is the plugin's version, sent in its spec and in the User-Agent header.
const Version = "0.1.0"

// MaxRetryAfter bounds how long a Retry-After header can make the sink wait before one retry, so that a
// misbehaving endpoint cannot stall a pipeline for days. Cancelling Write's context ends any wait.
const MaxRetryAfter = 5 * time.Minute

// Plugin returns the webhook plugin: its spec and its sink constructor. The spec is the same on every
// call; it is safe for concurrent use.
func Plugin() sdk.Plugin {
	return sdk.Plugin{
		Spec: sdk.Spec{
			Name:    "webhook",
			Version: Version,
			Summary: "Sends each batch of records to an HTTP endpoint as one JSON document. At-least-once; every request carries an Idempotency-Key.",
			Author:  "sluice examples",
			Sink: &sdk.Stage{
				Summary:  `POSTs (or PUTs) each batch as {"records":[…]} and acknowledges it after a 2xx; heartbeats send nothing. Retries network errors, 429 and 5xx with exponential backoff (honouring Retry-After); other statuses fail the write. At-least-once: a batch may arrive twice, with the same Idempotency-Key header (hex SHA-256 of its first and last record positions) when it is a retry.`,
				Settings: sdk.MustSettingsOf[Config](),
				// The combinations parseConfig refuses, checked by the host when the connector file loads.
				Rules: []sdk.Rule{
					{Expr: `retry_max >= retry_initial`, Settings: []string{"retry_max", "retry_initial"},
						Message: "retry_max is shorter than retry_initial: raise retry_max or lower retry_initial"},
					{Expr: `(tls_ca_file ?? "") == "" || !tls_insecure_skip_verify`, Settings: []string{"tls_ca_file", "tls_insecure_skip_verify"},
						Message: "tls_ca_file and tls_insecure_skip_verify together: the CA would not be checked; set one"},
					{Expr: `((tls_ca_file ?? "") == "" && !tls_insecure_skip_verify) || lower(url) startsWith "https://"`, Settings: []string{"tls_ca_file", "tls_insecure_skip_verify"},
						Message: "tls_ca_file and tls_insecure_skip_verify need an https url"},
				},
			},
		},
		NewSink: func() sdk.Sink { return &Sink{} },
	}
}

// Config holds the sink's settings, decoded from the connector file. Its tags declare them: the spec's
// settings (sdk.SettingsOf), their defaults and bounds, which Decode applies and checks.
type Config struct {
	URL                   string            `setting:"url,required" doc:"The http:// or https:// endpoint each batch is sent to. Redirects are not followed (a 3xx fails the write): give the final address. Logs and errors show only its scheme and host, so a token in its path or query stays out of them; take such a URL from ${env:…}."`
	Method                string            `setting:"method" default:"POST" enum:"POST,PUT" doc:"The HTTP method: POST (default) or PUT, for endpoints that expect an idempotent method."`
	Headers               map[string]string `setting:"headers,secret" doc:"Extra request headers, name to string value, e.g. {Authorization: \"Bearer ${env:WEBHOOK_TOKEN}\"}. Default none. Their values are never logged or printed. Content-Type (default application/json) may be overridden; Host, Content-Length, Transfer-Encoding, Connection and Idempotency-Key may not."`
	Timeout               time.Duration     `setting:"timeout" default:"10s" min:"1ms" doc:"How long one request may take, from connecting to reading the response; a request that takes longer is retried. Default 10s; longer tolerates slow receivers of large batches, shorter notices a hung endpoint sooner."`
	MaxRetries            int               `setting:"max_retries" default:"5" min:"0" doc:"Retries of one request after a network error, a timeout, a 429 or a 5xx, before the write fails and the host restarts the sink (which sends the batch again). Default 5; 0 fails at the first error. More rides out longer outages inside one write; fewer surfaces them sooner."`
	RetryInitial          time.Duration     `setting:"retry_initial" default:"200ms" min:"1ms" doc:"The wait before the first retry; each further retry waits twice as long (plus up to 20% jitter), up to retry_max. Default 200ms."`
	RetryMax              time.Duration     `setting:"retry_max" default:"10s" min:"1ms" doc:"The longest wait between retries. Default 10s. A longer Retry-After from the endpoint is honoured instead, up to 5m. Raising it is gentler on a struggling endpoint and slower to recover."`
	TLSCAFile             string            `setting:"tls_ca_file" doc:"Path of a PEM file of CA certificates to verify an https endpoint with, instead of the system's roots: for endpoints with a certificate from a private CA. Default none: the system's roots."`
	TLSInsecureSkipVerify bool              `setting:"tls_insecure_skip_verify" default:"false" doc:"Accept any certificate from an https endpoint, without verification. Never use it in production: anyone on the network path can read and change the records and steal the headers. Default false; for local testing only."`
}

// parseConfig decodes settings (Decode applies the defaults and checks each value against its tags) and
// checks what the tags cannot say. Every error wraps
// sdk.ErrInvalidSettings: no retry can fix it.
func parseConfig(settings sdk.Settings) (Config, *url.URL, error) {
	if h, ok := settings["headers"].(map[string]any); ok {
		for _, name := range slices.Sorted(maps.Keys(h)) {
			if _, ok := h[name].(string); !ok {
				// Say which header without showing its value: it may be a secret.
				return Config{}, nil, fmt.Errorf("%w: header %q: want a string value", sdk.ErrInvalidSettings, name)
			}
		}
	}
	var cfg Config
	if err := settings.Decode(&cfg); err != nil {
		return Config{}, nil, err
	}
	u, err := cfg.check()
	if err != nil {
		return Config{}, nil, fmt.Errorf("%w: %w", sdk.ErrInvalidSettings, err)
	}
	return cfg, u, nil
}

// reservedHeaders are set by the sink or by net/http and cannot be given in headers.
var reservedHeaders = []string{"Host", "Content-Length", "Transfer-Encoding", "Connection", "Idempotency-Key"}

// check validates cfg and returns its parsed URL.
func (cfg *Config) check() (*url.URL, error) {
	if cfg.URL == "" {
		return nil, errors.New("url is required")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, errors.New("url is not a valid URL") // url.Error would repeat the URL, which may hold a token
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("url: scheme %q: want http or https", u.Scheme)
	}
	if u.Host == "" {
		return nil, errors.New("url has no host")
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Headers)) {
		if !validHeaderName(name) {
			return nil, fmt.Errorf("header %q: not a valid header name", name)
		}
		for _, r := range reservedHeaders {
			if strings.EqualFold(name, r) {
				return nil, fmt.Errorf("header %q is set by the sink and cannot be configured", name)
			}
		}
		if strings.ContainsAny(cfg.Headers[name], "\r\n\x00") {
			return nil, fmt.Errorf("header %q: the value contains a line break or NUL", name)
		}
	}
	if cfg.RetryMax < cfg.RetryInitial {
		return nil, fmt.Errorf("retry_max %s is shorter than retry_initial %s", cfg.RetryMax, cfg.RetryInitial)
	}
	if cfg.TLSCAFile != "" || cfg.TLSInsecureSkipVerify {
		if u.Scheme != "https" {
			return nil, errors.New("tls_ca_file and tls_insecure_skip_verify need an https url")
		}
		if cfg.TLSCAFile != "" && cfg.TLSInsecureSkipVerify {
			return nil, errors.New("tls_ca_file and tls_insecure_skip_verify together: the CA would not be checked; set one")
		}
	}
	return u, nil
}

// validHeaderName reports whether s is an HTTP token (RFC 9110, section 5.6.2).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
