package config

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/transforms"
)

// OnError values: what a pipeline does with a record a transform step fails on.
const (
	// OnErrorStop stops the pipeline (for good: a restart would fail on the same record) and logs the
	// pipeline, step, record position and error.
	OnErrorStop = "stop"
	// OnErrorDLQ sends the record, unchanged, with the error in its metadata, to the dead-letter sink.
	OnErrorDLQ = "dlq"
)

var stepKinds = func() []string {
	ks := make([]string, len(transforms.Kinds))
	for i, k := range transforms.Kinds {
		ks[i] = string(k)
	}
	return ks
}()

// steps reads and compiles a list of transform steps; name is the list's key ("transforms"). It returns
// nil when the list is absent or empty.
func (v *validator) steps(n *node, name string) *transforms.Program {
	if n == nil || isNull(n) {
		return nil
	}
	if n.kind != kindList {
		return nil // reported by raws
	}
	var steps []transforms.Step
	var index []int // the list index of each step in steps
	ok := true
	for i, it := range n.items {
		s, good, usable := v.step(it, fmt.Sprintf("%s[%d]", name, i))
		ok = ok && good
		if usable {
			steps = append(steps, s)
			index = append(index, i)
		}
	}
	// Compile what could be read even when some of it could not, to report every problem at once.
	prog, err := transforms.Compile(steps)
	var errs transforms.Errors
	switch {
	case errors.As(err, &errs):
		for _, e := range errs {
			pos := Pos{File: v.path, Line: e.At.Line, Col: e.At.Col}
			if e.Column > 0 {
				pos = v.inside(pos, exprText(steps[e.Step], e.Field, e.When), e.Column)
			}
			shortenPaths(e, steps[e.Step])
			e.Step = index[e.Step]
			msg := strings.Replace(e.Error(), "transforms[", name+"[", 1)
			v.errs = append(v.errs, &Error{Pos: pos, Msg: msg})
		}
		return nil
	case err != nil:
		v.errorf(n.pos, "%s: %v", name, err)
		return nil
	case !ok || len(steps) == 0:
		return nil
	}
	return prog
}

// shortenPaths cuts the field paths a compile error quotes to what quote shows, so that a message never
// echoes a long path.
func shortenPaths(e *transforms.Error, s transforms.Step) {
	e.Field = truncate(e.Field, 40)
	var paths []string
	for _, f := range append(slices.Clone(s.Fields), s.Paths...) {
		paths = append(paths, f.Path, f.To)
	}
	for _, p := range paths {
		if long := strconv.Quote(p); len(long) > len(quote(p)) {
			e.Msg = strings.ReplaceAll(e.Msg, long, quote(p))
		}
	}
}

// exprText returns the expression a compile error is about.
func exprText(s transforms.Step, field string, when bool) string {
	if when {
		return s.When.Text
	}
	if field == "" {
		return s.Expr.Text
	}
	for _, f := range s.Fields {
		if f.Path == field {
			return f.Expr.Text
		}
	}
	return ""
}

// inside returns the position of column col (1-based, in characters) of expression text, which is
// written at pos: exact when the text appears on that line as written (a plain or quoted scalar without
// escapes), else pos itself; the message names the column inside the expression either way.
func (v *validator) inside(pos Pos, text string, col int) Pos {
	if pos.Line < 1 || pos.Line > len(v.lines) || text == "" || strings.ContainsRune(text, '\n') {
		return pos
	}
	line := []rune(v.lines[pos.Line-1])
	start := pos.Col - 1
	if start < 0 || start >= len(line) {
		return pos
	}
	rest := string(line[start:])
	switch {
	case strings.HasPrefix(rest, text):
		return Pos{File: pos.File, Line: pos.Line, Col: pos.Col + col - 1}
	case (rest[0] == '"' || rest[0] == '\'') && strings.HasPrefix(rest[1:], text):
		return Pos{File: pos.File, Line: pos.Line, Col: pos.Col + col}
	}
	return pos
}

// step reads one step: an object with one key, the step kind, and optionally a when condition. good is false when a problem was
// reported; usable is true when the step (perhaps with some entries left out) can still be compiled, to
// find more problems.
func (v *validator) step(n *node, label string) (s transforms.Step, good, usable bool) {
	s.At = tpos(n.pos)
	var kinds []string // the keys that are not when
	if n.kind == kindMap {
		for _, k := range n.keys {
			if k != "when" {
				kinds = append(kinds, k)
			}
		}
	}
	if n.kind == kindMap && len(kinds) > 1 {
		// One step kind and a misspelled key (wen: …) is a typo, not two steps.
		var steps, others []string
		for _, k := range kinds {
			if slices.Contains(stepKinds, k) {
				steps = append(steps, k)
			} else {
				others = append(others, k)
			}
		}
		if len(steps) == 1 {
			for _, k := range others {
				v.errorf(n.fields[k].key, "%s.%s: unknown key %q beside the step%s", label, steps[0], k, hint(k, []string{"when"}, "keys"))
			}
			return s, false, false
		}
	}
	if n.kind != kindMap || len(kinds) != 1 {
		got := describe(n, false)
		if n.kind == kindMap {
			got = fmt.Sprintf("an object with %d step keys (%s)", len(kinds), truncate(strings.Join(kinds, ", "), 80))
		}
		v.errorf(n.pos, "%s: want one step, an object with one key (%s) and optionally when, got %s", label, strings.Join(stepKinds, ", "), got)
		return s, false, false
	}
	k := kinds[0]
	c := n.fields[k]
	if !slices.Contains(stepKinds, k) {
		v.errorf(c.key, "%s: unknown step %s%s", label, quote(k), hint(k, append(slices.Clone(stepKinds), "when"), "steps"))
		return s, false, false
	}
	if w := n.fields["when"]; w != nil {
		e, ok := v.expr(w, label+".when")
		if !ok {
			return s, false, false
		}
		s.When = e
	}
	s.Kind = transforms.Kind(k)
	label += "." + k
	switch s.Kind {
	case transforms.Filter, transforms.Route, transforms.Key:
		e, ok := v.expr(c, label)
		s.Expr = e
		return s, ok, ok
	case transforms.Set:
		if c.kind != kindMap || len(c.keys) == 0 {
			v.errorf(c.pos, `%s: want an object of field paths and expressions ({ "fullDocument.total_cents": 'int(fullDocument.total * 100)' }), got %s`, label, describeShape(c))
			return s, false, false
		}
		ok := true
		for _, path := range c.keys {
			f := c.fields[path]
			e, good := v.expr(f, fmt.Sprintf("%s[%s]", label, quote(path)))
			ok = ok && good
			if good {
				s.Fields = append(s.Fields, transforms.Field{Path: path, At: tpos(f.key), Expr: e})
			}
		}
		return s, ok, len(s.Fields) > 0
	case transforms.Drop:
		items := []*node{c}
		if c.kind == kindList {
			items = c.items
		}
		if len(items) == 0 {
			v.errorf(c.pos, "%s: want a list of field paths, got an empty list", label)
			return s, false, false
		}
		ok := true
		for _, it := range items {
			p, good := it.scalar.(string)
			if it.kind != kindScalar || !good {
				v.errorf(it.pos, "%s: want a field path (a string), got %s", label, describe(it, false))
				ok = false
				continue
			}
			s.Paths = append(s.Paths, transforms.Field{Path: p, At: tpos(it.pos)})
		}
		return s, ok, len(s.Paths) > 0
	case transforms.Rename:
		if c.kind != kindMap || len(c.keys) == 0 {
			v.errorf(c.pos, `%s: want an object of old and new field paths ({ "fullDocument.cust": "fullDocument.customer" }), got %s`, label, describeShape(c))
			return s, false, false
		}
		ok := true
		for _, from := range c.keys {
			f := c.fields[from]
			to, good := f.scalar.(string)
			if f.kind != kindScalar || !good {
				v.errorf(f.pos, "%s[%s]: want the new field path (a string), got %s", label, quote(from), describe(f, false))
				ok = false
				continue
			}
			s.Fields = append(s.Fields, transforms.Field{Path: from, At: tpos(f.key), To: to, ToAt: tpos(f.pos)})
		}
		return s, ok, len(s.Fields) > 0
	}
	return s, false, false
}

// describeShape is describe, saying when an object is empty.
func describeShape(n *node) string {
	if n.kind == kindMap && len(n.keys) == 0 {
		return "an empty object"
	}
	return describe(n, false)
}

// expr reads an expression: a string, or a number or boolean written without quotes (a constant).
func (v *validator) expr(n *node, label string) (transforms.Expr, bool) {
	e := transforms.Expr{At: tpos(n.pos)}
	if n.kind != kindScalar || n.scalar == nil {
		v.errorf(n.pos, "%s: want an expression (a string), got %s", label, describe(n, false))
		return e, false
	}
	switch x := n.scalar.(type) {
	case string:
		e.Text = x
	case int64:
		e.Text = strconv.FormatInt(x, 10)
	case float64:
		e.Text = strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		e.Text = strconv.FormatBool(x)
	default:
		v.errorf(n.pos, "%s: want an expression (a string), got %s", label, describe(n, false))
		return e, false
	}
	return e, true
}

func tpos(p Pos) transforms.Pos { return transforms.Pos{Line: p.Line, Col: p.Col} }

// onError reads a pipeline's on_error and dlq keys.
func (v *validator) onError(n *node, p *Pipeline) {
	p.OnError = OnErrorStop
	if d := n.fields["dlq"]; d != nil && !isNull(d) {
		p.DeadLetter = v.stage(d, sdk.KindSink)
	}
	c := n.fields["on_error"]
	if c == nil {
		return
	}
	s, ok := v.stringKey(c, "on_error")
	if !ok {
		return
	}
	switch s {
	case OnErrorStop:
	case OnErrorDLQ:
		if p.DeadLetter == nil && (n.fields["dlq"] == nil || isNull(n.fields["dlq"])) {
			v.errorf(c.pos, "on_error: dlq needs a dead-letter sink: add dlq: { plugin: NAME, settings: {…} } to the pipeline")
			return
		}
	default:
		v.errorf(c.pos, "on_error: want %q or %q, got %s%s", OnErrorStop, OnErrorDLQ, quote(s), hint(s, []string{OnErrorStop, OnErrorDLQ}, "values"))
		return
	}
	p.OnError = s
}
