package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/examples/webhook"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/sdk/sdktest"
)

var pluginBinary string

func TestMain(m *testing.M) { sdktest.Main(m, "./cmd/webhook", &pluginBinary) }

// request is one request a receiver got.
type request struct {
	method string
	path   string
	header http.Header
	body   []byte
	stored bool // the receiver applied the body (whatever it answered)
}

// respondFunc answers the n-th request (from 0) a receiver got and reports whether it applied the body.
type respondFunc func(n int, w http.ResponseWriter, r *http.Request) (stored bool)

// ok applies every request and answers 204.
func ok(int, http.ResponseWriter, *http.Request) bool { return true }

// receiver is a webhook endpoint for tests: an httptest server that records every request.
type receiver struct {
	srv     *httptest.Server
	respond respondFunc

	mu   sync.Mutex
	reqs []request
}

// newReceiver starts a plain-HTTP receiver answering with respond (nil: ok), closed when the test ends.
func newReceiver(t *testing.T, respond respondFunc) *receiver {
	t.Helper()
	rc := &receiver{respond: respond}
	if rc.respond == nil {
		rc.respond = ok
	}
	rc.srv = httptest.NewServer(rc)
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	n := len(rc.reqs)
	rc.reqs = append(rc.reqs, request{method: r.Method, path: r.URL.RequestURI(), header: r.Header.Clone(), body: body})
	rc.mu.Unlock()
	stored := rc.respond(n, w, r)
	rc.mu.Lock()
	rc.reqs[n].stored = stored
	rc.mu.Unlock()
	// A handler that wrote nothing answers 200.
}

// requests returns a copy of the requests received so far.
func (rc *receiver) requests() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.reqs...)
}

// applied returns the records of the requests the receiver applied, in arrival order, dropping a request
// whose Idempotency-Key it already applied — what a receiver deduplicating on that header would keep.
func (rc *receiver) applied(t *testing.T) []wireRecord {
	t.Helper()
	seen := map[string]bool{}
	var out []wireRecord
	for _, r := range rc.requests() {
		key := r.header.Get("Idempotency-Key")
		if !r.stored || seen[key] {
			continue
		}
		seen[key] = true
		recs := decodeBody(t, r.body)
		if want := webhook.IdempotencyKey(recs[0].Position, recs[len(recs)-1].Position); key != want {
			t.Errorf("Idempotency-Key %q, want %q", key, want)
		}
		out = append(out, recs...)
	}
	return out
}

// repeated reports whether a request repeats the Idempotency-Key of an earlier one — of an earlier one
// the receiver applied, with appliedOnly.
func repeated(reqs []request, appliedOnly bool) bool {
	seen := map[string]bool{}
	for _, r := range reqs {
		key := r.header.Get("Idempotency-Key")
		if seen[key] {
			return true
		}
		if r.stored || !appliedOnly {
			seen[key] = true
		}
	}
	return false
}

// wireRecord is a record as the body carries it.
type wireRecord struct {
	Position   []byte            `json:"position"`
	Op         string            `json:"op"`
	Encoding   string            `json:"encoding"`
	Key        *string           `json:"key"`
	KeyB64     []byte            `json:"key_b64"`
	Meta       map[string]string `json:"meta"`
	Payload    json.RawMessage   `json:"payload"`
	PayloadB64 []byte            `json:"payload_b64"`
}

func decodeBody(t *testing.T, body []byte) []wireRecord {
	t.Helper()
	var doc struct {
		Records []wireRecord `json:"records"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	if len(doc.Records) == 0 {
		t.Fatalf("body %s: no records: an empty batch must send nothing", body)
	}
	return doc.Records
}

// sameRecord reports how the record w received differs from r, the record written, or returns nil.
func sameRecord(r record.Record, w wireRecord) error {
	key := w.KeyB64
	if w.Key != nil {
		key = []byte(*w.Key)
	}
	payload := []byte(w.PayloadB64)
	if w.Payload != nil {
		var b bytes.Buffer
		if err := json.Compact(&b, r.Payload); err != nil {
			return fmt.Errorf("payload %s embedded, but the record's is not JSON", w.Payload)
		}
		if !bytes.Equal(b.Bytes(), w.Payload) {
			return fmt.Errorf("payload %s, want %s", w.Payload, r.Payload)
		}
		payload = r.Payload
	}
	meta := record.Meta{}
	for _, f := range r.Meta {
		meta = meta.Set(f.Key, f.Value)
	}
	switch {
	case !r.Position.Equal(w.Position):
		return fmt.Errorf("position %x, want %x", w.Position, []byte(r.Position))
	case w.Op != r.Op.String():
		return fmt.Errorf("op %s, want %s", w.Op, r.Op)
	case w.Encoding != r.Encoding.String():
		return fmt.Errorf("encoding %s, want %s", w.Encoding, r.Encoding)
	case !bytes.Equal(key, r.Key):
		return fmt.Errorf("key %q, want %q", key, r.Key)
	case !bytes.Equal(payload, r.Payload):
		return fmt.Errorf("payload %q, want %q", payload, r.Payload)
	case len(w.Meta) != len(meta):
		return fmt.Errorf("meta %v, want %v", w.Meta, r.Meta)
	}
	for _, f := range meta {
		if w.Meta[f.Key] != f.Value {
			return fmt.Errorf("meta %v, want %v", w.Meta, r.Meta)
		}
	}
	return nil
}

// receivers maps a check's url setting to its receiver, for Verify.
var receivers sync.Map

func TestSinkAcceptance(t *testing.T) {
	for _, tc := range []struct {
		name    string
		respond respondFunc
		// want is what the receiver must have seen: "retry", a request sent again; "redelivery", an
		// applied request sent again, which it drops by its Idempotency-Key.
		want string
	}{
		{"healthy", nil, ""},
		{"every second request fails with 503", func(n int, w http.ResponseWriter, _ *http.Request) bool {
			if n%2 == 1 {
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return false
			}
			return true
		}, "retry"},
		{"every second response is lost after the batch is applied", func(n int, w http.ResponseWriter, _ *http.Request) bool {
			if n%2 == 1 {
				http.Error(w, "applied, then failed to answer", http.StatusInternalServerError)
			}
			return true
		}, "redelivery"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sdktest.Sink(t, webhook.Plugin(), sdktest.SinkConfig{
				Settings: func(t *testing.T) map[string]any {
					rc := newReceiver(t, tc.respond)
					url := rc.srv.URL + "/hook"
					receivers.Store(url, rc)
					t.Cleanup(func() { receivers.Delete(url) })
					return map[string]any{
						"url":           url,
						"headers":       map[string]any{"Authorization": "Bearer test-token"},
						"retry_initial": "1ms",
						"retry_max":     "5ms",
					}
				},
				Verify: func(t *testing.T, settings map[string]any, written []record.Record) {
					v, found := receivers.Load(settings["url"])
					if !found {
						t.Fatalf("no receiver for %v", settings["url"])
					}
					rc := v.(*receiver)
					for _, r := range rc.requests() {
						if r.method != http.MethodPost || r.header.Get("Authorization") != "Bearer test-token" {
							t.Fatalf("request %s with Authorization %q", r.method, r.header.Get("Authorization"))
						}
					}
					if tc.want != "" && !repeated(rc.requests(), tc.want == "redelivery") {
						t.Errorf("the receiver saw no %s: the check does not exercise what it is named after", tc.want)
					}
					got := rc.applied(t)
					if len(got) != len(written) {
						t.Fatalf("the receiver applied %d records, want %d", len(got), len(written))
					}
					for i := range written {
						if err := sameRecord(written[i], got[i]); err != nil {
							t.Fatalf("record %d: %v", i, err)
						}
					}
				},
				Binary: pluginBinary,
			})
		})
	}
}

// logBuffer collects the sink's log.
type logBuffer struct{ sdktest.Output }

// warnings counts the warn-level lines logged.
func (b *logBuffer) warnings() int { return strings.Count(b.String(), "level=WARN") }

// open opens a sink with settings sent the way the host sends them (as JSON) and logging to a new
// logBuffer; the sink is closed when the test ends.
func open(t *testing.T, settings map[string]any) (*webhook.Sink, *logBuffer) {
	t.Helper()
	s, logs, err := tryOpen(settings)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s, logs
}

func tryOpen(settings map[string]any) (*webhook.Sink, *logBuffer, error) {
	data, err := json.Marshal(settings)
	if err != nil {
		return nil, nil, err
	}
	parsed, err := sdk.ParseSettings(data)
	if err != nil {
		return nil, nil, err
	}
	logs := &logBuffer{}
	s := webhook.Plugin().NewSink().(*webhook.Sink)
	err = s.Open(context.Background(), sdk.OpenRequest{
		Pipeline: "test",
		Settings: parsed,
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	return s, logs, err
}

// with returns base with the entries of more added.
func with(base map[string]any, more map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range more {
		out[k] = v
	}
	return out
}

// batch returns a batch of n JSON records with positions 1…n.
func batch(n int) record.Batch {
	var b record.Batch
	for i := range n {
		r := sdktest.DefaultRecord(i)
		r.Position = record.Position{0, byte(i + 1)}
		b.Records = append(b.Records, r)
		b.Position = r.Position
	}
	return b
}
