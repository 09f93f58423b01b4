package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/sdk"
)

// strip returns a copy of f without what differs between formats: positions, the path and Print's
// redacted copy of the settings.
func strip(f *File) *File {
	g := *f
	g.Path, g.secrets = "", nil
	g.Tests = stripRaws(f.Tests)
	g.TestCases = nil
	for _, t := range f.TestCases {
		c := *t
		c.Pos = Pos{}
		c.Input, c.Expect = stripRecords(t.Input), stripRecords(t.Expect)
		g.TestCases = append(g.TestCases, &c)
	}
	g.Pipelines = nil
	for _, p := range f.Pipelines {
		q := *p
		q.Pos = Pos{}
		q.Transforms = stripRaws(p.Transforms)
		q.SinkTransforms = stripRaws(p.SinkTransforms)
		// Compiled steps are checked by their count; the transforms package tests what they do.
		q.Steps, q.SinkSteps = nil, nil
		if (p.Steps == nil) != (len(p.Transforms) == 0) || (p.SinkSteps == nil) != (len(p.SinkTransforms) == 0) {
			q.ID += " (steps not compiled)"
		}
		q.Source, q.Buffer, q.Sink = stripStage(p.Source), stripStage(p.Buffer), stripStage(p.Sink)
		q.DeadLetter = stripStage(p.DeadLetter)
		g.Pipelines = append(g.Pipelines, &q)
	}
	return &g
}

func stripRecords(rs []TestRecord) []TestRecord {
	var out []TestRecord
	for _, r := range rs {
		r.Pos = Pos{}
		out = append(out, r)
	}
	return out
}

func stripRaws(rs []Raw) []Raw {
	var out []Raw
	for _, r := range rs {
		out = append(out, Raw{Value: r.Value})
	}
	return out
}

func stripStage(s *Stage) *Stage {
	if s == nil {
		return nil
	}
	t := *s
	t.Pos, t.printed = Pos{}, nil
	return &t
}

// wantFull is testdata/valid/full.* as loaded.
var wantFull = &File{
	Version:  1,
	FailFast: true,
	DataDir:  "state",
	Pipelines: []*Pipeline{
		{
			ID: "orders-to-file",
			Source: &Stage{Kind: sdk.KindSource, Plugin: "generate", Spec: testSpecs["generate"], InProcess: true,
				Settings: map[string]any{
					"count":         int64(100000),
					"rate":          2.5,
					"payload_bytes": int64(500), // ${env:COUNT}
					"interval":      "1m30s",    // written 90s
					"encoding":      "text",
					"pretty":        true,
					"fields":        []any{"id", "total", int64(3)},
					"labels":        map[string]any{"team": "data", "region": "/var/out"},
				}},
			Buffer: &Stage{Kind: sdk.KindBuffer, Plugin: "memory", Spec: testSpecs["memory"],
				Settings: map[string]any{"capacity": int64(5000), "password": "hunter2"}},
			Sink: &Stage{Kind: sdk.KindSink, Plugin: "file", Spec: testSpecs["file"],
				Settings: map[string]any{
					"path":           "/var/out/orders.jsonl",
					"token":          "s3cr3t-token",
					"format":         "payload",
					"flush_interval": "1s",
				}},
			Transforms: []Raw{
				{Value: map[string]any{"filter": "total > 10"}},
				{Value: map[string]any{"set": map[string]any{"big": "true"}}},
			},
			SinkTransforms: []Raw{{Value: map[string]any{"drop": []any{"labels"}}}},
			OnError:        OnErrorDLQ,
			DeadLetter: &Stage{Kind: sdk.KindSink, Plugin: "file", Spec: testSpecs["file"],
				Settings: map[string]any{"path": "dead.jsonl", "format": "payload", "flush_interval": "1s"}},
			BatchMaxRecords:  512,
			BatchMaxBytes:    1 << 20,
			MaxInFlightBytes: 8 << 20,
			Retry:            defaultRetry, OpenTimeout: pipeline.DefaultOpenTimeout, StallTimeout: pipeline.DefaultStallTimeout,
			Ordered: true, Lanes: 1,
		},
		{
			ID: "heartbeat",
			Source: &Stage{Kind: sdk.KindSource, Plugin: "generate", Spec: testSpecs["generate"],
				Settings: map[string]any{
					"count": int64(1000), "rate": 0.0, "payload_bytes": int64(200), "interval": "1s",
					"encoding": "json", "pretty": false,
				}},
			Sink:             &Stage{Kind: sdk.KindSink, Plugin: "discard", Spec: testSpecs["discard"], Settings: map[string]any{}},
			OnError:          OnErrorStop,
			BatchMaxRecords:  DefaultBatchMaxRecords,
			BatchMaxBytes:    DefaultBatchMaxBytes,
			MaxInFlightBytes: DefaultMaxInFlightBytes,
			Retry:            defaultRetry, OpenTimeout: pipeline.DefaultOpenTimeout, StallTimeout: pipeline.DefaultStallTimeout,
			Ordered: true, Lanes: 1,
		},
	},
	Tests: []Raw{{Value: map[string]any{"name": "big orders pass", "pipeline": "orders-to-file",
		"input":  []any{map[string]any{"total": int64(20)}, map[string]any{"total": int64(5)}},
		"expect": []any{map[string]any{"total": int64(20), "big": true}}}}},
	TestCases: []*Test{{Name: "big orders pass", Pipeline: "orders-to-file",
		Input:  []TestRecord{{HasPayload: true, Payload: map[string]any{"total": int64(20)}}, {HasPayload: true, Payload: map[string]any{"total": int64(5)}}},
		Expect: []TestRecord{{HasPayload: true, Payload: map[string]any{"total": int64(20), "big": true}}}}},
}

var wantMinimal = &File{
	Version: 1,
	Pipelines: []*Pipeline{{
		ID: "quickstart",
		Source: &Stage{Kind: sdk.KindSource, Plugin: "generate", Spec: testSpecs["generate"],
			Settings: map[string]any{
				"count": int64(1000), "rate": 0.0, "payload_bytes": int64(200), "interval": "1s",
				"encoding": "json", "pretty": false,
			}},
		Sink: &Stage{Kind: sdk.KindSink, Plugin: "file", Spec: testSpecs["file"],
			Settings: map[string]any{"path": "out.jsonl", "format": "payload", "flush_interval": "1s"}},
		OnError:          OnErrorStop,
		BatchMaxRecords:  DefaultBatchMaxRecords,
		BatchMaxBytes:    DefaultBatchMaxBytes,
		MaxInFlightBytes: DefaultMaxInFlightBytes,
		Retry:            defaultRetry, OpenTimeout: pipeline.DefaultOpenTimeout, StallTimeout: pipeline.DefaultStallTimeout,
		Ordered: true, Lanes: 1,
	}},
}

var defaultRetry = pipeline.Retry{Initial: pipeline.DefaultRetryInitial, Max: pipeline.DefaultRetryMax, GiveUpAfter: pipeline.DefaultGiveUpAfter}

// TestLoadValid loads the same content written in each format and checks it resolves to the same File.
func TestLoadValid(t *testing.T) {
	tests := []struct {
		file string
		want *File
	}{
		{"full.yaml", wantFull},
		{"full.json", wantFull},
		{"full.toml", wantFull},
		{"minimal.yaml", wantMinimal},
		{"minimal.json", wantMinimal},
		{"minimal.toml", wantMinimal},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := "testdata/valid/" + tt.file
			f, err := testLoader().Load(path)
			if err != nil {
				t.Fatalf("Load(%s): %v", path, err)
			}
			if f.Path != path {
				t.Errorf("Path = %q, want %q", f.Path, path)
			}
			got := strip(f)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Load(%s) =\n%s\nwant\n%s", path, dump(got), dump(tt.want))
			}
		})
	}
}

// dump shows a File for failure messages.
func dump(f *File) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version=%d fail_fast=%v data_dir=%q tests=%#v\n", f.Version, f.FailFast, f.DataDir, f.Tests)
	for _, p := range f.Pipelines {
		fmt.Fprintf(&b, "pipeline %q at %s: batch %d/%d in flight %d transforms=%#v\n",
			p.ID, p.Pos, p.BatchMaxRecords, p.BatchMaxBytes, p.MaxInFlightBytes, p.Transforms)
		for _, s := range []*Stage{p.Source, p.Buffer, p.Sink} {
			if s != nil {
				fmt.Fprintf(&b, "  %s %s (spec %p) in_process=%v settings=%#v\n", s.Kind, s.Plugin, s.Spec, s.InProcess, s.Settings)
			}
		}
	}
	return b.String()
}

// TestPositions checks where pipelines, stages and raw items are said to start, in each format.
func TestPositions(t *testing.T) {
	tests := []struct {
		file                            string
		pipeline, source, sink, buffer  Pos
		transform0, transform1, testPos Pos
	}{
		{"full.yaml", Pos{Line: 6, Col: 5}, Pos{Line: 8, Col: 7}, Pos{Line: 28, Col: 7}, Pos{Line: 23, Col: 7},
			Pos{Line: 20, Col: 9}, Pos{Line: 21, Col: 9}, Pos{Line: 43, Col: 5}},
		{"full.json", Pos{Line: 6, Col: 3}, Pos{Line: 8, Col: 14}, Pos{Line: 30, Col: 12}, Pos{Line: 26, Col: 14},
			Pos{Line: 23, Col: 5}, Pos{Line: 24, Col: 5}, Pos{Line: 44, Col: 3}},
		{"full.toml", Pos{Line: 6, Col: 3}, Pos{Line: 19, Col: 12}, Pos{Line: 37, Col: 12}, Pos{Line: 33, Col: 12},
			Pos{Line: 9, Col: 3}, Pos{Line: 10, Col: 3}, Pos{Line: 47, Col: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := "testdata/valid/" + tt.file
			f, err := testLoader().Load(path)
			if err != nil {
				t.Fatal(err)
			}
			p := f.Pipelines[0]
			for _, c := range []struct {
				what      string
				got, want Pos
			}{
				{"pipeline", p.Pos, tt.pipeline},
				{"source", p.Source.Pos, tt.source},
				{"buffer", p.Buffer.Pos, tt.buffer},
				{"sink", p.Sink.Pos, tt.sink},
				{"transforms[0]", p.Transforms[0].Pos, tt.transform0},
				{"transforms[1]", p.Transforms[1].Pos, tt.transform1},
				{"tests[0]", f.Tests[0].Pos, tt.testPos},
			} {
				c.want.File = path
				if c.got != c.want {
					t.Errorf("%s at %s, want %s", c.what, c.got, c.want)
				}
			}
		})
	}
}

// TestPrint checks Print's output against a golden file, that the three formats print the same, and that
// no secret or referenced value is printed.
func TestPrint(t *testing.T) {
	var outs []string
	for _, name := range []string{"full.yaml", "full.json", "full.toml"} {
		path := "testdata/valid/" + name
		f, err := testLoader().Load(path)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := f.Print(&b); err != nil {
			t.Fatal(err)
		}
		header, body, _ := strings.Cut(b.String(), "\n")
		if want := "# " + path + " (resolved; secrets redacted)"; header != want {
			t.Errorf("header %q, want %q", header, want)
		}
		for _, secret := range []string{"s3cr3t-token", "hunter2", "/var/out", ": 500\n"} {
			if strings.Contains(body, secret) {
				t.Errorf("Print(%s) shows %q:\n%s", name, secret, body)
			}
		}
		outs = append(outs, body)
	}
	if outs[0] != outs[1] || outs[0] != outs[2] {
		t.Errorf("formats print differently:\nyaml:\n%s\njson:\n%s\ntoml:\n%s", outs[0], outs[1], outs[2])
	}
	golden := "testdata/valid/full.print.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(outs[0]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if outs[0] != string(want) {
		t.Errorf("Print differs from %s:\ngot:\n%s\nwant:\n%s", golden, outs[0], want)
	}
}

// TestPrintRoundTrip checks that Print's output of a file without secrets or references loads back to the
// same File.
func TestPrintRoundTrip(t *testing.T) {
	f, err := testLoader().Load("testdata/valid/minimal.toml")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := f.Print(&b); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "printed.yaml")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	g, err := testLoader().Load(path)
	if err != nil {
		t.Fatalf("loading printed file: %v\n%s", err, b.String())
	}
	if !reflect.DeepEqual(strip(g), strip(f)) {
		t.Errorf("printed file loads as\n%s\nwant\n%s", dump(strip(g)), dump(strip(f)))
	}
}

// load writes content to a temporary file named name and loads it with the test specs.
func load(t *testing.T, name, content string) (*File, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return testLoader().Load(path)
}

// TestSettingValues checks how each setting type accepts and normalises values, per format.
func TestSettingValues(t *testing.T) {
	tests := []struct {
		name    string
		file    string // the source settings, in the file's format
		setting string
		want    any
		wantErr string
	}{
		{"int", "count: 7", "count", int64(7), ""},
		{"int hex", "count: 0x10", "count", int64(16), ""},
		{"int whole float", "count: 1e3", "count", int64(1000), ""},
		{"int fraction", "count: 1.5", "count", nil, "want int, got float 1.5"},
		{"int from env", "count: ${env:COUNT}", "count", int64(500), ""},
		{"int json exact", `{"count": 9007199254740993}`, "count", int64(9007199254740993), ""},
		{"int toml", "count = 9007199254740993", "count", int64(9007199254740993), ""},
		{"float from int", "rate: 3", "rate", 3.0, ""},
		{"float json", `{"rate": 0.25}`, "rate", 0.25, ""},
		{"float json whole", `{"rate": 2}`, "rate", 2.0, ""},
		{"float string", "rate: '3'", "rate", nil, `want float, got string "3"`},
		{"bool", "pretty: true", "pretty", true, ""},
		{"bool yaml 1.1 yes", "pretty: yes", "pretty", nil, `want bool (true or false), got string "yes"`},
		{"duration normalised", "interval: 1500ms", "interval", "1.5s", ""},
		{"duration toml", `interval = "2h"`, "interval", "2h0m0s", ""},
		{"duration int", "interval: 5", "interval", nil, `(write "5s" for 5 seconds)`},
		{"string date kept as written", "encoding: 2001-12-14", "encoding", nil, `"2001-12-14" is not allowed`},
		{"list date kept as written", "fields: [2001-12-14]", "fields", []any{"2001-12-14"}, ""},
		{"toml date kept as written", "fields = [1979-05-27T07:32:00Z]", "fields", []any{"1979-05-27T07:32:00Z"}, ""},
		{"object", "labels: {a: 1, b: [x], c: null}", "labels", map[string]any{"a": int64(1), "b": []any{"x"}, "c": nil}, ""},
		{"json object", `{"labels": {"a": 1, "b": 1.5}}`, "labels", map[string]any{"a": int64(1), "b": 1.5}, ""},
		{"escaped reference", "encoding: $${env:X}", "encoding", nil, `"${env:X}" is not allowed`},
		{"shell braces", "labels: {t: '${HOME}'}", "labels", nil, "${HOME} is not a reference: write ${env:HOME} for the environment variable HOME, or $${HOME} for the literal text"},
		{"escaped shell braces", "labels: {t: '$${HOME}'}", "labels", map[string]any{"t": "${HOME}"}, ""},
		{"unknown scheme", "encoding: '${vault:secret/x}'", "encoding", nil, `unknown reference scheme "vault" in ${vault:…}: the schemes are env and file (${env:NAME}, ${file:PATH}); write $${ for a literal ${`},
		{"unknown scheme unterminated", "labels: {t: '${vault:x'}", "labels", nil, `unknown reference scheme "vault"`},
		{"bare ${", "labels: {t: 'a ${ b }'}", "labels", nil, "${ starts a reference, ${env:NAME} or ${file:PATH}; write $${ for a literal ${"},
		{"shell variable", "labels: {t: $HOME/out}", "labels", nil, `$HOME looks like a shell variable, which sluice does not expand: write ${env:HOME} for the environment variable, or \$HOME for the literal text`},
		{"shell variable in int", "count: $COUNT", "count", nil, "$COUNT looks like a shell variable"},
		{"escaped shell variable", `labels: {t: \$HOME/out}`, "labels", map[string]any{"t": "$HOME/out"}, ""},
		{"mongodb operators", "fields: [{$match: {a: '$b', c: '$$ROOT', d: '$$NOW', e: '$$CLUSTER_TIME'}}]", "fields",
			[]any{map[string]any{"$match": map[string]any{"a": "$b", "c": "$$ROOT", "d": "$$NOW", "e": "$$CLUSTER_TIME"}}}, ""},
		{"dollars that are text", `labels: {a: pa$$word, b: pa$word, c: $5, d: '^a$', e: $Word, f: $_, g: a$, h: $HOMEdir, i: $1ABC, j: C:\dir}`, "labels",
			map[string]any{"a": "pa$$word", "b": "pa$word", "c": "$5", "d": "^a$", "e": "$Word", "f": "$_", "g": "a$", "h": "$HOMEdir", "i": "$1ABC", "j": `C:\dir`}, ""},
		{"run of dollars before a brace", "labels: {t: '$$$${x}'}", "labels", map[string]any{"t": "$$${x}"}, ""},
		{"shell variable json", `{"labels": {"t": "$MONGO_URI"}}`, "labels", nil, "$MONGO_URI looks like a shell variable"},
		{"shell variable toml", `labels = { t = "${MONGO_URI}" }`, "labels", nil, "write ${env:MONGO_URI}"},
		{"negative int", "count: -5", "count", nil, `setting "count" of plugin "generate" (source): want an int >= 0, got -5`},
		{"int at max", "payload_bytes: 16777216", "payload_bytes", int64(16777216), ""},
		{"int over max", "payload_bytes: 2000000000", "payload_bytes", nil, "want an int from 0 to 16777216, got 2000000000"},
		{"negative float", "rate: -5", "rate", nil, `setting "rate" of plugin "generate" (source): want a number >= 0, got -5`},
		{"negative float json", `{"rate": -0.5}`, "rate", nil, "want a number >= 0, got -0.5"},
		{"nan", "rate: .nan", "rate", nil, "want a finite number >= 0, got NaN"},
		{"inf", "rate: .inf", "rate", nil, "want a finite number >= 0, got +Inf"},
		{"nan unbounded", "ratio: .NaN", "ratio", nil, "want a finite number, got NaN"},
		{"negative inf unbounded", "ratio: -.inf", "ratio", nil, "want a finite number, got -Inf"},
		{"nan toml", "rate = nan", "rate", nil, "want a finite number >= 0, got NaN"},
		{"inf toml", "ratio = -inf", "ratio", nil, "want a finite number, got -Inf"},
		{"inf in int", "count: .inf", "count", nil, "want int, got float +Inf"},
		{"nan in an object", "labels: {a: [1, .nan]}", "labels", nil, "NaN cannot be sent to a plugin (JSON has no NaN or infinity): want a finite number"},
		{"nan in a toml object", "labels = { a = inf }", "labels", nil, "+Inf cannot be sent to a plugin"},
		{"duration under min", "interval: 0s", "interval", nil, "want a duration from 1ms to 24h, got 0s"},
		{"duration over max", "interval: 25h", "interval", nil, "want a duration from 1ms to 24h, got 25h0m0s"},
		{"duration at max", "interval: 1440m", "interval", "24h0m0s", ""},
		{"int from env out of range", "count: ${env:NEGATIVE}", "count", nil, "the value of ${env:NEGATIVE} is out of range: want an int >= 0"},
		{"float from env not finite", "rate: ${env:NAN}", "rate", nil, "the value of ${env:NAN} is out of range: want a finite number >= 0"},
		{"list from env", "fields: '${env:COUNT}'", "fields", nil, "the value of ${env:COUNT} is not a valid list"},
		{"empty env is set", "labels: {t: 'a${env:EMPTY}b'}", "labels", map[string]any{"t": "ab"}, ""},
		{"several references", "labels: {t: '${env:COUNT}-${env:COUNT}'}", "labels", map[string]any{"t": "500-500"}, ""},
		{"empty reference", "labels: {t: '${env:}'}", "labels", nil, "empty reference ${env:}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var name, content string
			switch {
			case strings.HasPrefix(tt.file, "{"):
				name = "c.json"
				content = `{"version": 1, "pipelines": [{"id": "p", "source": {"plugin": "generate", "settings": ` +
					tt.file + `}, "sink": {"plugin": "discard"}}]}`
			case strings.Contains(tt.file, " = "):
				name = "c.toml"
				content = "version = 1\n[[pipelines]]\nid = \"p\"\nsink.plugin = \"discard\"\n" +
					"[pipelines.source]\nplugin = \"generate\"\n[pipelines.source.settings]\n" + tt.file + "\n"
			default:
				name = "c.yaml"
				content = "version: 1\npipelines:\n  - id: p\n    sink: {plugin: discard}\n    source:\n" +
					"      plugin: generate\n      settings:\n        " + tt.file + "\n"
			}
			f, err := load(t, name, content)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Load: %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := f.Pipelines[0].Source.Settings[tt.setting]
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s = %#v, want %#v", tt.setting, got, tt.want)
			}
		})
	}
}

func TestFileReference(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"crlf.txt": "a\r\n", "two.txt": "b\n\n", "none.txt": "c"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	abs := filepath.Join(dir, "none.txt")
	content := "version: 1\npipelines:\n  - id: p\n    source: {plugin: generate}\n" +
		"    sink: {plugin: file, settings: {path: '${file:crlf.txt}|${file:two.txt}|${file:" + abs + "}'}}\n"
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := testLoader().Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.Pipelines[0].Sink.Settings["path"], "a|b\n|c"; got != want {
		t.Errorf("path = %q, want %q", got, want)
	}
}

// TestLoadDefaults covers the package-level Load: the process environment, and no plugin list.
func TestLoadDefaults(t *testing.T) {
	t.Setenv("SLUICE_CONFIG_TEST_PATH", "from-env.jsonl")
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yml")
	content := "version: 1\npipelines:\n  - id: p\n    source: {plugin: generate}\n" +
		"    sink: {plugin: file, settings: {path: '${env:SLUICE_CONFIG_TEST_PATH}'}}\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Load(path, testSpec)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Pipelines[0].Sink.Settings["path"]; got != "from-env.jsonl" {
		t.Errorf("path = %q, want from-env.jsonl", got)
	}

	_, err = Load(path, func(string) (*sdk.Spec, bool) { return nil, false })
	want := path + `:4:22: unknown plugin "generate"; "sluice plugins list" shows the installed plugins` + "\n"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Load with no plugins: %v, want %s…", err, want)
	}
	l := &Loader{Specs: func(string) (*sdk.Spec, bool) { return nil, false }, Plugins: []string{"discard"},
		UnknownPluginHint: "searched /opt/plugins; skipped: /opt/plugins/gen (not a sluice plugin)"}
	_, err = l.Load(path)
	want = path + `:4:22: unknown plugin "generate"; known plugins: discard; searched /opt/plugins; skipped: /opt/plugins/gen (not a sluice plugin)` + "\n"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Load with a hint: %v, want %s…", err, want)
	}

	_, err = Load(filepath.Join(dir, "missing.yaml"), testSpec)
	var errs Errors
	if err == nil || errors.As(err, &errs) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing file) = %v, want a plain not-exist error", err)
	}
}

func TestBadSpecDefault(t *testing.T) {
	l := testLoader()
	l.Specs = func(name string) (*sdk.Spec, bool) {
		if name != "odd" {
			return testSpec(name)
		}
		return &sdk.Spec{Name: "odd", Source: &sdk.Stage{Settings: []sdk.Setting{
			{Name: "n", Type: sdk.TypeInt, Default: "ten", Doc: "n."},
			{Name: "mode", Type: sdk.TypeString, Default: "c", Enum: []string{"a", "b"}, Doc: "mode."},
			{Name: "tags", Type: sdk.TypeList, Default: "[a, 1]", Doc: "tags."},
			{Name: "d", Type: sdk.TypeDuration, Default: "60s", Doc: "d."},
		}}}, true
	}
	path := filepath.Join(t.TempDir(), "c.yaml")
	content := "version: 1\npipelines:\n  - id: p\n    source: {plugin: odd}\n    sink: {plugin: discard}\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := l.Load(path)
	want := path + `:4:13: plugin "odd" (source) declares an invalid default for setting "n": "ten" is not an int` + "\n" +
		path + `:4:13: plugin "odd" (source) declares an invalid default for setting "mode": "c" is not allowed; want one of "a", "b"`
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}

func TestErrorText(t *testing.T) {
	errs := Errors{
		{Pos: Pos{File: "a.yaml", Line: 3, Col: 5}, Msg: "one"},
		{Pos: Pos{File: "a.yaml", Line: 10, Col: 1}, Msg: "two"},
	}
	if got, want := errs.Error(), "a.yaml:3:5: one\na.yaml:10:1: two"; got != want {
		t.Errorf("Errors.Error() = %q, want %q", got, want)
	}
	var err error = errs
	var e *Error
	if !errors.As(err, &e) || e.Msg != "one" {
		t.Errorf("errors.As(*Error) = %v", e)
	}
	if got := (Pos{File: "x.toml"}).String(); got != "x.toml" {
		t.Errorf("zero line Pos = %q", got)
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"version", "fail_fast", "data_dir", "pipelines", "tests"}
	tests := []struct {
		word, want string
		ok         bool
	}{
		{"pipeline", "pipelines", true},
		{"Version", "version", true},
		{"datadir", "data_dir", true},
		{"failfast", "fail_fast", true},
		{"test", "tests", true},
		{"xyz", "", false},
		{"ab", "", false},
		{strings.Repeat("p", 1000), "", false},
	}
	for _, tt := range tests {
		got, ok := suggest(tt.word, known)
		if ok != tt.ok || ok && got != tt.want {
			t.Errorf("suggest(%q) = %q, %v; want %q, %v", tt.word, got, ok, tt.want, tt.ok)
		}
	}
}

// TestDollars loads a file whose settings hold '$' that is text (MongoDB operators and variables,
// prices, escapes) and compares what Print shows with testdata/valid/dollars.print.golden.
func TestDollars(t *testing.T) {
	f, err := testLoader().Load("testdata/valid/dollars.yaml")
	if err != nil {
		t.Fatal(err)
	}
	labels := f.Pipelines[0].Source.Settings["labels"].(map[string]any)
	for k, want := range map[string]string{"escaped_shell": "$HOME/out", "escaped_ref": "${env:HOME}", "password": "pa$$word", "from_env": "ab"} {
		if labels[k] != want {
			t.Errorf("labels.%s = %q, want %q", k, labels[k], want)
		}
	}
	var b bytes.Buffer
	if err := f.Print(&b); err != nil {
		t.Fatal(err)
	}
	golden := "testdata/valid/dollars.print.golden"
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != string(want) {
		t.Errorf("Print differs from %s:\ngot:\n%s\nwant:\n%s", golden, b.String(), want)
	}
}

// TestRuleFaults checks that rules a plugin got wrong are reported as the plugin's fault, at the plugin's
// name, and that a stage's rules are compiled once per Loader.
func TestRuleFaults(t *testing.T) {
	odd := &sdk.Spec{Name: "odd", Sink: &sdk.Stage{Settings: []sdk.Setting{
		{Name: "mode", Type: sdk.TypeString, Default: "a", Doc: "mode."},
		{Name: "limit", Type: sdk.TypeInt, Doc: "optional, no default: nil when absent."},
		{Name: "n", Type: sdk.TypeInt, Default: "1", Min: "zero", Doc: "a malformed bound."},
	}, Rules: []sdk.Rule{
		{Expr: `mode ==`, Message: "m."},
		{Expr: `mode`, Message: "m."},
		{Expr: `nope == 1`, Message: "m."},
		{Expr: `len(mode)`, Message: "m."},
		{Expr: `limit > 0`, Message: "m."},
		{Expr: `mode == "a" && (limit == nil || limit > 0)`, Message: "m."},
	}}}
	l := testLoader()
	l.Specs = func(name string) (*sdk.Spec, bool) {
		if name == "odd" {
			return odd, true
		}
		return testSpec(name)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	content := "version: 1\npipelines:\n  - id: p\n    source: {plugin: generate}\n    sink: {plugin: odd}\n" +
		"  - id: q\n    source: {plugin: generate}\n    sink: {plugin: odd, settings: {n: 2}}\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := l.Load(path)
	fault := "; this is the plugin's fault, not the file's: report it to the plugin's author"
	want := []string{
		path + `:5:11: plugin "odd" (sink) declares an invalid default for setting "n": its bounds are invalid: min "zero" is not an int`,
		path + `:8:39: plugin "odd" (sink) declares an invalid bound for setting "n": min "zero" is not an int; this is the plugin's fault, not the file's`,
	}
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Fatalf("got\n%v\nwant\n%s", err, strings.Join(want, "\n"))
	}

	odd.Sink.Settings[2].Min = ""
	// A rule broken by settings not written in the file is reported at the stage.
	odd.Sink.Rules = append(odd.Sink.Rules, sdk.Rule{Expr: `mode != "a"`, Message: "mode must not be a.", Settings: []string{"mode"}})
	l = testLoader()
	l.Specs = func(name string) (*sdk.Spec, bool) {
		if name == "odd" {
			return odd, true
		}
		return testSpec(name)
	}
	_, err = l.Load(path)
	at := path + ":5:20: "
	want = []string{
		path + `:5:11: plugin "odd" (sink): mode must not be a.`,
		at + `plugin "odd" (sink) declares a rule "mode ==" that does not compile: unexpected token EOF (1:7)` + fault,
		at + `plugin "odd" (sink) declares a rule "mode" that does not compile: expected bool, but got string` + fault,
		at + `plugin "odd" (sink) declares a rule "nope == 1" that does not compile: unknown name nope (1:1)` + fault,
		at + `plugin "odd" (sink) declares a rule "len(mode)" that does not compile: expected bool, but got int` + fault,
		at + `plugin "odd" (sink) declares a rule that fails on these settings` + fault + `: rule "limit > 0": invalid operation: <nil> > int (1:7)`,
	}
	got := strings.Split(err.Error(), "\n")
	if len(got) != 2*len(want) {
		t.Fatalf("got %d problems, want %d for each of 2 pipelines:\n%v", len(got), len(want), err)
	}
	for i, w := range want {
		if got[i] != w {
			t.Errorf("problem %d:\n got %s\nwant %s", i, got[i], w)
		}
	}
	if n := len(l.ruleCache); n != 1 {
		t.Errorf("%d stages' rules compiled, want 1 (the odd sink, once for both pipelines)", n)
	}
	if first := l.compiled(odd.Sink); l.compiled(odd.Sink) != first {
		t.Error("rules compiled again for the same stage")
	}
}

// TestValueLimits checks the size limit on setting values, and that no message echoes a long value.
func TestValueLimits(t *testing.T) {
	dir := t.TempDir()
	big := strings.Repeat("x", MaxValueBytes+1)
	for name, content := range map[string]string{"big.txt": big, "exact.txt": big[1:] + "\r\n", "half.txt": big[:MaxValueBytes/2+1]} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	long := strings.Repeat("y", 50<<10)
	content := "version: 1\npipelines:\n" +
		"  - id: p\n    source:\n      plugin: generate\n      settings:\n" +
		"        encoding: " + big + "\n" + // line 7
		"        labels: {a: '${file:half.txt}', b: '${file:half.txt}'}\n" + // line 8: over the limit together
		"        fields: ['${file:big.txt}']\n" + // line 9
		"        " + long[:1000] + ": 1\n" + // line 10: an unknown key (YAML keys are at most 1024 characters)
		"        count: " + long + "\n" + // line 11: a long string where an int belongs
		"    sink: {plugin: file, settings: {path: '${file:exact.txt}', token: '${file:/dev/zero}'}}\n" // line 12
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := testLoader().Load(path)
	if err == nil {
		t.Fatal("Load accepted values over the limit")
	}
	got := err.Error()
	for _, want := range []string{
		`:7:19: setting "encoding" of plugin "generate" (source): the value is longer than 1 MiB, the limit for a setting value`,
		`:8:17: setting "labels" of plugin "generate" (source): the value is larger than 1 MiB (as JSON), the limit for a setting value`,
		`:9:18: setting "fields" of plugin "generate" (source): ${file:big.txt}: file ` + filepath.Join(dir, "big.txt") + ` is larger than 1 MiB, the limit for a setting value`,
		`:10:9: unknown key "` + long[:40] + `…" in settings of plugin "generate" (source)`,
		`:11:16: setting "count" of plugin "generate" (source): want int, got string "` + long[:40] + `…"`,
		`:12:71: setting "token" of plugin "file" (sink): ${file:/dev/zero}: file /dev/zero is larger than 1 MiB`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("errors lack %q:\n%.3000s", want, got)
		}
	}
	if strings.Contains(got, `"path"`) {
		t.Errorf("a file of exactly 1 MiB and a CRLF is refused:\n%.3000s", got)
	}
	if len(got) > 3000 {
		t.Errorf("errors are %d bytes: a long value is echoed:\n%.3000s…", len(got), got)
	}
}

// TestLongNamesNotEchoed checks that messages about transform paths, test names, keys and pipeline ids
// quote at most 40 characters of them (70 of an invalid pipeline id, to show one just over the 63 allowed).
func TestLongNamesNotEchoed(t *testing.T) {
	long := strings.Repeat("a", 5000)
	content := `{"version": 1, "pipelines": [{"id": "` + long + `", "source": {"plugin": "generate"}, "sink": {"plugin": "discard"},
  "transforms": [{"set": {"` + long + `..x": "1"}}, {"drop": ["` + long + `..y"]}, {"rename": {"` + long + `": "` + long + `.."}}, {"` + long + `": 1}]},
 {"id": "p", "source": {"plugin": "` + long + `"}, "sink": {"plugin": "discard"}, "` + long + `": 1}],
 "tests": [{"name": "` + long + `", "pipeline": "` + long + `b", "input": [], "expect": []}]}`
	_, err := load(t, "c.json", content)
	if err == nil {
		t.Fatal("Load accepted the file")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) < 8 {
		t.Errorf("%d problems, want at least 8:\n%v", len(lines), err)
	}
	for _, l := range lines {
		if strings.Contains(l, long[:71]) || !strings.Contains(l, "pipeline id") && strings.Contains(l, long[:41]) {
			t.Errorf("a message echoes a long name: %.300s…", l)
		}
	}
}

// TestYAMLAliasKeyOrder checks that values reused through a YAML alias keep the order of their mapping
// keys as written (a set step's entries run in that order), are reported at the alias, keep dates as
// written, and that a document of nested aliases is refused (yamlWalker visits a bounded number of its values).
func TestYAMLAliasKeyOrder(t *testing.T) {
	const doc = `version: 1
base: &base { z: 1, a: 2, m: { y: 1, b: 2 } }
steps: &steps
  - set: { "z": "seq + 1", "a": "z * 10" }
  - rename: { "q": "r", "b": "c" }
when: &d 2024-01-02T03:04:05.5+01:00
copy: *base
aliased: *steps
list: [*base]
date: *d
`
	root, errs := document("f.yaml", []byte(doc))
	if errs != nil {
		t.Fatal(errs)
	}
	for _, c := range []struct {
		what string
		n    *node
		want []string
	}{
		{"base", root.fields["base"], []string{"z", "a", "m"}},
		{"copy", root.fields["copy"], []string{"z", "a", "m"}},
		{"copy.m", root.fields["copy"].fields["m"], []string{"y", "b"}},
		{"list[0]", root.fields["list"].items[0], []string{"z", "a", "m"}},
		{"aliased[0].set", root.fields["aliased"].items[0].fields["set"], []string{"z", "a"}},
		{"aliased[1].rename", root.fields["aliased"].items[1].fields["rename"], []string{"q", "b"}},
	} {
		if !slices.Equal(c.n.keys, c.want) {
			t.Errorf("%s keys %q, want %q as written", c.what, c.n.keys, c.want)
		}
	}
	alias := Pos{File: "f.yaml", Line: 8, Col: 10}
	if got := root.fields["aliased"].items[0].fields["set"].fields["a"]; got.key != alias || got.pos != alias {
		t.Errorf("aliased[0].set.a at %s (key %s), want the alias at %s", got.pos, got.key, alias)
	}
	if got := root.fields["date"].scalar; got != "2024-01-02T03:04:05.5+01:00" {
		t.Errorf("date through an alias = %v, want it as written", got)
	}

	// A duplicate key under an anchor is reported once, where it is written.
	_, errs = document("f.yaml", []byte("version: 1\na: &a { x: 1, x: 2 }\nb: *a\nc: *a\n"))
	if len(errs) != 1 || errs[0].Pos.Line != 2 || !strings.Contains(errs[0].Msg, `duplicate key "x"`) {
		t.Errorf("duplicate key under an anchor: %v, want one problem at line 2", errs)
	}

	// A billion laughs: 10^9 values through 9 levels of aliases.
	var b strings.Builder
	b.WriteString("version: 1\nl0: &l0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "l%d: &l%d [", i, i)
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*l%d", i-1)
		}
		b.WriteString("]\n")
	}
	if _, errs := document("f.yaml", []byte(b.String())); errs == nil {
		t.Error("a document of nested aliases was accepted")
	}
}
