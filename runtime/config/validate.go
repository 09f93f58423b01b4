package config

import (
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/sluicehq/sluice/sdk"
)

// The keys each level of a connector file may hold, in the order they are documented.
var (
	topKeys      = []string{"version", "fail_fast", "data_dir", "cluster", "alerts", "pipelines", "tests"}
	pipelineKeys = []string{"id", "source", "transforms", "buffer", "sink_transforms", "sink", "on_error", "dlq",
		"batch_max_records", "batch_max_bytes", "max_in_flight_bytes", "retry", "open_timeout", "stall_timeout",
		"verify", "ordered", "lanes"}
	stageKeys = []string{"plugin", "sha256", "settings", "in_process"}
)

var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// redacted replaces secrets and referenced values in Print's output.
const redacted = "<redacted>"

// parse validates a connector file's bytes; path is used for positions, the format and references.
func (l *Loader) parse(path string, data []byte) (*File, error) {
	root, errs := document(path, data)
	if errs != nil {
		return nil, errs
	}
	v := &validator{
		Loader: l,
		path:   path,
		x:      expander{dir: filepath.Dir(path), lookupEnv: l.LookupEnv},
		lines:  strings.Split(string(data), "\n"),
	}
	f := v.file(root)
	if len(v.errs) > 0 {
		v.errs.sort()
		return nil, v.errs
	}
	f.secrets = v.secrets
	return f, nil
}

// validator checks one document and collects every problem.
type validator struct {
	*Loader
	path string
	x    expander
	errs Errors
	// lines are the file's lines, to point inside expressions.
	lines []string
	// secrets are the values never to be printed (File.Secrets).
	secrets []string
}

func (v *validator) errorf(pos Pos, format string, args ...any) {
	v.errs = append(v.errs, &Error{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

// unknownKeys reports each key of m not in known; where names m in the message ("in pipeline \"x\"").
// It returns the known keys it suggested, so that a typo is not also reported as a missing key.
func (v *validator) unknownKeys(m *node, where string, known []string) map[string]bool {
	suggested := map[string]bool{}
	for _, k := range m.keys {
		if !slices.Contains(known, k) {
			if s, ok := suggest(k, known); ok {
				suggested[s] = true
			}
			v.errorf(m.fields[k].key, "unknown key %s %s%s", quote(k), where, hint(k, known, "keys"))
		}
	}
	return suggested
}

// hint suggests the known name closest to word, or else lists the known names.
func hint(word string, known []string, what string) string {
	if s, ok := suggest(word, known); ok {
		return fmt.Sprintf(" (did you mean %s?)", quote(s))
	}
	if len(known) == 0 {
		return ""
	}
	names := make([]string, len(known))
	for i, k := range known {
		names[i] = truncate(k, 40)
	}
	return fmt.Sprintf("; known %s: %s", what, strings.Join(names, ", "))
}

// describe names a value's type and, unless secret, the value itself: `string "ten"`, `int 5`.
func describe(n *node, secret bool) string {
	switch n.kind {
	case kindMap:
		return "object"
	case kindList:
		return "list"
	}
	var t, val string
	switch x := n.scalar.(type) {
	case nil:
		return "null"
	case string:
		t, val = "string", strconv.Quote(truncate(x, 40))
	case int64:
		t, val = "int", strconv.FormatInt(x, 10)
	case float64:
		t, val = "float", strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		t, val = "bool", strconv.FormatBool(x)
	default:
		t, val = fmt.Sprintf("%T", x), fmt.Sprint(x)
	}
	if secret {
		return t
	}
	return t + " " + val
}

// quote quotes a value from the file for a message, cut to 40 characters: messages never echo a long
// value.
func quote(s string) string { return strconv.Quote(truncate(s, 40)) }

// truncate cuts s to n characters, marking the cut with "…".
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

// asInt returns n as an int64: an int, or a float holding a whole number.
func asInt(n *node) (int64, bool) {
	if n.kind != kindScalar {
		return 0, false
	}
	switch x := n.scalar.(type) {
	case int64:
		return x, true
	case float64:
		if x == math.Trunc(x) && x >= math.MinInt64 && x < math.MaxInt64 {
			return int64(x), true
		}
	}
	return 0, false
}

// intKey reads a fixed int key; name is how messages call it.
func (v *validator) intKey(n *node, name string) (int64, bool) {
	i, ok := asInt(n)
	if !ok {
		v.errorf(n.pos, "%s: want int, got %s", name, describe(n, false))
	}
	return i, ok
}

func (v *validator) boolKey(n *node, name string) bool {
	b, ok := n.scalar.(bool)
	if n.kind != kindScalar || !ok {
		v.errorf(n.pos, "%s: want bool (true or false), got %s", name, describe(n, false))
	}
	return b
}

func (v *validator) stringKey(n *node, name string) (string, bool) {
	s, ok := n.scalar.(string)
	if n.kind != kindScalar || !ok {
		v.errorf(n.pos, "%s: want string, got %s", name, describe(n, false))
	}
	return s, ok
}

func isNull(n *node) bool { return n.kind == kindScalar && n.scalar == nil }

// raws keeps a list's items unparsed; a null list is empty.
func (v *validator) raws(n *node, name string) []Raw {
	if n == nil || isNull(n) {
		return nil
	}
	if n.kind != kindList {
		v.errorf(n.pos, "%s: want a list, got %s", name, describe(n, false))
		return nil
	}
	rs := make([]Raw, len(n.items))
	for i, it := range n.items {
		rs[i] = Raw{Pos: it.pos, Value: plain(it)}
	}
	return rs
}

// plain converts a node to JSON-ready values.
func plain(n *node) any {
	switch n.kind {
	case kindMap:
		m := make(map[string]any, len(n.fields))
		for k, c := range n.fields {
			m[k] = plain(c)
		}
		return m
	case kindList:
		l := make([]any, len(n.items))
		for i, c := range n.items {
			l[i] = plain(c)
		}
		return l
	}
	return n.scalar
}

func (v *validator) file(root *node) *File {
	f := &File{Path: v.path, Version: 1}
	top := Pos{File: v.path, Line: 1, Col: 1}
	typos := v.unknownKeys(root, "at top level", topKeys)

	switch n := root.fields["version"]; {
	case n == nil:
		if !typos["version"] {
			v.errorf(top, `missing required key "version": add version: 1`)
		}
	default:
		if i, ok := v.intKey(n, "version"); ok && i != 1 {
			v.errorf(n.pos, "version %d is not supported: want 1", i)
		}
	}
	if n := root.fields["fail_fast"]; n != nil {
		f.FailFast = v.boolKey(n, "fail_fast")
	}
	if n := root.fields["data_dir"]; n != nil {
		if s, ok := v.stringKey(n, "data_dir"); ok {
			f.DataDir = v.dataDir(n.pos, s)
		}
	}
	f.Tests = v.raws(root.fields["tests"], "tests")
	f.Alerts = v.alerts(root.fields["alerts"])
	f.Cluster = v.cluster(root.fields["cluster"])

	switch n := root.fields["pipelines"]; {
	case n == nil:
		if !typos["pipelines"] {
			v.errorf(top, `missing required key "pipelines": add at least one pipeline`)
		}
	case isNull(n) || n.kind == kindList && len(n.items) == 0:
		v.errorf(n.pos, "pipelines is empty: add at least one pipeline")
	case n.kind != kindList:
		v.errorf(n.pos, "pipelines: want a list of pipelines, got %s", describe(n, false))
	default:
		ids := map[string]Pos{}
		for _, it := range n.items {
			if p := v.pipeline(it, ids); p != nil {
				f.Pipelines = append(f.Pipelines, p)
			}
		}
	}
	f.TestCases = v.tests(root.fields["tests"], f.Pipelines)
	return f
}

// dataDir checks data_dir, written s at pos. References are not expanded there, but what looks like one,
// or like a shell variable ($HOME), is an error rather than a directory of that name.
func (v *validator) dataDir(pos Pos, s string) string {
	r := (&expander{keep: true}).expand(s, false, MaxValueBytes)
	for _, p := range r.problems {
		v.errorf(pos, "data_dir: %s", p)
	}
	switch {
	case len(r.problems) > 0:
	case r.refs:
		v.errorf(pos, "data_dir: references (${env:…}, ${file:…}) are not expanded in data_dir: write the path, or pass --data-dir")
	case r.over:
		v.errorf(pos, "data_dir: longer than %s", sizeText(MaxValueBytes))
	default:
		return r.out
	}
	return ""
}

func (v *validator) pipeline(n *node, ids map[string]Pos) *Pipeline {
	if n.kind != kindMap {
		v.errorf(n.pos, "pipeline: want an object with id, source and sink, got %s", describe(n, false))
		return nil
	}
	p := &Pipeline{Pos: n.pos}
	label := "pipeline"
	switch id := n.fields["id"]; {
	case id == nil:
		v.errorf(n.pos, `pipeline has no id: add id: NAME (lower-case letters, digits, '-' and '_')`)
	default:
		s, ok := v.stringKey(id, "id")
		if !ok {
			break
		}
		p.ID, label = s, "pipeline "+quote(s)
		switch first, dup := ids[s]; {
		case !idRE.MatchString(s):
			v.errorf(id.pos, "pipeline id %s is invalid: want 1 to 63 lower-case letters, digits, '-' or '_', starting with a letter or digit", strconv.Quote(truncate(s, 70)))
		case dup:
			v.errorf(id.pos, "duplicate pipeline id %s (first used at line %d); ids must be unique", quote(s), first.Line)
		default:
			ids[s] = id.pos
		}
	}
	typos := v.unknownKeys(n, "in "+label, pipelineKeys)

	p.Source = v.requiredStage(n, sdk.KindSource, label, typos)
	if b := n.fields["buffer"]; b != nil && !isNull(b) {
		p.Buffer = v.stage(b, sdk.KindBuffer)
	}
	p.Sink = v.requiredStage(n, sdk.KindSink, label, typos)
	p.Transforms = v.raws(n.fields["transforms"], "transforms")
	p.SinkTransforms = v.raws(n.fields["sink_transforms"], "sink_transforms")
	p.Steps = v.steps(n.fields["transforms"], "transforms")
	p.SinkSteps = v.steps(n.fields["sink_transforms"], "sink_transforms")
	if p.SinkSteps != nil && p.Buffer == nil {
		v.errorf(n.fields["sink_transforms"].key, "sink_transforms run between the buffer and the sink, and %s has no buffer: move the steps to transforms", label)
	}
	v.onError(n, p)
	v.batching(n, p)
	v.failures(n, p)
	v.verify(n, p)
	v.ordering(n, p, label)
	return p
}

// batching reads the batch and in-flight limits, applying their defaults.
func (v *validator) batching(n *node, p *Pipeline) {
	p.BatchMaxRecords, p.BatchMaxBytes = DefaultBatchMaxRecords, DefaultBatchMaxBytes
	if c := n.fields["batch_max_records"]; c != nil {
		if i, ok := v.intKey(c, "batch_max_records"); ok {
			if i < 1 || i > MaxBatchMaxRecords {
				v.errorf(c.pos, "batch_max_records %d is out of range: want 1 to %d", i, MaxBatchMaxRecords)
			} else {
				p.BatchMaxRecords = int(i)
			}
		}
	}
	bytesOK := true
	if c := n.fields["batch_max_bytes"]; c != nil {
		i, ok := v.intKey(c, "batch_max_bytes")
		switch {
		case !ok:
			bytesOK = false
		case i < MinBatchMaxBytes || i > math.MaxInt32:
			v.errorf(c.pos, "batch_max_bytes %d is out of range: want %d to %d", i, MinBatchMaxBytes, math.MaxInt32)
			bytesOK = false
		default:
			p.BatchMaxBytes = int(i)
		}
	}
	// Without max_in_flight_bytes, the default grows to fit a larger batch.
	p.MaxInFlightBytes = max(DefaultMaxInFlightBytes, p.BatchMaxBytes)
	if c := n.fields["max_in_flight_bytes"]; c != nil {
		if i, ok := v.intKey(c, "max_in_flight_bytes"); ok {
			switch {
			case i < int64(p.BatchMaxBytes) && bytesOK:
				v.errorf(c.pos, "max_in_flight_bytes %d is less than batch_max_bytes (%d): want at least batch_max_bytes", i, p.BatchMaxBytes)
			case i > math.MaxInt:
			default:
				p.MaxInFlightBytes = int(i)
			}
		}
	}
}

// requiredStage reads the source or sink of pipeline n.
// A misspelt key already reported (typos) is not reported again as missing.
func (v *validator) requiredStage(n *node, k sdk.Kind, label string, typos map[string]bool) *Stage {
	c := n.fields[string(k)]
	if c == nil || isNull(c) {
		at := n.pos
		if c != nil {
			at = c.key
		}
		if !typos[string(k)] {
			v.errorf(at, "%s has no %s: add %s: { plugin: NAME }", label, k, k)
		}
		return nil
	}
	return v.stage(c, k)
}

// stage reads one source, buffer or sink.
func (v *validator) stage(n *node, k sdk.Kind) *Stage {
	if n.kind != kindMap {
		v.errorf(n.pos, "%s: want an object with plugin and settings, got %s", k, describe(n, false))
		return nil
	}
	s := &Stage{Kind: k, Pos: n.pos, Settings: map[string]any{}, printed: map[string]any{}}
	typos := v.unknownKeys(n, "in "+string(k), stageKeys)
	if c := n.fields["in_process"]; c != nil {
		s.InProcess = v.boolKey(c, "in_process")
	}
	if c := n.fields["sha256"]; c != nil {
		v.sha256(c, s)
	}
	settings := n.fields["settings"]
	if settings != nil && !isNull(settings) && settings.kind != kindMap {
		v.errorf(settings.pos, "settings: want an object, got %s", describe(settings, false))
		settings = nil
	}

	c := n.fields["plugin"]
	if c == nil {
		if !typos["plugin"] {
			v.errorf(n.pos, "%s has no plugin: add plugin: NAME%s", k, v.known())
		}
		return s
	}
	name, ok := v.stringKey(c, "plugin")
	if !ok {
		return s
	}
	s.Plugin = name
	var spec *sdk.Spec
	if v.Specs != nil {
		spec, ok = v.Specs(name)
	}
	if !ok || spec == nil {
		msg := "unknown plugin " + quote(name)
		if sug, ok := suggest(name, v.Plugins); ok {
			msg += fmt.Sprintf(" (did you mean %q?)", sug)
		}
		msg += v.known()
		if v.UnknownPluginHint != "" {
			msg += "; " + v.UnknownPluginHint
		}
		v.errorf(c.pos, "%s", msg)
		return s
	}
	s.Spec = spec
	st := spec.Stage(k)
	if st == nil {
		kinds := make([]string, 0, 3)
		for _, sk := range spec.Kinds() {
			kinds = append(kinds, string(sk))
		}
		v.errorf(c.pos, "plugin %q cannot be a %s: it serves %s only", name, k, joinAnd(kinds))
		return s
	}
	at := n.pos
	if settings != nil {
		at = settings.key
	}
	v.settings(s, st, settings, at, c.pos)
	return s
}

// known lists the known plugins for a message, or says where to find them when the Loader does not know.
func (v *validator) known() string {
	if len(v.Plugins) == 0 {
		return `; "sluice plugins list" shows the installed plugins`
	}
	ps := slices.Clone(v.Plugins)
	slices.Sort(ps)
	return "; known plugins: " + strings.Join(ps, ", ")
}

func joinAnd(ss []string) string {
	switch len(ss) {
	case 0:
		return "nothing"
	case 1:
		return ss[0]
	}
	return strings.Join(ss[:len(ss)-1], ", ") + " and " + ss[len(ss)-1]
}
