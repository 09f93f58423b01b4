package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/sdk"
)

// settings checks a stage's settings (n, nil when absent) against the plugin's stage spec and fills
// s.Settings and s.printed; at is where missing settings are reported.
func (v *validator) settings(s *Stage, st *sdk.Stage, n *node, at Pos) {
	where := fmt.Sprintf("plugin %q (%s)", s.Plugin, s.Kind)
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
		val, shown, ok := v.setting(d, c, fmt.Sprintf("setting %q of %s", d.Name, where))
		if !ok {
			continue
		}
		if d.Secret {
			shown = redacted
		}
		s.Settings[d.Name], s.printed[d.Name] = val, shown
	}
}

func docHint(d *sdk.Setting) string {
	if d.Doc == "" {
		return ""
	}
	return " (" + strings.TrimSuffix(strings.TrimSpace(d.Doc), ".") + ")"
}

// setting checks one value against its declaration; what names it in messages. It returns the value, the
// value Print shows, and whether it is valid.
func (v *validator) setting(d *sdk.Setting, c *node, what string) (val, shown any, ok bool) {
	if s, isString := c.scalar.(string); isString && c.kind == kindScalar && strings.Contains(s, "${") {
		out, refs, problems := v.x.expand(s)
		for _, p := range problems {
			v.errorf(c.pos, "%s: %s", what, p)
		}
		if len(problems) > 0 {
			return nil, nil, false
		}
		if refs {
			return v.referenced(d, c.pos, s, out, what)
		}
		// Only $${ escapes, or ${…} that are not references: an ordinary string.
		c = &node{kind: kindScalar, pos: c.pos, key: c.key, scalar: out}
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
		return i, i, true
	case sdk.TypeFloat:
		switch x := c.scalar.(type) {
		case int64:
			return float64(x), float64(x), true
		case float64:
			return x, x, true
		}
		v.errorf(c.pos, "%s: want float, got %s", what, describe(c, d.Secret))
		return nil, nil, false
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
			shown := strconv.Quote(truncate(s, 40))
			if d.Secret {
				shown = "the value"
			}
			v.errorf(c.pos, "%s: %s %v", what, shown, err)
			return nil, nil, false
		}
		return dur, dur, true
	case sdk.TypeList:
		if c.kind != kindList {
			v.errorf(c.pos, "%s: want list, got %s", what, describe(c, d.Secret))
			return nil, nil, false
		}
		return v.expandAll(c, what)
	case sdk.TypeObject:
		if c.kind != kindMap {
			v.errorf(c.pos, "%s: want object, got %s", what, describe(c, d.Secret))
			return nil, nil, false
		}
		return v.expandAll(c, what)
	}
	v.errorf(c.pos, "%s: the plugin declares unknown type %q", what, d.Type)
	return nil, nil, false
}

// referenced parses the expansion out of value s, which held references, per the setting's type. Neither
// out nor the values the references stand for appear in messages.
func (v *validator) referenced(d *sdk.Setting, at Pos, s, out, what string) (val, shown any, ok bool) {
	val, err := fromText(d.Type, out)
	switch {
	case err != nil:
		err = fmt.Errorf("the value of %s is not a valid %s", s, d.Type)
	case checkEnum(d, val) != nil:
		err = enumError(d, "the value of "+s)
	}
	if err != nil {
		v.errorf(at, "%s: %v", what, err)
		return nil, nil, false
	}
	return val, redacted, true
}

// expandAll converts a list or object to JSON-ready values, expanding references in its strings; shown
// has each string that held a reference redacted.
func (v *validator) expandAll(n *node, what string) (val, shown any, ok bool) {
	ok = true
	var walk func(n *node) (any, any)
	walk = func(n *node) (any, any) {
		switch n.kind {
		case kindMap:
			m, p := make(map[string]any, len(n.fields)), make(map[string]any, len(n.fields))
			for _, k := range n.keys {
				m[k], p[k] = walk(n.fields[k])
			}
			return m, p
		case kindList:
			l, p := make([]any, len(n.items)), make([]any, len(n.items))
			for i, c := range n.items {
				l[i], p[i] = walk(c)
			}
			return l, p
		}
		s, isString := n.scalar.(string)
		if !isString || !strings.Contains(s, "${") {
			return n.scalar, n.scalar
		}
		out, refs, problems := v.x.expand(s)
		for _, p := range problems {
			v.errorf(n.pos, "%s: %s", what, p)
			ok = false
		}
		if refs {
			return out, redacted
		}
		return out, out
	}
	val, shown = walk(n)
	return val, shown, ok
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
