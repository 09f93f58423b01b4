package sdk

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// This file is the one resolver of setting values: the host (checking a connector file) and package
// sdktest (building the settings it sends) both call it, so they accept and refuse the same values and
// defaults.

// Problem classifies a ValueError.
type Problem int

// The ways a value can break its setting's declaration.
const (
	// WrongType: a value of another type (a string for an int setting). Want names the type.
	WrongType Problem = iota + 1
	// Malformed: text that does not read as the setting's type ("ten" for an int). Want says what would.
	Malformed
	// NotAllowed: a string outside the setting's Enum. Want lists the allowed values.
	NotAllowed
	// OutOfRange: a number or duration outside Min and Max, or a float that is not finite. Want says
	// what the value should be ("an int >= 0").
	OutOfRange
	// NonFinite: a list or object holding NaN or an infinity, which JSON cannot carry.
	NonFinite
	// BadDeclaration: the setting's own declaration is broken (a Min that is not a number): the
	// plugin's fault, not the value's.
	BadDeclaration
)

// ValueError is a value that its setting's declaration refuses. Its message quotes at most 40
// characters of the value, and nothing of a secret setting's value.
type ValueError struct {
	// Setting is the setting's name.
	Setting string
	Problem Problem
	// Want says what the value should be: "int", `one of "a", "b"`, "an int >= 0".
	Want string
	// Got describes the value for messages (`string "x"`, `-5`); for a secret setting only its type, or
	// nothing.
	Got string
	// Hint, when set, suggests a fix ("write \"5s\" for 5 seconds").
	Hint string
}

// Error says what is wrong with the value, without the setting's name.
func (e *ValueError) Error() string {
	var msg string
	switch e.Problem {
	case WrongType:
		msg = "want " + e.Want + ", got " + e.Got
	case Malformed:
		msg = e.subject() + " " + e.Want
	case NotAllowed:
		msg = e.subject() + " is not allowed; want " + e.Want
	case OutOfRange:
		if e.Got == "" {
			msg = "the value is out of range: want " + e.Want
		} else {
			msg = "want " + e.Want + ", got " + e.Got
		}
	case NonFinite:
		msg = e.subject() + " holds NaN or an infinity, which cannot be sent to a plugin (JSON has no such numbers)"
	default:
		msg = e.Want
	}
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

func (e *ValueError) subject() string {
	if e.Got == "" {
		return "the value"
	}
	return e.Got
}

// Value checks v, a value of setting s as decoded from a connector file or from JSON (or a Go value a
// test writes: any int, float, string, bool, time.Duration, slice or map), against s's type, Enum, Min
// and Max, and returns it as the host sends it: a string, int64, float64, bool, a normalised duration
// string ("90s" is "1m30s"), []any or map[string]any. Errors are *ValueError.
func (s *Setting) Value(v any) (any, error) {
	fail := func(p Problem, want string) (any, error) {
		return nil, &ValueError{Setting: s.Name, Problem: p, Want: want, Got: describeValue(v, s.Secret)}
	}
	if x, ok := v.(json.Number); ok {
		if i, err := x.Int64(); err == nil {
			v = i
		} else if f, err := x.Float64(); err == nil {
			v = f
		}
	}
	switch s.Type {
	case TypeString:
		x, ok := v.(string)
		if !ok {
			return fail(WrongType, "string")
		}
		return s.checked(x)
	case TypeInt:
		i, ok := asInt64(v)
		if !ok {
			return fail(WrongType, "int")
		}
		return s.checked(i)
	case TypeFloat:
		f, ok := asFloat64(v)
		if !ok {
			return fail(WrongType, "float")
		}
		return s.checked(f)
	case TypeBool:
		b, ok := v.(bool)
		if !ok {
			return fail(WrongType, "bool (true or false)")
		}
		return b, nil
	case TypeDuration:
		switch x := v.(type) {
		case time.Duration:
			return s.checked(x.String())
		case string:
			d, err := time.ParseDuration(x)
			if err != nil {
				return nil, &ValueError{Setting: s.Name, Problem: Malformed, Want: durationSyntax, Got: s.quoted(x)}
			}
			return s.checked(d.String())
		}
		e := &ValueError{Setting: s.Name, Problem: WrongType, Want: `a duration string like "5s"`, Got: describeValue(v, s.Secret)}
		if i, ok := asInt64(v); ok && !s.Secret {
			e.Hint = fmt.Sprintf("write \"%ds\" for %d seconds", i, i)
		}
		return nil, e
	case TypeList, TypeObject:
		n, ok := normalize(v)
		if !ok {
			return fail(WrongType, string(s.Type))
		}
		if _, isList := n.([]any); isList != (s.Type == TypeList) {
			return fail(WrongType, string(s.Type))
		}
		if _, isMap := n.(map[string]any); !isMap && s.Type == TypeObject {
			return fail(WrongType, string(s.Type))
		}
		if hasNonFinite(n) {
			return nil, &ValueError{Setting: s.Name, Problem: NonFinite}
		}
		return n, nil
	}
	return nil, &ValueError{Setting: s.Name, Problem: BadDeclaration, Want: fmt.Sprintf("unknown type %q", s.Type)}
}

// durationSyntax is what a malformed duration is told.
const durationSyntax = `is not a duration: want a number with a unit (ns, us, ms, s, m, h), like "500ms", "5s" or "1m30s"`

// Parse reads text as a value of setting s, as a default or the expansion of a reference is written
// ("1024", "5s", "true", "[a, b]": a list or object is YAML, and so JSON), and checks it as Value does.
// A bool is true or false, nothing else.
func (s *Setting) Parse(text string) (any, error) {
	malformed := func(what string) (any, error) {
		return nil, &ValueError{Setting: s.Name, Problem: Malformed, Want: what, Got: s.quoted(text)}
	}
	switch s.Type {
	case TypeString, TypeDuration:
		return s.Value(text)
	case TypeInt:
		i, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			return malformed("is not an int")
		}
		return s.Value(i)
	case TypeFloat:
		f, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return malformed("is not a float")
		}
		return s.Value(f)
	case TypeBool:
		switch text {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return malformed("is not a bool: want true or false")
	case TypeList, TypeObject:
		var x any
		if err := yaml.Unmarshal([]byte(text), &x); err != nil {
			return malformed("is not a " + string(s.Type))
		}
		v, err := s.Value(x)
		var ve *ValueError
		if errors.As(err, &ve) && ve.Problem == WrongType {
			return malformed("is not a " + string(s.Type))
		}
		return v, err
	}
	return s.Value(text)
}

// DefaultValue returns s.Default read by Parse, or nil when s has no default.
func (s *Setting) DefaultValue() (any, error) {
	if s.Default == "" {
		return nil, nil
	}
	return s.Parse(s.Default)
}

// checked checks a value of the right type against Enum, Min and Max.
func (s *Setting) checked(v any) (any, error) {
	if x, ok := v.(string); ok && len(s.Enum) > 0 && s.Type == TypeString && !slices.Contains(s.Enum, x) {
		return nil, &ValueError{Setting: s.Name, Problem: NotAllowed, Want: s.enumText(), Got: s.quoted(x)}
	}
	want, err := s.bounds(v)
	switch {
	case err != nil:
		return nil, &ValueError{Setting: s.Name, Problem: BadDeclaration, Want: err.Error()}
	case want != "":
		e := &ValueError{Setting: s.Name, Problem: OutOfRange, Want: want}
		if !s.Secret {
			e.Got = valueText(v)
		}
		return nil, e
	}
	return v, nil
}

// quoted is how messages quote text of s: at most 40 characters, nothing of a secret.
func (s *Setting) quoted(text string) string {
	if s.Secret {
		return ""
	}
	return strconv.Quote(truncate(text, 40))
}

func (s *Setting) enumText() string {
	allowed := make([]string, len(s.Enum))
	for i, e := range s.Enum {
		allowed[i] = strconv.Quote(e)
	}
	return "one of " + strings.Join(allowed, ", ")
}

// bounds checks v (int64, float64, or a normalised duration string) against Min and Max and, for a
// float, that it is finite. It returns what the value should be ("a number >= 0") when it is not, and
// an error when a bound itself is malformed.
func (s *Setting) bounds(v any) (want string, err error) {
	var (
		kind      string
		cmp       func(bound string) (int, error) // v compared with bound
		nonFinite bool
	)
	switch x := v.(type) {
	case int64:
		kind = "an int"
		cmp = func(b string) (int, error) {
			n, err := strconv.ParseInt(b, 10, 64)
			return compare(x, n), err
		}
	case float64:
		kind = "a number"
		nonFinite = math.IsNaN(x) || math.IsInf(x, 0)
		cmp = func(b string) (int, error) {
			f, err := strconv.ParseFloat(b, 64)
			return compare(x, f), err
		}
	case string:
		if s.Type != TypeDuration {
			return "", nil
		}
		kind = "a duration"
		d, err := time.ParseDuration(x)
		if err != nil {
			return "", nil // reported as malformed
		}
		cmp = func(b string) (int, error) {
			e, err := time.ParseDuration(b)
			return compare(d, e), err
		}
	default:
		return "", nil
	}
	out := false
	if s.Min != "" {
		c, err := cmp(s.Min)
		if err != nil {
			return "", fmt.Errorf("min %q is not %s", s.Min, kind)
		}
		out = out || c < 0
	}
	if s.Max != "" {
		c, err := cmp(s.Max)
		if err != nil {
			return "", fmt.Errorf("max %q is not %s", s.Max, kind)
		}
		out = out || c > 0
	}
	if !out && !nonFinite {
		return "", nil
	}
	if nonFinite {
		kind = "a finite number"
	}
	switch {
	case s.Min != "" && s.Max != "":
		return fmt.Sprintf("%s from %s to %s", kind, s.Min, s.Max), nil
	case s.Min != "":
		return fmt.Sprintf("%s >= %s", kind, s.Min), nil
	case s.Max != "":
		return fmt.Sprintf("%s <= %s", kind, s.Max), nil
	}
	return kind, nil
}

func compare[T int64 | float64 | time.Duration](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Resolve checks values (keyed by setting name) against the stage settings decl and returns the
// settings the host sends: every value as Value returns it, and the default of each absent setting that
// has one. A key decl does not declare, a missing required setting, a bad value and a bad default are
// errors; each names its setting.
func Resolve(decl []Setting, values map[string]any) (Settings, error) {
	return resolve(decl, values, false)
}

// resolve is Resolve; lenient passes keys decl does not declare through unchanged.
func resolve(decl []Setting, values map[string]any, lenient bool) (Settings, error) {
	out := make(Settings, len(decl))
	var errs []error
	declared := make(map[string]bool, len(decl))
	for i := range decl {
		d := &decl[i]
		declared[d.Name] = true
		v, ok := values[d.Name]
		switch {
		case ok:
			val, err := d.Value(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("setting %q: %w", d.Name, err))
				continue
			}
			out[d.Name] = val
		case d.Required:
			errs = append(errs, fmt.Errorf("missing required setting %q", d.Name))
		case d.Default != "":
			val, err := d.DefaultValue()
			if err != nil {
				errs = append(errs, fmt.Errorf("setting %q: invalid default %q: %w", d.Name, d.Default, err))
				continue
			}
			out[d.Name] = val
		}
	}
	var unknown []string
	for k, v := range values {
		if !declared[k] {
			if lenient {
				out[k] = v
			} else {
				unknown = append(unknown, k)
			}
		}
	}
	slices.Sort(unknown)
	for _, k := range unknown {
		errs = append(errs, fmt.Errorf("unknown setting %q", k))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// asInt64 converts any Go integer, or a whole float within range, to int64.
func asInt64(v any) (int64, bool) {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if rv.Type() == reflect.TypeFor[time.Duration]() {
			return 0, false
		}
		return rv.Int(), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if u := rv.Uint(); u <= math.MaxInt64 {
			return int64(u), true
		}
	case reflect.Float32, reflect.Float64:
		if x := rv.Float(); x == math.Trunc(x) && x >= math.MinInt64 && x < math.MaxInt64 {
			return int64(x), true
		}
	}
	return 0, false
}

// asFloat64 converts any Go integer or float to float64.
func asFloat64(v any) (float64, bool) {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Float32, reflect.Float64:
		return rv.Float(), true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if rv.Type() == reflect.TypeFor[time.Duration]() {
			return 0, false
		}
		return float64(rv.Int()), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return float64(rv.Uint()), true
	}
	return 0, false
}

// normalize converts v to JSON-ready values: nil, string, bool, int64, float64, []any and
// map[string]any (a map's keys written with fmt.Sprint). It reports false for what JSON cannot hold.
func normalize(v any) (any, bool) {
	switch x := v.(type) {
	case nil, string, bool, int64, float64:
		return v, true
	case time.Duration:
		return x.String(), true
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, true
		}
		f, err := x.Float64()
		return f, err == nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if i, ok := asInt64(v); ok {
			return i, true
		}
		return asFloat64(v)
	case reflect.Float32:
		return rv.Float(), true
	case reflect.String:
		return rv.String(), true
	case reflect.Bool:
		return rv.Bool(), true
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return []any{}, true
		}
		l := make([]any, rv.Len())
		for i := range l {
			e, ok := normalize(rv.Index(i).Interface())
			if !ok {
				return nil, false
			}
			l[i] = e
		}
		return l, true
	case reflect.Map:
		m := make(map[string]any, rv.Len())
		it := rv.MapRange()
		for it.Next() {
			e, ok := normalize(it.Value().Interface())
			if !ok {
				return nil, false
			}
			m[fmt.Sprint(it.Key().Interface())] = e
		}
		return m, true
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return nil, true
		}
		return normalize(rv.Elem().Interface())
	}
	return nil, false
}

// hasNonFinite reports whether v (a normalised value) holds a NaN or an infinity.
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

// describeValue describes v for a message: `string "x"`, `int 5`, `list`; for a secret, only its type.
func describeValue(v any, secret bool) string {
	var t, val string
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		t, val = "string", strconv.Quote(truncate(x, 40))
	case bool:
		t, val = "bool", strconv.FormatBool(x)
	case float64:
		t, val = "float", strconv.FormatFloat(x, 'g', -1, 64)
	case float32:
		t, val = "float", strconv.FormatFloat(float64(x), 'g', -1, 32)
	case time.Duration:
		t, val = "time.Duration", x.String()
	default:
		rv := reflect.ValueOf(v)
		switch rv.Kind() {
		case reflect.Slice, reflect.Array:
			return "list"
		case reflect.Map, reflect.Struct:
			return "object"
		}
		if i, ok := asInt64(v); ok {
			t, val = "int", strconv.FormatInt(i, 10)
		} else {
			t, val = fmt.Sprintf("%T", v), fmt.Sprint(v)
		}
	}
	if secret {
		return t
	}
	return t + " " + val
}

// valueText writes a number or a normalised duration for a message.
func valueText(v any) string {
	switch x := v.(type) {
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case string:
		return x
	}
	return fmt.Sprint(v)
}

// truncate cuts s to n runes, marking the cut with "…".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
