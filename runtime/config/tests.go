package config

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/sluicehq/sluice/transforms/codec"
)

// Test is one inline test of a connector file (top-level key tests): records fed to a pipeline's
// transform steps and the records expected out of them. `sluice test` runs them.
type Test struct {
	Name string
	Pos  Pos
	// Pipeline is the id of the pipeline whose steps (transforms, then sink_transforms) the test runs.
	Pipeline string
	// Source, when set, names the source plugin whose key, op and metadata the inputs get from their
	// payloads, as that source would give them (one of TestSources).
	Source string
	// Input are the records written under input, then those of the input_file.
	Input  []TestRecord
	Expect []TestRecord
}

// TestSources are the sources whose records `sluice test` can imitate (test key source).
var TestSources = []string{"mongodb"}

// TestRecord is one record of a test. Written as a plain object, it is the payload; written as an object
// whose keys are all among payload, key, op and meta, it gives those (an expected record is compared
// only on what it gives).
type TestRecord struct {
	Pos Pos
	// HasPayload is true when the record gives a payload (Payload or PayloadJSON).
	HasPayload bool
	// Payload is the document as JSON-ready values (Extended JSON wrappers such as {$oid: …} included).
	Payload map[string]any
	// PayloadJSON is the payload as written in an input_file line (Extended JSON), used as it is.
	PayloadJSON []byte
	// Key, Op and Meta are set when written; for expected records, only what is written is compared.
	Key  *string
	Op   string
	Meta map[string]string
}

var (
	testKeys       = []string{"name", "pipeline", "source", "input", "input_file", "expect"}
	testRecordKeys = []string{"payload", "key", "op", "meta"}
)

// tests reads the file's inline tests; pipelines are the file's pipelines, to check the names.
func (v *validator) tests(n *node, pipelines []*Pipeline) []*Test {
	if n == nil || isNull(n) || n.kind != kindList {
		return nil // a wrong type is reported by raws
	}
	ids := make([]string, 0, len(pipelines))
	for _, p := range pipelines {
		ids = append(ids, p.ID)
	}
	var out []*Test
	names := map[string]Pos{}
	for i, it := range n.items {
		label := fmt.Sprintf("tests[%d]", i)
		if it.kind != kindMap {
			v.errorf(it.pos, "%s: want an object with name, pipeline, input and expect, got %s", label, describe(it, false))
			continue
		}
		v.unknownKeys(it, "in "+label, testKeys)
		t := &Test{Pos: it.pos}
		if c := it.fields["name"]; c == nil {
			v.errorf(it.pos, "%s has no name: add name: TEXT", label)
		} else if s, ok := v.stringKey(c, "name"); ok {
			t.Name = s
			if first, dup := names[s]; dup {
				v.errorf(c.pos, "duplicate test name %s (first at line %d)", quote(s), first.Line)
			}
			names[s] = c.pos
			label = "test " + quote(s)
		}
		switch c := it.fields["pipeline"]; {
		case c == nil && len(ids) == 1:
			t.Pipeline = ids[0]
		case c == nil:
			v.errorf(it.pos, "%s has no pipeline: add pipeline: ID (one of %s)", label, joinAnd(ids))
		default:
			if s, ok := v.stringKey(c, "pipeline"); ok {
				if !slices.Contains(ids, s) {
					v.errorf(c.pos, "%s: no pipeline %s in this file%s", label, quote(s), hint(s, ids, "pipelines"))
				}
				t.Pipeline = s
			}
		}
		if c := it.fields["source"]; c != nil {
			if s, ok := v.stringKey(c, "source"); ok {
				if !slices.Contains(TestSources, s) {
					v.errorf(c.pos, "%s: source %q: sluice test can give inputs the key, op and metadata of %s only%s", label, s, joinAnd(TestSources), hint(s, TestSources, "sources"))
				}
				t.Source = s
			}
		}
		file := it.fields["input_file"]
		if file == nil || it.fields["input"] != nil {
			t.Input = v.testRecords(it, "input", label)
		}
		if file != nil {
			t.Input = append(t.Input, v.inputFile(file, label)...)
		}
		t.Expect = v.testRecords(it, "expect", label)
		out = append(out, t)
	}
	return out
}

func (v *validator) testRecords(t *node, key, label string) []TestRecord {
	c := t.fields[key]
	if c == nil {
		v.errorf(t.pos, "%s has no %s: add %s: [ {…}, … ] (an empty list is allowed for expect)", label, key, key)
		return nil
	}
	if isNull(c) {
		return nil
	}
	if c.kind != kindList {
		v.errorf(c.pos, "%s: %s: want a list of records, got %s", label, key, describe(c, false))
		return nil
	}
	recs := make([]TestRecord, 0, len(c.items))
	for i, it := range c.items {
		where := fmt.Sprintf("%s: %s[%d]", label, key, i)
		if it.kind != kindMap {
			v.errorf(it.pos, "%s: want an object (the payload), got %s", where, describe(it, false))
			continue
		}
		r := TestRecord{Pos: it.pos}
		if !recordForm(it) {
			r.Payload, r.HasPayload = plain(it).(map[string]any), true
			recs = append(recs, r)
			continue
		}
		p := it.fields["payload"]
		r.HasPayload = p != nil
		switch {
		case p == nil:
		case isNull(p):
		case p.kind != kindMap:
			v.errorf(p.pos, "%s: payload: want an object, got %s", where, describe(p, false))
		default:
			r.Payload = plain(p).(map[string]any)
		}
		if k := it.fields["key"]; k != nil {
			if s, ok := v.stringKey(k, "key"); ok {
				r.Key = &s
			}
		}
		if o := it.fields["op"]; o != nil {
			r.Op, _ = v.stringKey(o, "op")
		}
		if m := it.fields["meta"]; m != nil {
			if m.kind != kindMap {
				v.errorf(m.pos, "%s: meta: want an object of strings, got %s", where, describe(m, false))
			} else {
				r.Meta = map[string]string{}
				for _, k := range m.keys {
					if s, ok := v.stringKey(m.fields[k], "meta."+k); ok {
						r.Meta[k] = s
					}
				}
			}
		}
		recs = append(recs, r)
	}
	return recs
}

// recordForm reports whether a test record is written as {payload: …, key: …, op: …, meta: …}: every key
// is one of those (a payload whose only fields have those names is written under payload:).
func recordForm(n *node) bool {
	if len(n.keys) == 0 {
		return false
	}
	for _, k := range n.keys {
		if !slices.Contains(testRecordKeys, k) {
			return false
		}
	}
	return true
}

// maxInputFile bounds the size of a test's input_file.
const maxInputFile = 64 << 20

// inputFile reads a test's input_file: JSON Lines, each line a payload in (Extended) JSON — a MongoDB
// source's replay_file is one. The path is relative to the connector file.
func (v *validator) inputFile(n *node, label string) []TestRecord {
	name, ok := v.stringKey(n, "input_file")
	if !ok {
		return nil
	}
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(v.path), path)
	}
	data, err := os.ReadFile(path)
	switch {
	case err != nil:
		v.errorf(n.pos, "%s: input_file: %v", label, err)
		return nil
	case len(data) > maxInputFile:
		v.errorf(n.pos, "%s: input_file %s is %d bytes; the limit is %d", label, name, len(data), maxInputFile)
		return nil
	}
	var recs []TestRecord
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxInputFile)
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		if _, err := codec.DecodeJSON(text); err != nil {
			v.errorf(n.pos, "%s: input_file %s:%d: %v", label, name, line, err)
			continue
		}
		recs = append(recs, TestRecord{Pos: Pos{File: path, Line: line, Col: 1}, HasPayload: true, PayloadJSON: bytes.Clone(text)})
	}
	return recs
}
