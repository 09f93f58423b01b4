package config

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/sdk"
)

// settings checks a stage's settings (n, nil when absent) against the plugin's stage spec, then the
// stage's rules, and fills s.Settings and s.printed; at is where missing settings are reported, pluginAt
// where the plugin is named.
func (v *validator) settings(s *Stage, st *sdk.Stage, n *node, at, pluginAt Pos) {
	where := s.label()
	errs := len(v.errs)
	names := make([]string, len(st.Settings))
	for i, d := range st.Settings {
		names[i] = d.Name
	}
	typos := map[string]bool{}
	if n != nil {
		typos = v.unknownKeys(n, "in settings of "+where, names)
	}
	for i := range st.Settings {
		d := &st.Settings[i]
		var c *node
		if n != nil {
			c = n.fields[d.Name]
		}
		if c == nil {
			switch {
			case d.Required && typos[d.Name]:
			case d.Required:
				v.errorf(at, "missing required setting %q of %s%s", d.Name, where, docHint(d))
			case d.Default != "":
				val, err := fromText(d.Type, d.Default)
				if err == nil {
					err = checkEnum(d, val)
				}
				if err == nil {
					err = boundsError(d, val)
				}
				if err != nil {
					v.errorf(at, "%s declares an invalid default for setting %q: %v", where, d.Name, err)
					continue
				}
				s.Settings[d.Name], s.printed[d.Name] = val, val
				if d.Secret {
					s.printed[d.Name] = redacted
				}
			}
			continue
		}
		val, shown, ok := v.setting(d, c, fmt.Sprintf("setting %q of %s", d.Name, where), where)
		if !ok {
			continue
		}
		if d.Secret {
			shown = redacted
			v.secrets = appendStrings(v.secrets, val)
		}
		s.Settings[d.Name], s.printed[d.Name] = val, shown
	}
	if len(v.errs) == errs {
		// Rules see complete, valid settings only: a problem above would make them report nonsense.
		v.rules(s, st, n, pluginAt)
	}
}

func docHint(d *sdk.Setting) string {
	if d.Doc == "" {
		return ""
	}
	return " (" + strings.TrimSuffix(strings.TrimSpace(d.Doc), ".") + ")"
}

// setting checks one value against its declaration; what names it in messages, where names the plugin
// and stage. It returns the value, the value Print shows, and whether it is valid.
func (v *validator) setting(d *sdk.Setting, c *node, what, where string) (val, shown any, ok bool) {
	if s, isString := c.scalar.(string); isString && c.kind == kindScalar {
		r := v.x.expand(s, d.Secret, MaxValueBytes)
		for _, p := range r.problems {
			v.errorf(c.pos, "%s: %s", what, p)
		}
		switch {
		case len(r.problems) > 0:
			return nil, nil, false
		case r.over:
			v.errorf(c.pos, "%s: the value is longer than %s, the limit for a setting value", what, sizeText(MaxValueBytes))
			return nil, nil, false
		case r.refs:
			val, shown, ok = v.referenced(d, c.pos, s, r.out, what, where)
			if ok && (d.Type == sdk.TypeString || d.Type == sdk.TypeList || d.Type == sdk.TypeObject) {
				// A number, a boolean or a duration is no credential, and hiding "9092" or "true" from
				// every line would hide ports and counts.
				v.secrets = append(v.secrets, r.values...)
			}
			return val, shown, ok
		}
		// No reference: an ordinary string, its escapes ($${, \$NAME) undone.
		c = &node{kind: kindScalar, pos: c.pos, key: c.key, scalar: r.out}
	}
	if isNull(c) {
		v.errorf(c.pos, "%s: want %s, got null; remove the key to use the default", what, d.Type)
		return nil, nil, false
	}
	switch d.Type {
	case sdk.TypeString:
		s, isString := c.scalar.(string)
		if c.kind != kindScalar || !isString {
			v.errorf(c.pos, "%s: want string, got %s", what, describe(c, d.Secret))
			return nil, nil, false
		}
		if err := checkEnum(d, s); err != nil {
			if d.Secret {
				err = enumError(d, "the value")
			}
			v.errorf(c.pos, "%s: %v", what, err)
			return nil, nil, false
		}
		return s, s, true
	case sdk.TypeInt:
		i, isInt := asInt(c)
		if !isInt {
			v.errorf(c.pos, "%s: want int, got %s", what, describe(c, d.Secret))
			return nil, nil, false
		}
		return v.bounded(d, c.pos, i, what, where)
	case sdk.TypeFloat:
		var f float64
		switch x := c.scalar.(type) {
		case int64:
			f = float64(x)
		case float64:
			f = x
		default:
			v.errorf(c.pos, "%s: want float, got %s", what, describe(c, d.Secret))
			return nil, nil, false
		}
		return v.bounded(d, c.pos, f, what, where)
	case sdk.TypeBool:
		b, isBool := c.scalar.(bool)
		if c.kind != kindScalar || !isBool {
			v.errorf(c.pos, "%s: want bool (true or false), got %s", what, describe(c, d.Secret))
			return nil, nil, false
		}
		return b, b, true
	case sdk.TypeDuration:
		s, isString := c.scalar.(string)
		if c.kind != kindScalar || !isString {
			msg := fmt.Sprintf("%s: want a duration string like \"5s\", got %s", what, describe(c, d.Secret))
			if i, isInt := c.scalar.(int64); isInt && c.kind == kindScalar && !d.Secret {
				msg += fmt.Sprintf(" (write \"%ds\" for %d seconds)", i, i)
			}
			v.errorf(c.pos, "%s", msg)
			return nil, nil, false
		}
		dur, err := parseDuration(s)
		if err != nil {
			shown := quote(s)
			if d.Secret {
				shown = "the value"
			}
			v.errorf(c.pos, "%s: %s %v", what, shown, err)
			return nil, nil, false
		}
		return v.bounded(d, c.pos, dur, what, where)
	case sdk.TypeList:
		if c.kind != kindList {
			v.errorf(c.pos, "%s: want list, got %s", what, describe(c, d.Secret))
			return nil, nil, false
		}
		return v.expandAll(c, what, d.Secret)
	case sdk.TypeObject:
		if c.kind != kindMap {
			v.errorf(c.pos, "%s: want object, got %s", what, describe(c, d.Secret))
			return nil, nil, false
		}
		return v.expandAll(c, what, d.Secret)
	}
	v.errorf(c.pos, "%s: the plugin declares unknown type %q", what, d.Type)
	return nil, nil, false
}

// bounded checks val, written in the file, against the setting's bounds (and a float's finiteness).
func (v *validator) bounded(d *sdk.Setting, at Pos, val any, what, where string) (any, any, bool) {
	want, err := bounds(d, val)
	switch {
	case err != nil:
		v.errorf(at, "%s declares an invalid bound for setting %q: %v; this is the plugin's fault, not the file's", where, d.Name, err)
		return nil, nil, false
	case want != "" && d.Secret:
		v.errorf(at, "%s: the value is out of range: want %s", what, want)
		return nil, nil, false
	case want != "":
		v.errorf(at, "%s: want %s, got %s", what, want, valueText(val))
		return nil, nil, false
	}
	return val, val, true
}

// boundsError is bounds as an error quoting val, for defaults declared by plugins.
func boundsError(d *sdk.Setting, val any) error {
	want, err := bounds(d, val)
	switch {
	case err != nil:
		return fmt.Errorf("its bounds are invalid: %w", err)
	case want != "":
		return fmt.Errorf("%s is out of range: want %s", valueText(val), want)
	}
	return nil
}

// referenced parses the expansion out of value s, which held references, per the setting's type. Neither
// out nor the values the references stand for appear in messages.
func (v *validator) referenced(d *sdk.Setting, at Pos, s, out, what, where string) (val, shown any, ok bool) {
	ref := truncate(s, 60)
	fail := func(format string, args ...any) (any, any, bool) {
		v.errorf(at, "%s: the value of %s %s", what, ref, fmt.Sprintf(format, args...))
		return nil, nil, false
	}
	val, err := fromText(d.Type, out)
	if err != nil {
		return fail("is not a valid %s", d.Type)
	}
	if checkEnum(d, val) != nil {
		v.errorf(at, "%s: %v", what, enumError(d, "the value of "+ref))
		return nil, nil, false
	}
	want, err := bounds(d, val)
	switch {
	case err != nil:
		v.errorf(at, "%s declares an invalid bound for setting %q: %v; this is the plugin's fault, not the file's", where, d.Name, err)
		return nil, nil, false
	case want != "":
		return fail("is out of range: want %s", want)
	}
	if d.Type == sdk.TypeList || d.Type == sdk.TypeObject {
		if jsonSize(val) > MaxValueBytes {
			return fail("is larger than %s (as JSON), the limit for a setting value", sizeText(MaxValueBytes))
		}
		if hasNonFinite(val) {
			return fail("holds NaN or an infinity, which cannot be sent to a plugin (JSON has no such numbers)")
		}
	}
	return val, redacted, true
}

// expandAll converts a list or object to JSON-ready values, expanding references in its strings; shown
// has each string that held a reference redacted. In a secret setting, messages do not quote its text.
// The whole value must fit in MaxValueBytes (as compact JSON) and hold finite numbers only (JSON has no
// NaN or infinity).
func (v *validator) expandAll(n *node, what string, secret bool) (val, shown any, ok bool) {
	ok = true
	size := 0
	var walk func(n *node) (any, any)
	walk = func(n *node) (any, any) {
		if size > MaxValueBytes {
			return nil, nil // reported once, below; stop expanding
		}
		switch n.kind {
		case kindMap:
			m, p := make(map[string]any, len(n.fields)), make(map[string]any, len(n.fields))
			size += 2 + max(len(n.keys)-1, 0)
			for _, k := range n.keys {
				size += len(k) + 3
				m[k], p[k] = walk(n.fields[k])
			}
			return m, p
		case kindList:
			l, p := make([]any, len(n.items)), make([]any, len(n.items))
			size += 2 + max(len(n.items)-1, 0)
			for i, c := range n.items {
				l[i], p[i] = walk(c)
			}
			return l, p
		}
		if f, isFloat := n.scalar.(float64); isFloat && (math.IsNaN(f) || math.IsInf(f, 0)) {
			if secret {
				v.errorf(n.pos, "%s: the value holds NaN or an infinity, which cannot be sent to a plugin (JSON has no such numbers)", what)
			} else {
				v.errorf(n.pos, "%s: %s cannot be sent to a plugin (JSON has no NaN or infinity): want a finite number", what, valueText(f))
			}
			ok = false
		}
		s, isString := n.scalar.(string)
		if !isString {
			size += jsonSize(n.scalar)
			return n.scalar, n.scalar
		}
		r := v.x.expand(s, secret, MaxValueBytes-size)
		for _, p := range r.problems {
			v.errorf(n.pos, "%s: %s", what, p)
			ok = false
		}
		size += len(r.out) + 2
		if r.over {
			size = MaxValueBytes + 1
		}
		if r.refs {
			v.secrets = append(v.secrets, r.values...)
			return r.out, redacted
		}
		return r.out, r.out
	}
	val, shown = walk(n)
	if size > MaxValueBytes {
		v.errorf(n.pos, "%s: the value is larger than %s (as JSON), the limit for a setting value", what, sizeText(MaxValueBytes))
		ok = false
	}
	return val, shown, ok
}

// appendStrings appends the strings in v (a string, or strings at any depth of a list or object) to out.
func appendStrings(out []string, v any) []string {
	switch x := v.(type) {
	case string:
		out = append(out, x)
	case []any:
		for _, e := range x {
			out = appendStrings(out, e)
		}
	case map[string]any:
		for _, e := range x {
			out = appendStrings(out, e)
		}
	}
	return out
}

// jsonSize is the size of v as compact JSON, strings counted without escapes.
func jsonSize(v any) int {
	switch x := v.(type) {
	case nil:
		return 4
	case bool:
		if x {
			return 4
		}
		return 5
	case string:
		return len(x) + 2
	case int64:
		return len(strconv.FormatInt(x, 10))
	case float64:
		return len(strconv.FormatFloat(x, 'g', -1, 64))
	case []any:
		n := 2 + max(len(x)-1, 0)
		for _, e := range x {
			n += jsonSize(e)
		}
		return n
	case map[string]any:
		n := 2 + max(len(x)-1, 0)
		for k, e := range x {
			n += len(k) + 3 + jsonSize(e)
		}
		return n
	}
	return len(fmt.Sprint(v))
}

// hasNonFinite reports whether v (a JSON-ready value) holds a NaN or an infinity.
func hasNonFinite(v any) bool {
	switch x := v.(type) {
	case float64:
		return math.IsNaN(x) || math.IsInf(x, 0)
	case []any:
		return slices.ContainsFunc(x, hasNonFinite)
	case map[string]any:
		for _, e := range x {
			if hasNonFinite(e) {
				return true
			}
		}
	}
	return false
}

// bounds checks val (int64, float64, or a normalised duration string) against d's Min and Max and, for
// a float, that it is finite. It returns what the value should be ("a number >= 0") when it is not, and
// an error when a bound itself is malformed (the plugin's fault).
func bounds(d *sdk.Setting, val any) (want string, err error) {
	var (
		kind      string
		below     func(bound string) (bool, error) // val < bound
		above     func(bound string) (bool, error) // val > bound
		nonFinite bool
	)
	switch x := val.(type) {
	case int64:
		kind = "an int"
		parse := func(b string) (int64, error) { return strconv.ParseInt(b, 10, 64) }
		below = func(b string) (bool, error) { n, err := parse(b); return x < n, err }
		above = func(b string) (bool, error) { n, err := parse(b); return x > n, err }
	case float64:
		kind = "a number"
		nonFinite = math.IsNaN(x) || math.IsInf(x, 0)
		parse := func(b string) (float64, error) { return strconv.ParseFloat(b, 64) }
		below = func(b string) (bool, error) { f, err := parse(b); return x < f, err }
		above = func(b string) (bool, error) { f, err := parse(b); return x > f, err }
	case string:
		if d.Type != sdk.TypeDuration {
			return "", nil
		}
		kind = "a duration"
		dur, err := time.ParseDuration(x)
		if err != nil {
			return "", nil // reported as a malformed duration
		}
		below = func(b string) (bool, error) { e, err := time.ParseDuration(b); return dur < e, err }
		above = func(b string) (bool, error) { e, err := time.ParseDuration(b); return dur > e, err }
	default:
		return "", nil
	}
	out := false
	if d.Min != "" {
		lo, err := below(d.Min)
		if err != nil {
			return "", fmt.Errorf("min %q is not %s", d.Min, kind)
		}
		out = out || lo
	}
	if d.Max != "" {
		hi, err := above(d.Max)
		if err != nil {
			return "", fmt.Errorf("max %q is not %s", d.Max, kind)
		}
		out = out || hi
	}
	if !out && !nonFinite {
		return "", nil
	}
	if nonFinite {
		kind = "a finite number"
	}
	switch {
	case d.Min != "" && d.Max != "":
		return fmt.Sprintf("%s from %s to %s", kind, d.Min, d.Max), nil
	case d.Min != "":
		return fmt.Sprintf("%s >= %s", kind, d.Min), nil
	case d.Max != "":
		return fmt.Sprintf("%s <= %s", kind, d.Max), nil
	}
	return kind, nil
}

// valueText writes a number or a normalised duration for a message.
func valueText(val any) string {
	switch x := val.(type) {
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case string:
		return x // a normalised duration
	}
	return fmt.Sprint(val)
}

// fromText parses a value written as text (a default from a spec, or the expansion of a reference) as
// type t.
func fromText(t sdk.Type, s string) (any, error) {
	switch t {
	case sdk.TypeString:
		return s, nil
	case sdk.TypeInt:
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not an int", truncate(s, 40))
		}
		return i, nil
	case sdk.TypeFloat:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a float", truncate(s, 40))
		}
		return f, nil
	case sdk.TypeBool:
		switch s {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return nil, fmt.Errorf("%q is not a bool: want true or false", truncate(s, 40))
	case sdk.TypeDuration:
		d, err := parseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("%q %v", truncate(s, 40), err)
		}
		return d, nil
	case sdk.TypeList, sdk.TypeObject:
		var x any
		if err := yaml.Unmarshal([]byte(s), &x); err != nil {
			return nil, fmt.Errorf("%q is not a %s", truncate(s, 40), t)
		}
		n := (&builder{}).build(x, "", Pos{})
		if t == sdk.TypeList && n.kind != kindList || t == sdk.TypeObject && n.kind != kindMap {
			return nil, fmt.Errorf("%q is not a %s", truncate(s, 40), t)
		}
		return plain(n), nil
	}
	return nil, fmt.Errorf("unknown type %q", t)
}

// parseDuration parses a Go duration string and returns it normalised ("90s" → "1m30s").
func parseDuration(s string) (string, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return "", errors.New(`is not a duration: want a number with a unit (ns, us, ms, s, m, h), like "500ms", "5s" or "1m30s"`)
	}
	return d.String(), nil
}

// checkEnum checks val against d.Enum, when d declares one.
func checkEnum(d *sdk.Setting, val any) error {
	if len(d.Enum) == 0 {
		return nil
	}
	if s, ok := val.(string); ok {
		for _, e := range d.Enum {
			if s == e {
				return nil
			}
		}
		return enumError(d, strconv.Quote(truncate(s, 40)))
	}
	return nil
}

func enumError(d *sdk.Setting, what string) error {
	allowed := make([]string, len(d.Enum))
	for i, e := range d.Enum {
		allowed[i] = strconv.Quote(e)
	}
	return fmt.Errorf("%s is not allowed; want one of %s", what, strings.Join(allowed, ", "))
}
