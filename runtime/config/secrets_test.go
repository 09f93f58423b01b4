package config

import (
	"slices"
	"testing"
)

// TestSecrets checks what File.Secrets holds: what every reference stood for (in string, list and object
// settings at any depth, and in alerts), the values of secret settings written inline (every string of a
// secret list or object too), and alert header values; and nothing else.
func TestSecrets(t *testing.T) {
	for _, name := range []string{"full.yaml", "full.json", "full.toml"} {
		f, err := testLoader().Load("testdata/valid/" + name)
		if err != nil {
			t.Fatal(err)
		}
		got := f.Secrets()
		slices.Sort(got)
		// labels.region and path: ${env:OUT_DIR}; password: ${file:secret.txt} and token: ${env:TOKEN}, each
		// as a reference and as a secret setting. Not payload_bytes: ${env:COUNT}, an int.
		want := []string{"/var/out", "/var/out", "hunter2", "hunter2", "s3cr3t-token", "s3cr3t-token"}
		if !slices.Equal(got, want) {
			t.Errorf("%s: Secrets() = %q, want %q", name, got, want)
		}
	}

	f, err := load(t, "inline.yaml", `version: 1
alerts:
  - url: https://hooks.example.com/${env:TOKEN}
    events: [pipeline_failed]
    headers: { Authorization: "Bearer inline-bearer", X-Token: "${env:TOKEN}" }
pipelines:
  - id: p
    source: { plugin: generate, settings: { count: 5, encoding: text } }
    buffer: { plugin: memory, settings: { password: inline-password } }
    sink: { plugin: queue, settings: { brokers: [b1], password: "pre-${env:COUNT}-post" } }
`)
	if err != nil {
		t.Fatal(err)
	}
	got := f.Secrets()
	slices.Sort(got)
	want := []string{"500", "Bearer inline-bearer", "inline-password", "pre-500-post", "s3cr3t-token", "s3cr3t-token", "s3cr3t-token"}
	if !slices.Equal(got, want) {
		t.Errorf("Secrets() = %q, want %q", got, want)
	}
	got[0] = "changed"
	if f.Secrets()[0] == "changed" {
		t.Error("Secrets returns the file's own slice")
	}
}
