package cli_test

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSecretsStaySecret plants three secrets — a secret setting written inline, an ${env:…} reference and
// a ${file:…} reference — in a plugin that logs them verbatim (through the SDK's logger, as a raw stderr
// line, on stdout) and fails with an error quoting them, then reads every output of the run: stdout (the
// summary), stderr (the host's log, the plugin lines it forwards, the progress report), the HTTP API,
// /readyz, /metrics and the status page, `sluice status`, the alerts posted, the state files in the data
// directory, and `validate --print`. None shows a secret; the places that would have shown one show
// <redacted> instead.
func TestSecretsStaySecret(t *testing.T) {
	const (
		inline  = "inline-pw-7Hq2xZ" // the secret setting password, written in the file
		fromEnv = "env-pw-Kd93mQ"    // ${env:SLUICE_TEST_DB_PASSWORD}
		inFile  = "file-tok-Wm4Lp8"  // ${file:token.txt}, in the dsn and an alert header
	)
	secrets := []string{inline, fromEnv, inFile}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "token.txt"), inFile+"\n")
	t.Setenv("SLUICE_TEST_DB_PASSWORD", fromEnv)
	hook := newHook(t)
	cfg := filepath.Join(dir, "p.yaml")
	writeFile(t, cfg, fmt.Sprintf(`version: 1
alerts:
  - url: %s/alerts
    events: [pipeline_restarting, pipeline_failed]
    min_interval: 0s
    headers: { Authorization: "Bearer ${file:token.txt}" }
pipelines:
  - id: leaky
    source:
      plugin: misbehave
      settings:
        open: leak
        password: %s
        dsn: "postgres://app:${env:SLUICE_TEST_DB_PASSWORD}@db.internal:5432/app?token=${file:token.txt}"
    sink: { plugin: discard }
    retry: { initial: 200ms, max: 500ms, give_up_after: 1h }
  - id: fine
    source: { plugin: generate, settings: { rate: 200 } }
    sink: { plugin: file, settings: { path: out.jsonl } }
`, hook.URL, inline))

	// The leaked values, as the plugin prints them, once redacted.
	const dsn = "postgres://app:<redacted>@db.internal:5432/app?token=<redacted>"
	failure := "misbehave: open failed: cannot connect to " + dsn + " with password <redacted> (transient)"

	cmd, stdout, stderr := startLockedSluice(t, dir, cfg, "--http", "127.0.0.1:0", "--data-dir", "state", "--log-level", "debug",
		"--progress", "log", "--progress-every", "1s")
	outputs := map[string]string{}
	var addr string
	waitUntil(t, 30*time.Second, "the plugin's leaks, a progress line and two alerts", func() bool {
		log := syncString(stderr)
		if addr == "" {
			addr = servingAddr(log)
		}
		return addr != "" && len(hook.events()) >= 2 && strings.Contains(log, "a raw stderr line") &&
			strings.Contains(log, "plugin wrote to stdout") && strings.Contains(log, `msg="misbehave: connecting"`) &&
			strings.Contains(log, "msg=progress pipeline=leaky state=restarting")
	})
	waitForLines(t, filepath.Join(dir, "out.jsonl"), 10)
	for _, path := range []string{"/api/pipelines", "/readyz", "/metrics", "/", "/status.js"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		outputs["GET "+path] = string(body)
	}
	status, statusErr, _ := sluice(t, dir, "status", "--addr", addr)
	outputs["sluice status"] = status + statusErr

	_ = cmd.Process.Signal(syscall.SIGTERM)
	if code, _ := waitExit(t, cmd, 60*time.Second, stdout, stderr); code != 1 {
		t.Fatalf("exit %d, want 1 (leaky was restarting when stopped)\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	outputs["stdout"], outputs["stderr"] = stdout.String(), stderr.String()
	printed, printErr, code := sluice(t, dir, "validate", "--plugins-dir", testPluginDir(), "--print", cfg)
	if code != 0 {
		t.Fatalf("validate --print: exit %d\n%s", code, printErr)
	}
	outputs["validate --print"] = printed + printErr
	hook.mu.Lock()
	for i, p := range hook.posts {
		b, _ := json.Marshal(p)
		outputs[fmt.Sprintf("alert %d", i+1)] = string(b)
	}
	hook.mu.Unlock()
	files := 0
	if err := filepath.WalkDir(filepath.Join(dir, "state"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		outputs["data dir: "+path], files = string(b), files+1
		return err
	}); err != nil || files == 0 {
		t.Fatalf("reading the data dir: %v (%d files)", err, files)
	}

	for name, text := range outputs {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s shows the secret %q:\n%s", name, s, text)
			}
		}
	}
	// Each way the plugin leaked, and each place its error went, shows the marker where the secrets were
	// (JSON escapes it: "\u003credacted\u003e").
	unescape := strings.NewReplacer(`\u003c`, "<", `\u003e`, ">")
	for name, text := range outputs {
		outputs[name] = unescape.Replace(text)
	}
	for _, tt := range []struct{ output, want string }{
		{"stderr", `msg="misbehave: connecting" pipeline=leaky plugin=misbehave stage=source dsn="` + dsn + `" password=<redacted>`},
		{"stderr", `msg="misbehave: a raw stderr line: password=<redacted> dsn=` + dsn + `"`},
		{"stderr", `msg="plugin wrote to stdout" pipeline=leaky plugin=misbehave stage=source line="misbehave: a line on stdout: password=<redacted> dsn=` + dsn + `"`},
		{"stderr", failure},
		{"stdout", "pipeline leaky: failed: source misbehave (pid "},
		{"stdout", failure},
		{"GET /api/pipelines", failure},
		{"GET /readyz", "pipeline leaky: restarting: source misbehave (pid "},
		{"GET /readyz", failure},
		{"sluice status", failure},
		{"alert 1", failure},
		{"validate --print", "password: <redacted>"},
		{"validate --print", "dsn: <redacted>"},
	} {
		if !strings.Contains(outputs[tt.output], tt.want) {
			t.Errorf("%s does not hold %q:\n%s", tt.output, tt.want, outputs[tt.output])
		}
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
