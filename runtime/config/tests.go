package config

import (
	"fmt"
	"slices"
)

// Test is one inline test of a connector file (top-level key tests): records fed to a pipeline's
// transform steps and the records expected out of them. `sluice test` runs them.
type Test struct {
	Name string
	Pos  Pos
	// Pipeline is the id of the pipeline whose steps (transforms, then sink_transforms) the test runs.
	Pipeline string
	Input    []TestRecord
	Expect   []TestRecord
}

// TestRecord is one record of a test. Written as a plain object, it is the payload; written as an object
// whose keys are among payload, key, op and meta (payload required), it sets those too.
type TestRecord struct {
	Pos Pos
	// Payload is the document as JSON-ready values (Extended JSON wrappers such as {$oid: …} included).
	Payload map[string]any
	// Key, Op and Meta are set when written; for expected records, only what is written is compared.
	Key  *string
	Op   string
	Meta map[string]string
}

var (
	testKeys       = []string{"name", "pipeline", "input", "expect"}
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
		t.Input = v.testRecords(it, "input", label)
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
			r.Payload = plain(it).(map[string]any)
			recs = append(recs, r)
			continue
		}
		p := it.fields["payload"]
		switch {
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

// recordForm reports whether a test record is written as {payload: …, key: …, op: …, meta: …}.
func recordForm(n *node) bool {
	if n.fields["payload"] == nil {
		return false
	}
	for _, k := range n.keys {
		if !slices.Contains(testRecordKeys, k) {
			return false
		}
	}
	return true
}
