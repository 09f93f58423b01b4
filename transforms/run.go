package transforms

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms/codec"
)

// Failure is a record a step could not process. Records are never dropped because of an error: the host
// stops the pipeline or sends the record to the dead-letter sink (on_error). Its message never carries a
// field's whole value: values are cut after 60 bytes and the message after 1 KiB, each cut marked "…".
type Failure struct {
	// Record is the record as it entered the steps, unchanged. It aliases the batch passed to Run.
	Record record.Record
	// Step is the index of the failing step, or -1 when decoding or encoding the payload failed.
	Step int
	Kind Kind
	// Field is the set, rename or drop entry that failed, if any.
	Field string
	// When is true when the step's when condition failed.
	When bool
	Err  error
}

// Error describes the failure: which step, and why.
func (f *Failure) Error() string {
	switch {
	case f.Step < 0:
		return f.Err.Error()
	case f.When:
		return fmt.Sprintf("transforms[%d].%s.when: %v", f.Step, f.Kind, f.Err)
	case f.Field != "":
		return fmt.Sprintf("transforms[%d].%s[%q]: %v", f.Step, f.Kind, f.Field, f.Err)
	}
	return fmt.Sprintf("transforms[%d].%s: %v", f.Step, f.Kind, f.Err)
}

// Runner applies a Program to batches of records, reusing its buffers from one batch to the next. It is
// not safe for concurrent use.
type Runner struct {
	p      *Program
	vm     vm.VM
	env    map[string]any
	out    []record.Record
	failed []Failure
	// buf holds the payloads and keys the steps re-encoded during the current Run. Appending to it may move
	// it to a new array; records already pointing into the old one keep it alive and unchanged.
	buf []byte
	// changes records what the current record's steps changed in its payload, and where (codec.Changes).
	changes codec.Changes
	// counts, when not nil, counts what each step did (Sample).
	counts []StepCount
}

// NewRunner returns a Runner for p.
func (p *Program) NewRunner() *Runner {
	r := &Runner{p: p, env: make(map[string]any, len(envShape))}
	r.vm.MemoryBudget = MemoryBudget
	return r
}

// eval runs an expression on the record in env.
func (r *Runner) eval(p *program) (any, error) {
	if p.constant {
		return p.value, nil
	}
	v, err := r.vm.Run(p.vm, r.env)
	if err != nil {
		return nil, p.runErr(err)
	}
	return v, nil
}

// runErr turns an evaluation error into one line that names the field it is about (when the failing
// argument is a field) and the column inside the expression.
func (p *program) runErr(err error) error {
	var fe *file.Error
	if !errors.As(err, &fe) {
		return err
	}
	msg := cleanMessage(fe.Message)
	var ae *argError
	if errors.As(err, &ae) {
		msg = p.describe(fe.From, ae)
	} else if path, ok := p.members[fe.From]; ok && (strings.Contains(msg, "cannot fetch") || strings.Contains(msg, "int(string)")) {
		// expr cannot fetch a field from a string, a number, …
		base, field := path, ""
		if i := strings.LastIndexByte(path, '.'); i > 0 {
			base, field = path[:i], path[i+1:]
		}
		msg = fmt.Sprintf("%s: %s is not an object, so it has no field %s (%s)", path, base, field, msg)
	}
	if fe.Column >= 0 && fe.Line > 0 {
		return fmt.Errorf("%s (column %d of the expression)", msg, fe.Column+1)
	}
	return errors.New(msg)
}

// describe words an argument error with the call it happened in: "upper(): fullDocument.customer is int 5,
// want a string".
func (p *program) describe(at int, ae *argError) string {
	name, what := strings.TrimPrefix(ae.fn, "__"), fmt.Sprintf("argument %d", ae.arg+1)
	for _, c := range p.calls[at] {
		if c.fn != ae.fn {
			continue
		}
		name = c.name
		if ae.arg < len(c.args) && c.args[ae.arg] != "" {
			what = c.args[ae.arg]
		}
		break
	}
	switch {
	case ae.fn == "__get":
		return fmt.Sprintf("%s %s", what, ae.msg)
	case strings.HasPrefix(ae.fn, "__") && ae.fn != "__array" && ae.fn != "__sortBy":
		if name == "a condition" {
			return fmt.Sprintf("a condition must be true or false (or nil): %s %s", what, ae.msg)
		}
		return fmt.Sprintf("operator %s: %s %s", name, what, ae.msg)
	}
	return fmt.Sprintf("%s(): %s %s", name, what, ae.msg)
}

// errPayloadRaw is returned when a step needs fields of a payload that is not structured.
var errPayloadRaw = errors.New("the payload is raw bytes, not a JSON or BSON document; its fields cannot be read or changed")

// Run applies the steps, in order, to each record of recs. It returns the records that passed every filter,
// as changed by the steps, in input order, and the records a step failed on. Records that a filter dropped
// are in neither. Both slices, and the payloads and keys the steps produced, are valid until the next Run;
// recs itself is not modified.
func (r *Runner) Run(recs []record.Record) (out []record.Record, failed []Failure) {
	r.out, r.failed, r.buf = r.out[:0], r.failed[:0], r.buf[:0]
	for i := range recs {
		rec, keep, f := r.one(&recs[i])
		switch {
		case f != nil:
			f.Record = recs[i]
			f.Err = clipError(f.Err)
			r.failed = append(r.failed, *f)
		case keep:
			r.out = append(r.out, rec)
		}
	}
	clear(r.env)
	return r.out, r.failed
}

// state is one record on its way through the steps.
type state struct {
	rec      record.Record
	doc      map[string]any // decoded payload; nil when not decoded or empty
	dirty    bool           // doc changed: encode it at the end
	metaMap  map[string]string
	metaOwn  bool // rec.Meta is a copy the steps may change
	encoding record.Encoding
}

func (r *Runner) one(in *record.Record) (record.Record, bool, *Failure) {
	p := r.p
	s, err := r.enter(in)
	if err != nil {
		return s.rec, false, &Failure{Step: -1, Err: err}
	}
	for i := range p.steps {
		st := &p.steps[i]
		fail := func(field string, err error) (record.Record, bool, *Failure) {
			return s.rec, false, &Failure{Step: st.index, Kind: st.kind, Field: field, Err: err}
		}
		if r.counts != nil {
			r.counts[i].Reached++
		}
		if st.when != nil {
			v, err := r.eval(st.when)
			if err != nil {
				return s.rec, false, &Failure{Step: st.index, Kind: st.kind, When: true, Err: err}
			}
			run, err := condition(v)
			if err != nil {
				return s.rec, false, &Failure{Step: st.index, Kind: st.kind, When: true, Err: err}
			}
			if !run {
				continue
			}
		}
		if r.counts != nil {
			r.counts[i].Ran++
		}
		switch st.kind {
		case Filter:
			v, err := r.eval(st.prog)
			if err != nil {
				return fail("", err)
			}
			keep, err := condition(v)
			if err != nil {
				return fail("", err)
			}
			if !keep {
				return s.rec, false, nil
			}
			if r.counts != nil {
				r.counts[i].Kept++
			}
		case Route:
			v, err := r.eval(st.prog)
			if err != nil {
				return fail("", err)
			}
			name, ok := v.(string)
			if !ok || name == "" {
				return fail("", fmt.Errorf("the route is %s; it must be a non-empty string", show(v)))
			}
			r.setMeta(&s, record.MetaRoute, name)
		case Key:
			v, err := r.eval(st.prog)
			if err != nil {
				return fail("", err)
			}
			if err := r.setKey(&s, v); err != nil {
				return fail("", err)
			}
		case Set:
			for _, f := range st.fields {
				v, err := r.eval(f.prog)
				if err != nil {
					return fail(f.path.text, err)
				}
				if v == nil && f.optional {
					continue
				}
				if err := r.write(&s, f.path, v); err != nil {
					return fail(f.path.text, err)
				}
			}
		case Drop:
			for _, f := range st.fields {
				if err := r.drop(&s, f.path); err != nil {
					return fail(f.path.text, err)
				}
			}
		case Rename:
			for _, f := range st.fields {
				v, ok, err := r.read(&s, f.path)
				if err != nil {
					return fail(f.path.text, err)
				}
				if !ok {
					continue // nothing to move
				}
				if err := r.drop(&s, f.path); err != nil {
					return fail(f.path.text, err)
				}
				if err := r.write(&s, f.to, v); err != nil {
					return fail(f.path.text, err)
				}
			}
		}
	}
	if s.dirty {
		start := len(r.buf)
		var err error
		switch {
		case s.encoding == record.EncodingBSON:
			r.buf, err = codec.EncodeBSON(r.buf, s.doc)
		case in.Encoding == record.EncodingJSON:
			r.buf, err = codec.AppendPatched(r.buf, in.Payload, s.doc, p.tree, &r.changes)
		default: // a raw payload (empty) the steps gave fields
			r.buf, err = codec.AppendPatched(r.buf, nil, s.doc, p.tree, &r.changes)
		}
		if err != nil {
			r.buf = r.buf[:start]
			return s.rec, false, &Failure{Step: -1, Err: fmt.Errorf("encoding the payload: %w", err)}
		}
		s.rec.Payload = r.buf[start:len(r.buf):len(r.buf)]
		s.rec.Encoding = s.encoding
	}
	return s.rec, true, nil
}

// enter decodes in's payload as far as the program reads it and sets the environment its expressions
// see.
func (r *Runner) enter(in *record.Record) (state, error) {
	p := r.p
	s := state{rec: *in, encoding: in.Encoding}
	r.changes.Reset(p.tree)
	if p.decode && len(in.Payload) > 0 {
		var err error
		switch in.Encoding {
		case record.EncodingJSON:
			s.doc, err = codec.DecodeSparse(in.Payload, p.tree, &r.changes)
		case record.EncodingBSON:
			s.doc, err = codec.DecodeBSON(in.Payload)
		}
		if err != nil {
			return s, fmt.Errorf("decoding the %s payload: %w", in.Encoding, err)
		}
	}
	env := r.env
	env[docName] = s.doc
	if p.payload {
		env["payload"] = s.doc
	}
	if p.key {
		env["key"] = string(in.Key)
	}
	if p.op {
		env["op"] = in.Op.String()
	}
	if p.meta {
		s.metaMap = make(map[string]string, len(in.Meta))
		for _, f := range in.Meta {
			s.metaMap[f.Key] = f.Value
		}
		env["meta"] = s.metaMap
	}
	return s, nil
}

// condition is the outcome of a filter or a when: nil (a missing field) is false; a value that is not a
// bool is an error.
func condition(v any) (bool, error) {
	switch b := v.(type) {
	case bool:
		return b, nil
	case nil:
		return false, nil
	}
	return false, fmt.Errorf("the condition gave %s, not true or false (compare it: x == 1, x != nil)", show(v))
}

// read returns the value at t.
func (r *Runner) read(s *state, t target) (any, bool, error) {
	switch t.area {
	case areaKey:
		return string(s.rec.Key), len(s.rec.Key) > 0, nil
	case areaMeta:
		v, ok := s.rec.Meta.Get(t.path[0])
		return v, ok, nil
	}
	if err := payloadUsable(s); err != nil {
		return nil, false, err
	}
	v, ok := getPath(s.doc, t.path)
	return v, ok, nil
}

// write sets the value at t, converting it to text for meta and to bytes for the key.
func (r *Runner) write(s *state, t target, v any) error {
	switch t.area {
	case areaKey:
		return r.setKey(s, v)
	case areaMeta:
		text, err := asText(v)
		if err != nil {
			return err
		}
		r.setMeta(s, t.path[0], text)
		return nil
	}
	if err := payloadUsable(s); err != nil {
		return err
	}
	if s.doc == nil {
		s.doc = map[string]any{}
		r.env[docName] = s.doc
		if r.p.payload {
			r.env["payload"] = s.doc
		}
		if s.encoding == record.EncodingRaw {
			s.encoding = record.EncodingJSON
		}
	}
	if err := setPath(s.doc, t.path, detach(v)); err != nil {
		return err
	}
	if t.node != nil {
		r.changes.Mark(t.node)
	}
	s.dirty = true
	return nil
}

func (r *Runner) drop(s *state, t target) error {
	switch t.area {
	case areaKey:
		s.rec.Key = nil
		if r.p.key {
			r.env["key"] = ""
		}
	case areaMeta:
		if _, ok := s.rec.Meta.Get(t.path[0]); ok {
			r.ownMeta(s)
			s.rec.Meta = s.rec.Meta.Delete(t.path[0])
			if s.metaMap != nil {
				delete(s.metaMap, t.path[0])
			}
		}
	default:
		if err := payloadUsable(s); err != nil {
			return err
		}
		if delPath(s.doc, t.path) {
			s.dirty = true
			if t.node != nil {
				r.changes.Mark(t.node)
			}
		}
	}
	return nil
}

// payloadUsable reports an error when the record's payload has no fields to work on.
func payloadUsable(s *state) error {
	if s.doc == nil && len(s.rec.Payload) > 0 && s.encoding == record.EncodingRaw {
		return errPayloadRaw
	}
	return nil
}

func (r *Runner) ownMeta(s *state) {
	if !s.metaOwn {
		s.rec.Meta = slices.Clone(s.rec.Meta)
		s.metaOwn = true
	}
}

func (r *Runner) setMeta(s *state, key, value string) {
	r.ownMeta(s)
	s.rec.Meta = s.rec.Meta.Set(key, value)
	if s.metaMap != nil {
		s.metaMap[key] = value
	}
}

func (r *Runner) setKey(s *state, v any) error {
	start := len(r.buf)
	switch k := v.(type) {
	case string:
		r.buf = append(r.buf, k...)
	case []byte:
		r.buf = append(r.buf, k...)
	case int:
		r.buf = strconv.AppendInt(r.buf, int64(k), 10)
	case float64:
		r.buf = strconv.AppendFloat(r.buf, k, 'g', -1, 64)
	case codec.ObjectID, codec.Decimal, codec.Binary:
		r.buf = fmt.Append(r.buf, k)
	case nil:
		return errors.New("the key is nil (a missing field?)")
	default:
		return fmt.Errorf("the key is %s; it must be a string, bytes, a number or an ObjectID (json(x) turns anything into a string)", show(v))
	}
	s.rec.Key = r.buf[start:len(r.buf):len(r.buf)]
	if r.p.key {
		r.env["key"] = string(s.rec.Key)
	}
	return nil
}

// asText converts a value for metadata (see toText).
func asText(v any) (string, error) {
	if v == nil {
		return "", errors.New("the value is nil (a missing field?); metadata values are strings (write the path with a trailing ? to skip nil values)")
	}
	return toText(v)
}

// detach copies the objects and arrays in v, so that a set value shares nothing with the document (or
// the metadata) it came from: `set: {copy: 'fullDocument'}` followed by a drop of fullDocument.x leaves
// copy.x alone, and `set: {self: 'payload'}` cannot make the document contain itself.
func detach(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = detach(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = detach(e)
		}
		return l
	case map[string]string:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = e
		}
		return m
	}
	return v
}

func getPath(doc map[string]any, path []string) (any, bool) {
	var cur any = doc
	for _, seg := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[seg]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// setPath sets path in doc, creating missing objects on the way.
func setPath(doc map[string]any, path []string, v any) error {
	m := doc
	for i, seg := range path[:len(path)-1] {
		next := m[seg]
		switch n := next.(type) {
		case map[string]any:
			m = n
		case nil: // missing or null: make the object
			c := map[string]any{}
			m[seg] = c
			m = c
		default:
			return fmt.Errorf("%s is %s, not an object", joinPath(path[:i+1]), typeName(next))
		}
	}
	m[path[len(path)-1]] = v
	return nil
}

func delPath(doc map[string]any, path []string) bool {
	m := doc
	for _, seg := range path[:len(path)-1] {
		n, ok := m[seg].(map[string]any)
		if !ok {
			return false
		}
		m = n
	}
	last := path[len(path)-1]
	if _, ok := m[last]; !ok {
		return false
	}
	delete(m, last)
	return true
}

func joinPath(path []string) string {
	s := ""
	for i, p := range path {
		if i > 0 {
			s += "."
		}
		s += p
	}
	return s
}
