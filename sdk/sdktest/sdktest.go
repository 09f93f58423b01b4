package sdktest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
)

// checkTimeout bounds each check; a check that needs longer has hung.
const checkTimeout = 15 * time.Second

// batchRecords is the MaxBatchRecords the suite opens sources and buffers with: small and odd, so that a
// hundred records make many batches and a plugin that ignores the bound is caught.
const batchRecords = 7

// Main is a whole TestMain for a plugin's tests: it builds the Go package pkg (a path such as
// "./cmd/generate", relative to the package under test), stores the binary's path in *binary for the
// configs' Binary field, runs the tests, removes the binary and exits:
//
//	var binary string
//
//	func TestMain(m *testing.M) { sdktest.Main(m, "./cmd/generate", &binary) }
func Main(m *testing.M, pkg string, binary *string) {
	bin, remove, err := Build(pkg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*binary = bin
	code := m.Run()
	remove()
	os.Exit(code)
}

// Build compiles the Go package pkg (a path such as "./cmd/generate" or ".", relative to the current directory)
// into a new temporary directory and returns the binary's path and a function that removes the directory.
// Main uses it; call it directly when a TestMain must do more.
func Build(pkg string) (path string, remove func(), err error) {
	dir, err := os.MkdirTemp("", "sdktest-")
	if err != nil {
		return "", nil, err
	}
	remove = func() { _ = os.RemoveAll(dir) }
	name := filepath.Base(pkg)
	if name == "." || name == ".." { // the package in (or above) the current directory: "." is not a file name
		name = "plugin"
	}
	path = filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", path, pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		remove()
		return "", nil, fmt.Errorf("sdktest: go build %s: %v\n%s", pkg, err, out)
	}
	return path, remove, nil
}

// mode is one way of reaching a plugin: in this process over in-memory gRPC, or as a subprocess.
type mode struct {
	name    string
	process bool
	start   func(t *testing.T) *protocol.Conn
}

// modes returns "local" and, when binary is set, "process".
func modes(p sdk.Plugin, binary string, env []string) []mode {
	ms := []mode{{name: "local", start: func(t *testing.T) *protocol.Conn {
		t.Helper()
		c, err := protocol.Local(p)
		if err != nil {
			t.Fatalf("protocol.Local: %v", err)
		}
		t.Cleanup(c.Kill)
		return c
	}}}
	if binary == "" {
		return ms
	}
	return append(ms, mode{name: "process", process: true, start: func(t *testing.T) *protocol.Conn {
		t.Helper()
		w := &testWriter{t: t}
		t.Cleanup(w.stop) // runs after Kill: Kill waits for the plugin's last log lines
		c, err := protocol.Launch(protocol.LaunchConfig{
			Path:   binary,
			Env:    append(baseEnv(), env...),
			Logger: hclog.New(&hclog.LoggerOptions{Name: p.Spec.Name, Output: w, Level: hclog.Debug}),
		})
		if err != nil {
			t.Fatalf("protocol.Launch: %v", err)
		}
		t.Cleanup(c.Kill)
		return c
	}})
}

// baseEnv is the minimal environment a host hands a plugin process.
func baseEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "TZ"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// testWriter sends a plugin's log lines to the test log until the test ends.
type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// begin starts a check: it registers the goroutine leak check (which runs last, after every Conn the check
// starts is killed) and returns a context bounded by checkTimeout.
func begin(t *testing.T) context.Context {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if t.Failed() {
			return // a failed check may leave its streams behind; the failure says more than the leak
		}
		// goleak retries for about 2 s; keep asking for up to 10 s: on a loaded machine, goroutines that are
		// ending (a server in the test process noticing a closed connection) can take seconds to run.
		err := goleak.Find(ignore)
		for deadline := time.Now().Add(10 * time.Second); err != nil && time.Now().Before(deadline); {
			err = goleak.Find(ignore)
		}
		if err != nil {
			t.Errorf("goroutines left running after every stage had ended (closed, or aborted to simulate a crash) and its connection was gone: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	t.Cleanup(cancel)
	return ctx
}

// requireStage fails the test unless p serves kind.
func requireStage(t *testing.T, p sdk.Plugin, kind sdk.Kind) {
	t.Helper()
	if err := p.Spec.Validate(); err != nil {
		t.Fatalf("spec of plugin %q is invalid: %v", p.Spec.Name, err)
	}
	has := map[sdk.Kind]bool{sdk.KindSource: p.NewSource != nil, sdk.KindBuffer: p.NewBuffer != nil, sdk.KindSink: p.NewSink != nil}
	if p.Spec.Stage(kind) == nil || !has[kind] {
		t.Fatalf("plugin %q does not serve a %s: its spec declares %v and it needs a New%s constructor", p.Spec.Name, kind,
			p.Spec.Kinds(), strings.ToUpper(string(kind[:1]))+string(kind[1:]))
	}
}

// checkSpec checks the spec the plugin serves over the protocol: valid, serving kind, the same as the
// library's (a stale binary fails here), and with every default readable as its setting's type.
func checkSpec(t *testing.T, m mode, p sdk.Plugin, kind sdk.Kind) {
	ctx := begin(t)
	c := m.start(t)
	got, err := c.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Stage(kind) == nil {
		t.Fatalf("served spec has no %s stage (kinds %v)", kind, got.Kinds())
	}
	want, _ := json.Marshal(p.Spec)
	have, _ := json.Marshal(got)
	if !bytes.Equal(want, have) {
		t.Errorf("served spec differs from the plugin's Spec (is the binary stale?)\n served: %s\n   want: %s", have, want)
	}
	if got.Stage(kind).Summary == "" {
		t.Errorf("%s stage has no summary", kind)
	}
	for _, s := range got.Stage(kind).Settings {
		if s.Default == "" {
			continue
		}
		if _, err := s.DefaultValue(); err != nil {
			t.Errorf("%s setting %q: default %q: %v", kind, s.Name, s.Default, err)
		}
	}
}

// settingsFor returns the settings the host would send: the test's values checked against the spec and
// defaults applied, by the host's own resolver (sdk.Resolve).
func settingsFor(t *testing.T, p sdk.Plugin, kind sdk.Kind, f func(*testing.T) map[string]any) map[string]any {
	t.Helper()
	given := map[string]any{}
	if f != nil {
		given = f(t)
	}
	out, err := sdk.Resolve(p.Spec.Stage(kind).Settings, given)
	if err != nil {
		t.Fatalf("the test's %s settings are not what the host would accept: %v", kind, err)
	}
	return out
}

// Same reports how got differs from want in position, op, key, metadata, payload or encoding, or returns
// nil when they are equal. It is the default comparison for records read again after a resume.
func Same(want, got record.Record) error {
	if !want.Position.Equal(got.Position) {
		return fmt.Errorf("position %x, want %x", []byte(got.Position), []byte(want.Position))
	}
	return sameData(want, got)
}

// sameData compares everything but the position.
func sameData(want, got record.Record) error {
	switch {
	case want.Op != got.Op:
		return fmt.Errorf("op %s, want %s", got.Op, want.Op)
	case !bytes.Equal(want.Key, got.Key):
		return fmt.Errorf("key %q, want %q", got.Key, want.Key)
	case want.Encoding != got.Encoding:
		return fmt.Errorf("encoding %s, want %s", got.Encoding, want.Encoding)
	case !bytes.Equal(want.Payload, got.Payload):
		return fmt.Errorf("payload %q, want %q", abbrev(got.Payload), abbrev(want.Payload))
	case !slices.Equal(want.Meta, got.Meta) && (len(want.Meta) > 0 || len(got.Meta) > 0):
		return fmt.Errorf("meta %v, want %v", got.Meta, want.Meta)
	}
	return nil
}

func abbrev(b []byte) string {
	if len(b) > 120 {
		return string(b[:120]) + "…"
	}
	return string(b)
}

// clone deep-copies r: records decoded from a batch alias its wire buffer.
func clone(r record.Record) record.Record {
	r.Position = slices.Clone(r.Position)
	r.Key = slices.Clone(r.Key)
	r.Payload = slices.Clone(r.Payload)
	r.Meta = slices.Clone(r.Meta)
	return r
}

// pos8 is the position the suite gives the i-th upstream record: i as 8 bytes, big-endian.
func pos8(i int) record.Position {
	return binary.BigEndian.AppendUint64(nil, uint64(i))
}
