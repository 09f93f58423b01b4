package cli_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRunServesStatus runs the real binary with --http on a free port and reads what it serves while a
// pipeline runs: /healthz, /readyz, /metrics, /api/pipelines (the pipeline, its stages with their pids), the status
// page, and `sluice status` against it.
func TestRunServesStatus(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.yaml")
	writeFile(t, cfg, `version: 1
pipelines:
  - id: slow
    source: { plugin: generate, settings: { rate: 2000 } }
    sink:   { plugin: file, settings: { path: out.jsonl } }
`)
	cmd, stdout, stderr := startLockedSluice(t, dir, cfg, "--http", "127.0.0.1:0", "--progress", "off")
	var addr string
	deadline := time.Now().Add(20 * time.Second)
	for addr == "" && time.Now().Before(deadline) {
		if addr = servingAddr(syncString(stderr)); addr == "" {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if addr == "" {
		t.Fatalf("no address logged:\n%s", stderr)
	}
	waitForLines(t, filepath.Join(dir, "out.jsonl"), 1000)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz %d", code)
	}
	if code, body := get("/readyz"); code != 200 {
		t.Errorf("/readyz %d: %s", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !regexp.MustCompile(`sluice_records_read_total\{pipeline="slow",stage="source"\} [1-9]`).MatchString(body) ||
		!strings.Contains(body, `sluice_pipeline_state{pipeline="slow",state="running"} 1`) {
		t.Errorf("/metrics %d:\n%.3000s", code, body)
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, "<title>sluice</title>") {
		t.Errorf("/ %d: %.200s", code, body)
	}
	code, body := get("/api/pipelines")
	var doc struct {
		Pipelines []struct {
			ID     string `json:"id"`
			State  string `json:"state"`
			Stages []struct {
				Role   string `json:"role"`
				Plugin string `json:"plugin"`
				Pid    int    `json:"pid"`
			} `json:"stages"`
			Delivered int64 `json:"delivered"`
		} `json:"pipelines"`
	}
	if err := json.Unmarshal([]byte(body), &doc); code != 200 || err != nil {
		t.Fatalf("/api/pipelines %d: %v\n%s", code, err, body)
	}
	ps := doc.Pipelines
	if len(ps) != 1 || ps[0].ID != "slow" || ps[0].State != "running" || len(ps[0].Stages) != 2 || ps[0].Delivered == 0 {
		t.Fatalf("/api/pipelines: %s", body)
	}
	sink := childRunning(t, cmd.Process.Pid, "file")
	if s := ps[0].Stages[1]; s.Role != "sink" || s.Plugin != "file" || s.Pid != sink {
		t.Errorf("sink stage %+v, want the file plugin with pid %d", s, sink)
	}
	out, errOut, code := sluice(t, dir, "status", "--addr", addr)
	if code != 0 || !strings.Contains(out, "slow") || !strings.Contains(out, "running") || !strings.Contains(out, fmt.Sprintf("pid %d", sink)) {
		t.Errorf("sluice status: exit %d\n%s\n%s", code, out, errOut)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if code, _ := waitExit(t, cmd, 30*time.Second, stdout, stderr); code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
}
