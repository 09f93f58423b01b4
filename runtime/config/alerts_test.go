package config

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/alert"
)

// TestAlerts loads testdata/valid/alerts.* (every key of an alert, with references) in the three
// formats: each resolves to the same alerts, and Print shows them as testdata/valid/alerts.print.golden
// does, without the token or any header value.
func TestAlerts(t *testing.T) {
	want := []alert.Target{
		{URL: "https://hooks.example.com/services/s3cr3t-token", Events: alert.Events, MinInterval: 30 * time.Second,
			Headers: map[string]string{"Authorization": "Bearer s3cr3t-token", "X-Team": "data"}, BufferHigh: 0.9, LagHigh: 90 * time.Second},
		{URL: "http://127.0.0.1:9000/alerts", Events: []alert.Event{alert.PipelineFailed}, BufferHigh: alert.DefaultBufferHigh,
			LagHigh: alert.DefaultLagHigh},
	}
	var outs []string
	for _, name := range []string{"alerts.yaml", "alerts.json", "alerts.toml"} {
		path := "testdata/valid/" + name
		f, err := testLoader().Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Alerts) != len(want) {
			t.Fatalf("%s: %d alerts, want %d", name, len(f.Alerts), len(want))
		}
		for i, a := range f.Alerts {
			if !strings.HasPrefix(a.Name, a.Pos.String()+" ") || a.Pos.Line == 0 {
				t.Errorf("%s: alert %d is named %q at %s", name, i, a.Name, a.Pos)
			}
			got := a.Target
			got.Name = ""
			if !reflect.DeepEqual(got, want[i]) {
				t.Errorf("%s: alert %d is\n%+v\nwant\n%+v", name, i, got, want[i])
			}
		}
		if want := "https://hooks.example.com"; !strings.HasSuffix(f.Alerts[0].Name, " "+want) {
			t.Errorf("%s: name %q does not end with %s", name, f.Alerts[0].Name, want)
		}
		var b bytes.Buffer
		if err := f.Print(&b); err != nil {
			t.Fatal(err)
		}
		_, body, _ := strings.Cut(b.String(), "\n")
		if strings.Contains(body, "s3cr3t") || strings.Contains(body, "data") || strings.Contains(body, "/services") {
			t.Errorf("Print(%s) shows a secret or a header value:\n%s", name, body)
		}
		outs = append(outs, body)
	}
	if outs[0] != outs[1] || outs[0] != outs[2] {
		t.Errorf("formats print differently:\nyaml:\n%s\njson:\n%s\ntoml:\n%s", outs[0], outs[1], outs[2])
	}
	golden := "testdata/valid/alerts.print.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(outs[0]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if outs[0] != string(g) {
		t.Errorf("Print differs from %s:\ngot:\n%s\nwant:\n%s", golden, outs[0], g)
	}
}

// TestAlertDefaults: an alert with only url and events takes the documented defaults, and a file without
// alerts has none.
func TestAlertDefaults(t *testing.T) {
	f, err := load(t, "a.yaml", `version: 1
alerts: [{url: "https://h.example/x", events: [lag_high]}]
pipelines: [{id: a, source: {plugin: generate}, sink: {plugin: discard}}]
`)
	if err != nil {
		t.Fatal(err)
	}
	a := f.Alerts[0]
	if a.MinInterval != alert.DefaultMinInterval || a.LagHigh != alert.DefaultLagHigh || a.BufferHigh != alert.DefaultBufferHigh || a.Headers != nil {
		t.Errorf("defaults: %+v", a.Target)
	}
	var b bytes.Buffer
	if err := f.Print(&b); err != nil {
		t.Fatal(err)
	}
	if want := "alerts:\n  - url: https://h.example/x\n    events:\n      - lag_high\n    min_interval: 1m0s\n    lag_high: 5m0s\npipelines:"; !strings.Contains(b.String(), want) {
		t.Errorf("Print:\n%s\nwant it to contain\n%s", b.String(), want)
	}
	f, err = load(t, "b.yaml", "version: 1\npipelines: [{id: a, source: {plugin: generate}, sink: {plugin: discard}}]\n")
	if err != nil || f.Alerts != nil {
		t.Fatalf("alerts %v, err %v", f.Alerts, err)
	}
}
