package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

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
				val, err := d.DefaultValue()
				if err != nil {
					if ve := (*sdk.ValueError)(nil); errors.As(err, &ve) && ve.Problem == sdk.BadDeclaration {
						err = fmt.Errorf("its bounds are invalid: %w", err)
					}
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
	// A scalar setting: the SDK's resolver decides, as it does for sdktest and for defaults.
	val, err := d.Value(plain(c))
	var ve *sdk.ValueError
	switch {
	case err == nil:
		return val, val, true
	case errors.As(err, &ve) && ve.Problem == sdk.BadDeclaration:
		v.errorf(c.pos, "%s declares an invalid %s for setting %q: %v; this is the plugin's fault, not the file's", where, declared(d), d.Name, err)
	default:
		v.errorf(c.pos, "%s: %v", what, err)
	}
	return nil, nil, false
}

// declared says what part of d's declaration is broken, for messages: its bounds or its type.
func declared(d *sdk.Setting) string {
	switch d.Type {
	case sdk.TypeString, sdk.TypeInt, sdk.TypeFloat, sdk.TypeBool, sdk.TypeDuration:
		return "bound"
	}
	return "type"
}

// referenced parses the expansion out of value s, which held references, per the setting's type. Neither
// out nor the values the references stand for appear in messages.
func (v *validator) referenced(d *sdk.Setting, at Pos, s, out, what, where string) (val, shown any, ok bool) {
	ref := truncate(s, 60)
	fail := func(format string, args ...any) (any, any, bool) {
		v.errorf(at, "%s: the value of %s %s", what, ref, fmt.Sprintf(format, args...))
		return nil, nil, false
	}
	val, err := d.Parse(out)
	if ve := (*sdk.ValueError)(nil); errors.As(err, &ve) {
		// The SDK's messages would quote the value: name the reference instead.
		switch ve.Problem {
		case sdk.NotAllowed:
			v.errorf(at, "%s: the value of %s is not allowed; want %s", what, ref, ve.Want)
			return nil, nil, false
		case sdk.OutOfRange:
			return fail("is out of range: want %s", ve.Want)
		case sdk.NonFinite:
			return fail("holds NaN or an infinity, which cannot be sent to a plugin (JSON has no such numbers)")
		case sdk.BadDeclaration:
			v.errorf(at, "%s declares an invalid %s for setting %q: %v; this is the plugin's fault, not the file's", where, declared(d), d.Name, err)
			return nil, nil, false
		}
	}
	if err != nil {
		return fail("is not a valid %s", d.Type)
	}
	if d.Type == sdk.TypeList || d.Type == sdk.TypeObject {
		if jsonSize(val) > MaxValueBytes {
			return fail("is larger than %s (as JSON), the limit for a setting value", sizeText(MaxValueBytes))
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
				v.errorf(n.pos, "%s: %s cannot be sent to a plugin (JSON has no NaN or infinity): want a finite number", what, strconv.FormatFloat(f, 'g', -1, 64))
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
