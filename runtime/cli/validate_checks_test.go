package cli_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateRefusesWhatRunWould validates, against the real plugins' specs, settings that a plugin
// would refuse at open or choke on at run time: out of bounds, not finite, combinations a plugin forbids,
// shell syntax and unknown reference schemes. validate and run both refuse the file (exit 2) with each
// problem at its file:line:col, and run starts nothing (no directory named $HOME appears).
func TestValidateRefusesWhatRunWould(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "bad.yaml"), `version: 1
pipelines:
  - id: numbers
    source: { plugin: generate, settings: { count: -5, rate: .nan, payload_bytes: 2000000000 } }
    buffer: { plugin: memory, settings: { max_records: 0 } }
    sink:   { plugin: discard }
  - id: combinations
    source: { plugin: mongodb, settings: { uri: "mongodb://127.0.0.1:1", collection: orders } }
    buffer: { plugin: redis, settings: { timeout: 0s, tls_key_file: client.key } }
    sink:   { plugin: discard }
  - id: references
    source: { plugin: mongodb, settings: { uri: "${MONGO_URI}", database: "${vault:shop}" } }
    sink:   { plugin: file, settings: { path: $HOME/out.jsonl } }
`)
	want := []string{
		`bad.yaml:4:52: setting "count" of plugin "generate" (source): want an int >= 0, got -5`,
		`bad.yaml:4:62: setting "rate" of plugin "generate" (source): want a finite number >= 0, got NaN`,
		`bad.yaml:4:83: setting "payload_bytes" of plugin "generate" (source): want an int from 0 to 16777216, got 2000000000`,
		`bad.yaml:5:56: setting "max_records" of plugin "memory" (buffer): want an int >= 1, got 0`,
		`bad.yaml:8:86: setting "collection" of plugin "mongodb" (source): collection needs a database: set database, or remove collection to watch the whole deployment`,
		`bad.yaml:9:51: setting "timeout" of plugin "redis" (buffer): want a duration >= 1ms, got 0s`,
		`bad.yaml:12:49: setting "uri" of plugin "mongodb" (source): the value holds ${NAME}, which is not a reference: write ${env:NAME} for an environment variable; write $${ for a literal ${`,
		`bad.yaml:12:75: setting "database" of plugin "mongodb" (source): unknown reference scheme "vault" in ${vault:…}: the schemes are env and file (${env:NAME}, ${file:PATH}); write $${ for a literal ${`,
		`bad.yaml:13:47: setting "path" of plugin "file" (sink): $HOME looks like a shell variable, which sluice does not expand: write ${env:HOME} for the environment variable, or \$HOME for the literal text`,
		`9 problems found`,
	}
	for _, cmd := range []string{"validate", "run"} {
		out, errOut, code := sluice(t, dir, cmd, "bad.yaml")
		if code != 2 || out != "" {
			t.Errorf("%s: exit %d, stdout %q; want exit 2 and nothing on stdout", cmd, code, out)
		}
		if got := strings.TrimSpace(errOut); got != strings.Join(want, "\n") {
			t.Errorf("%s: stderr\n%s\nwant\n%s", cmd, got, strings.Join(want, "\n"))
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "$HOME")); !os.IsNotExist(err) {
		t.Errorf("a directory named $HOME exists: %v", err)
	}
}

// TestValidateHugeValue validates a file holding a 5 MiB setting value: refused for its size, and
// neither stderr nor stdout echoes it.
func TestValidateHugeValue(t *testing.T) {
	dir := t.TempDir()
	huge := strings.Repeat("a", 5<<20)
	writeFile(t, filepath.Join(dir, "huge.yaml"), "version: 1\npipelines:\n  - id: p\n    source: { plugin: generate }\n"+
		"    sink: { plugin: file, settings: { path: "+huge+" } }\n")
	out, errOut, code := sluice(t, dir, "validate", "--print", "huge.yaml")
	want := `huge.yaml:5:45: setting "path" of plugin "file" (sink): the value is longer than 1 MiB, the limit for a setting value` + "\n1 problem found\n"
	if code != 2 || errOut != want || out != "" {
		t.Fatalf("exit %d, stdout %.200q, stderr %.300q; want exit 2 and %q", code, out, errOut, want)
	}
}

// TestValidateWebhookRules validates files for the example webhook plugin, built into a plugins
// directory of the test's own: its rules across settings are checked by validate.
func TestValidateWebhookRules(t *testing.T) {
	plugins := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(plugins, "webhook"), "./cmd/webhook")
	build.Dir = filepath.Join(repoRoot(), "examples", "webhook")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the webhook example: %v\n%s", err, out)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "hooks.yaml"), `version: 1
pipelines:
  - id: retries
    source: { plugin: generate, settings: { count: 1 } }
    sink:   { plugin: webhook, settings: { url: "https://example.invalid/hook", retry_initial: 30s } }
  - id: tls
    source: { plugin: generate, settings: { count: 1 } }
    sink:   { plugin: webhook, settings: { url: "http://example.invalid/hook", tls_insecure_skip_verify: true } }
  - id: fine
    source: { plugin: generate, settings: { count: 1 } }
    sink:   { plugin: webhook, settings: { url: "HTTPS://example.invalid/hook", tls_insecure_skip_verify: true, retry_max: 1m } }
`)
	_, errOut, code := sluice(t, dir, "--plugins-dir", plugins, "validate", "hooks.yaml")
	want := `hooks.yaml:5:96: setting "retry_initial" of plugin "webhook" (sink): retry_max is shorter than retry_initial: raise retry_max or lower retry_initial
hooks.yaml:8:106: setting "tls_insecure_skip_verify" of plugin "webhook" (sink): tls_ca_file and tls_insecure_skip_verify need an https url
2 problems found
`
	if code != 2 || errOut != want {
		t.Fatalf("exit %d, stderr\n%s\nwant\n%s", code, errOut, want)
	}
}

// TestValidateShowsLanes: validate's summary of a pipeline with ordered: false says so, and a pipeline
// whose sink cannot keep per-lane positions is refused where ordered is written.
func TestValidateShowsLanes(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "lanes.yaml"), `version: 1
pipelines:
  - id: lanes
    source: { plugin: generate }
    buffer: { plugin: redis, settings: { addr: "127.0.0.1:6379" } }
    sink:   { plugin: file-atomic, settings: { path: out.jsonl } }
    ordered: false
    lanes: 3
`)
	out, errOut, code := sluice(t, dir, "validate", "lanes.yaml")
	if code != 0 || !strings.Contains(out, "generate → redis → file-atomic (exactly-once; ordered: false, 3 lanes)") {
		t.Errorf("validate: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	writeFile(t, filepath.Join(dir, "bad.yaml"), `version: 1
pipelines:
  - id: lanes
    source: { plugin: generate }
    buffer: { plugin: redis, settings: { addr: "127.0.0.1:6379" } }
    sink:   { plugin: file, settings: { path: out.jsonl } }
    ordered: false
`)
	_, errOut, code = sluice(t, dir, "validate", "bad.yaml")
	if want := `bad.yaml:7:14: ordered: false keeps exactly-once with a position per lane, which needs a sink that stores positions atomically`; code != 2 || !strings.Contains(errOut, want) {
		t.Errorf("validate of a lane pipeline with the plain file sink: exit %d, stderr %q; want %q", code, errOut, want)
	}
}
