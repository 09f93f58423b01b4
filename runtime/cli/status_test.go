package cli_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/api"
	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/services"
)

// TestStatusCommand runs `sluice status` against the HTTP API of pipelines whose counters move.
func TestStatusCommand(t *testing.T) {
	var calls atomic.Int64
	began := time.Now()
	pipelines := func() []pipeline.Status {
		calls.Add(1)
		n := int64(time.Since(began).Seconds() * 1000)
		return []pipeline.Status{
			{ID: "orders", State: pipeline.Running, Guarantee: pipeline.ExactlyOnce, Since: began, Started: began, Read: n, Delivered: n,
				Stages:    []pipeline.StageStatus{{Role: "source", Plugin: "generate", Pid: 4242}, {Role: "sink", Plugin: "discard", Pid: 4243}},
				Positions: map[string]record.Position{"source": {0, 0, 0, 0, 0, 0, 1, 0}}},
			{ID: "audit", State: pipeline.Restarting, Guarantee: pipeline.AtLeastOnce, Since: began, Restarts: 2,
				LastError: "sink file (pid 99): opening: no space left on device"},
		}
	}
	srv := httptest.NewServer(api.New(api.Options{Pipelines: pipelines}))
	defer srv.Close()
	// Two samples apart, so that the server knows rates.
	for _, path := range []string{"/api/pipelines", "/api/pipelines"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		time.Sleep(300 * time.Millisecond)
	}

	for _, addr := range []string{srv.Listener.Addr().String(), srv.URL} {
		stdout, stderr, code := sluice(t, t.TempDir(), "status", "--addr", addr)
		if code != 0 || stderr != "" {
			t.Fatalf("sluice status --addr %s: exit %d\n%s", addr, code, stderr)
		}
		lines := strings.Split(stdout, "\n")
		if !strings.HasPrefix(lines[0], "PIPELINE  STATE       GUARANTEE      READ/S") {
			t.Errorf("header %q", lines[0])
		}
		f := strings.Fields(lines[1])
		if len(f) != 9 || f[0] != "orders" || f[1] != "running" || f[2] != "exactly-once" || !strings.HasSuffix(f[3], "/s") ||
			f[6] != "—" || f[7] != "—" || f[8] != "0" {
			t.Errorf("orders row %q", lines[1])
		}
		if f := strings.Fields(lines[2]); len(f) != 9 || f[0] != "audit" || f[1] != "restarting" || f[8] != "2" {
			t.Errorf("audit row %q", lines[2])
		}
		for _, want := range []string{
			"\norders: running for ",
			"\n  stages     source generate (pid 4242) → sink discard (pid 4243)\n",
			"\n  positions  source 0x0000000000000100\n",
			"\naudit: restarting for ",
			"\n  stages      none running\n",
			"\n  last error  sink file (pid 99): opening: no space left on device\n",
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, stdout)
			}
		}
	}
}

func TestStatusCommandErrors(t *testing.T) {
	closed := services.RefusedAddr(t)
	notSluice := httptest.NewServer(http.NotFoundHandler())
	defer notSluice.Close()
	notJSON := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("<html>hello</html>")) }))
	defer notJSON.Close()
	for _, tt := range []struct {
		addr string
		code int
		want string
	}{
		{closed, 1, "no sluice answers at http://" + closed + " (connection refused): is `sluice run` running, serving on that address (its --http, default 127.0.0.1:7584)?\n"},
		{notSluice.URL, 1, notSluice.URL + "/api/pipelines answered 404 Not Found: 404 page not found (is it a sluice?)\n"},
		{notJSON.URL, 1, notJSON.URL + "/api/pipelines did not answer with a sluice pipeline list (is it a sluice?): invalid character '<' looking for beginning of value\n"},
		{"ftp://localhost:21", 2, "--addr: want HOST:PORT or http://HOST:PORT, got \"ftp://localhost:21\"\n"},
	} {
		stdout, stderr, code := sluice(t, t.TempDir(), "status", "--addr", tt.addr)
		if code != tt.code || stderr != tt.want || stdout != "" {
			t.Errorf("sluice status --addr %s: exit %d, stderr %q, stdout %q; want exit %d and %q", tt.addr, code, stderr, stdout, tt.code, tt.want)
		}
	}
}
