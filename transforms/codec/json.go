package codec

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// DecodeJSON parses a JSON or MongoDB Extended JSON (relaxed or canonical) document — an object — into a
// map, converting Extended JSON wrappers into the types listed in codec_value.go. Errors name the byte
// offset. Strings are copied: the result does not alias data.
func DecodeJSON(data []byte) (map[string]any, error) {
	d := jsonDecoder{data: data}
	return d.document(d.value)
}

// DecodeJSONValue parses one JSON or Extended JSON value of any kind (not only an object).
func DecodeJSONValue(data []byte) (any, error) {
	d := jsonDecoder{data: data}
	v, err := d.value()
	if err != nil {
		return nil, err
	}
	d.space()
	if d.i != len(d.data) {
		return nil, d.errorf("unexpected data after the value")
	}
	return v, nil
}

// document reads a whole payload, which must be one object, with read.
func (d *jsonDecoder) document(read func() (any, error)) (map[string]any, error) {
	d.space()
	if d.i >= len(d.data) || d.data[d.i] != '{' {
		return nil, d.errorf("a payload must be a JSON object")
	}
	v, err := read()
	if err != nil {
		return nil, err
	}
	d.space()
	if d.i != len(d.data) {
		return nil, d.errorf("unexpected data after the document")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, d.errorf("a payload must be a JSON object, not an Extended JSON value")
	}
	return m, nil
}

type jsonDecoder struct {
	data    []byte
	i       int
	depth   int
	changes *Changes // sparse decoding only
}

func (d *jsonDecoder) errorf(format string, args ...any) error {
	return fmt.Errorf("JSON at byte %d: %s", d.i, fmt.Sprintf(format, args...))
}

func (d *jsonDecoder) space() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *jsonDecoder) value() (any, error) {
	d.space()
	if d.i >= len(d.data) {
		return nil, d.errorf("unexpected end of input")
	}
	switch c := d.data[d.i]; {
	case c == '{':
		return d.object()
	case c == '[':
		return d.array()
	case c == '"':
		return d.string()
	case c == '-' || c >= '0' && c <= '9':
		return d.number()
	case d.literal("true"):
		return true, nil
	case d.literal("false"):
		return false, nil
	case d.literal("null"):
		return nil, nil
	}
	return nil, d.errorf("unexpected character %q", d.data[d.i])
}

func (d *jsonDecoder) literal(word string) bool {
	if len(d.data)-d.i >= len(word) && string(d.data[d.i:d.i+len(word)]) == word {
		d.i += len(word)
		return true
	}
	return false
}

func (d *jsonDecoder) object() (any, error) {
	if d.depth++; d.depth > maxDepth {
		return nil, d.errorf("nested more than %d levels deep", maxDepth)
	}
	d.i++ // {
	m := make(map[string]any, 8)
	dollar := false
	d.space()
	if d.i < len(d.data) && d.data[d.i] == '}' {
		d.i++
		d.depth--
		return m, nil
	}
	for {
		d.space()
		if d.i >= len(d.data) || d.data[d.i] != '"' {
			return nil, d.errorf("want a string key")
		}
		k, err := d.string()
		if err != nil {
			return nil, err
		}
		d.space()
		if d.i >= len(d.data) || d.data[d.i] != ':' {
			return nil, d.errorf("want ':' after a key")
		}
		d.i++
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		m[k] = v
		dollar = dollar || len(k) > 0 && k[0] == '$'
		d.space()
		if d.i >= len(d.data) {
			return nil, d.errorf("unexpected end of input in an object")
		}
		switch d.data[d.i] {
		case ',':
			d.i++
		case '}':
			d.i++
			d.depth--
			if dollar && len(m) <= 2 {
				if w, ok := wrapper(m); ok {
					return w, nil
				}
			}
			return m, nil
		default:
			return nil, d.errorf("want ',' or '}' in an object")
		}
	}
}

func (d *jsonDecoder) array() (any, error) {
	if d.depth++; d.depth > maxDepth {
		return nil, d.errorf("nested more than %d levels deep", maxDepth)
	}
	d.i++ // [
	a := make([]any, 0, 4)
	d.space()
	if d.i < len(d.data) && d.data[d.i] == ']' {
		d.i++
		d.depth--
		return a, nil
	}
	for {
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		a = append(a, v)
		d.space()
		if d.i >= len(d.data) {
			return nil, d.errorf("unexpected end of input in an array")
		}
		switch d.data[d.i] {
		case ',':
			d.i++
		case ']':
			d.i++
			d.depth--
			return a, nil
		default:
			return nil, d.errorf("want ',' or ']' in an array")
		}
	}
}

func (d *jsonDecoder) string() (string, error) {
	d.i++ // "
	start := d.i
	j := bytes.IndexByte(d.data[start:], '"')
	if j >= 0 {
		// The common case, a string without escapes: check it has no backslash or control character.
		raw := d.data[start : start+j]
		if bytes.IndexByte(raw, '\\') < 0 && !hasControl(raw) {
			d.i = start + j + 1
			return validUTF8(raw), nil
		}
	}
	for d.i < len(d.data) {
		c := d.data[d.i]
		switch {
		case c == '"':
			s := validUTF8(d.data[start:d.i])
			d.i++
			return s, nil
		case c == '\\':
			return d.escaped(start)
		case c < 0x20:
			return "", d.errorf("control character in a string")
		}
		d.i++
	}
	return "", d.errorf("unterminated string")
}

// validUTF8 returns b as a string with each byte that is not part of valid UTF-8 replaced by U+FFFD, as
// the encoder writes it.
func validUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	out := make([]byte, 0, len(b)+8)
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
		} else {
			out = append(out, b[i:i+size]...)
		}
		i += size
	}
	return string(out)
}

func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
}

// escaped finishes a string that has escapes, from start (just after the opening quote).
func (d *jsonDecoder) escaped(start int) (string, error) {
	b := append(make([]byte, 0, d.i-start+16), d.data[start:d.i]...)
	for d.i < len(d.data) {
		c := d.data[d.i]
		switch {
		case c == '"':
			d.i++
			return validUTF8(b), nil
		case c < 0x20:
			return "", d.errorf("control character in a string")
		case c != '\\':
			b = append(b, c)
			d.i++
			continue
		}
		if d.i+1 >= len(d.data) {
			break
		}
		e := d.data[d.i+1]
		d.i += 2
		switch e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, ok := d.hex4()
			if !ok {
				return "", d.errorf(`bad \u escape`)
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if d.i+1 < len(d.data) && d.data[d.i] == '\\' && d.data[d.i+1] == 'u' {
					save := d.i
					d.i += 2
					if x, ok := d.hex4(); ok {
						r2 = x
					} else {
						d.i = save
					}
				}
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					r = dec
				} else {
					r = utf8.RuneError
					if r2 >= 0 && !utf16.IsSurrogate(r2) {
						b = utf8.AppendRune(b, r)
						r = r2
					}
				}
			}
			b = utf8.AppendRune(b, r)
		default:
			return "", d.errorf("bad escape \\%c", e)
		}
	}
	return "", d.errorf("unterminated string")
}

func (d *jsonDecoder) hex4() (rune, bool) {
	if len(d.data)-d.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range d.data[d.i : d.i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	d.i += 4
	return r, true
}

func (d *jsonDecoder) number() (any, error) {
	start := d.i
	if d.data[d.i] == '-' {
		d.i++
	}
	digits := d.i
	for d.i < len(d.data) && d.data[d.i] >= '0' && d.data[d.i] <= '9' {
		d.i++
	}
	if d.i == digits {
		return nil, d.errorf("want a digit")
	}
	integer := true
	if d.i < len(d.data) && d.data[d.i] == '.' {
		integer = false
		d.i++
		frac := d.i
		for d.i < len(d.data) && d.data[d.i] >= '0' && d.data[d.i] <= '9' {
			d.i++
		}
		if d.i == frac {
			return nil, d.errorf("want a digit after '.'")
		}
	}
	if d.i < len(d.data) && (d.data[d.i] == 'e' || d.data[d.i] == 'E') {
		integer = false
		d.i++
		if d.i < len(d.data) && (d.data[d.i] == '+' || d.data[d.i] == '-') {
			d.i++
		}
		exp := d.i
		for d.i < len(d.data) && d.data[d.i] >= '0' && d.data[d.i] <= '9' {
			d.i++
		}
		if d.i == exp {
			return nil, d.errorf("want a digit in the exponent")
		}
	}
	text := d.data[start:d.i]
	if integer {
		// Up to 18 digits cannot overflow: the common case, without strconv.
		if n := len(text) - (digits - start); n <= 18 {
			v := 0
			for _, c := range text[digits-start:] {
				v = v*10 + int(c-'0')
			}
			if digits > start {
				v = -v
			}
			return v, nil
		}
		if v, err := strconv.ParseInt(string(text), 10, 64); err == nil {
			return int(v), nil
		}
	}
	f, err := strconv.ParseFloat(string(text), 64)
	if err != nil && !math.IsInf(f, 0) {
		return nil, d.errorf("bad number %s", truncate(string(text), 40))
	}
	return f, nil
}

// wrapper converts an Extended JSON wrapper object into its value; ok is false when m is not one.
func wrapper(m map[string]any) (any, bool) {
	if len(m) == 1 {
		for k, v := range m {
			switch k {
			case "$oid":
				if s, ok := v.(string); ok {
					if id, err := ParseObjectID(s); err == nil {
						return id, true
					}
				}
			case "$date":
				return dateValue(v)
			case "$numberLong", "$numberInt":
				if s, ok := v.(string); ok {
					if n, err := strconv.ParseInt(s, 10, 64); err == nil {
						return int(n), true
					}
				}
			case "$numberDouble":
				if s, ok := v.(string); ok {
					if f, err := strconv.ParseFloat(s, 64); err == nil || math.IsInf(f, 0) {
						return f, true
					}
				}
			case "$numberDecimal":
				if s, ok := v.(string); ok {
					if dec, err := ParseDecimal(s); err == nil {
						return dec, true
					}
				}
			case "$binary":
				if b, ok := v.(map[string]any); ok && len(b) == 2 {
					return binaryValue(b["base64"], b["subType"])
				}
			case "$uuid":
				if s, ok := v.(string); ok && len(s) == 36 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-' {
					raw, err := hex.DecodeString(s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:])
					if err == nil {
						return Binary{Subtype: 4, Data: raw}, true
					}
				}
			case "$timestamp":
				if t, ok := v.(map[string]any); ok && len(t) == 2 {
					ts, ok1 := t["t"].(int)
					inc, ok2 := t["i"].(int)
					if ok1 && ok2 && ts >= 0 && inc >= 0 && ts <= math.MaxUint32 && inc <= math.MaxUint32 {
						return Timestamp{T: uint32(ts), I: uint32(inc)}, true
					}
				}
			case "$regularExpression":
				if r, ok := v.(map[string]any); ok && len(r) == 2 {
					p, ok1 := r["pattern"].(string)
					o, ok2 := r["options"].(string)
					if ok1 && ok2 {
						return Regex{Pattern: p, Options: o}, true
					}
				}
			case "$minKey":
				if v == 1 {
					return MinKey{}, true
				}
			case "$maxKey":
				if v == 1 {
					return MaxKey{}, true
				}
			case "$undefined":
				if v == true {
					return nil, true
				}
			case "$symbol":
				if s, ok := v.(string); ok {
					return s, true
				}
			case "$code":
				if s, ok := v.(string); ok {
					return Code(s), true
				}
			}
		}
		return nil, false
	}
	// The legacy two-key forms.
	if b, ok := m["$binary"]; ok {
		if t, ok := m["$type"]; ok {
			return binaryValue(b, t)
		}
	}
	if p, ok := m["$regex"].(string); ok {
		if o, ok := m["$options"].(string); ok {
			return Regex{Pattern: p, Options: o}, true
		}
	}
	return nil, false
}

func dateValue(v any) (any, bool) {
	switch x := v.(type) {
	case string:
		t, err := time.Parse(time.RFC3339Nano, x)
		if err != nil {
			return nil, false
		}
		return t.UTC(), true
	case int: // {"$date": {"$numberLong": "…"}} arrives here converted; also the legacy bare number
		return time.UnixMilli(int64(x)).UTC(), true
	}
	return nil, false
}

func binaryValue(b64, subtype any) (any, bool) {
	s, ok1 := b64.(string)
	st, ok2 := subtype.(string)
	if !ok1 || !ok2 || len(st) == 0 || len(st) > 2 {
		return nil, false
	}
	n, err := strconv.ParseUint(st, 16, 8)
	if err != nil {
		return nil, false
	}
	data, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, false
	}
	return Binary{Subtype: byte(n), Data: data}, true
}

// EncodeJSON appends doc to dst as relaxed Extended JSON: ints as plain numbers, floats always with a
// fraction or an exponent (so they decode back as floats), non-finite floats as {"$numberDouble": …},
// dates as {"$date": "…Z"} (years 1970 to 9999; other years as milliseconds), and the other types as their
// Extended JSON wrappers. Object keys are written in sorted order.
func EncodeJSON(dst []byte, doc map[string]any) ([]byte, error) {
	e := jsonEncoder{}
	return e.value(dst, doc, 0)
}

// AppendJSON appends any value a document may hold (not only an object) as relaxed Extended JSON.
func AppendJSON(dst []byte, v any) ([]byte, error) {
	e := jsonEncoder{}
	return e.value(dst, v, 0)
}

// EncodeCanonicalJSON is EncodeJSON in canonical Extended JSON: every number and date in its wrapper.
func EncodeCanonicalJSON(dst []byte, doc map[string]any) ([]byte, error) {
	e := jsonEncoder{canonical: true}
	return e.value(dst, doc, 0)
}

type jsonEncoder struct {
	canonical bool
}

var errTooDeep = errors.New("document nested too deep")

func (e *jsonEncoder) value(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxDepth {
		return b, errTooDeep
	}
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case string:
		return appendQuoted(b, x), nil
	case int:
		return e.int(b, int64(x)), nil
	case float64:
		return e.float(b, x), nil
	case map[string]any:
		return e.object(b, x, depth)
	case []any:
		b = append(b, '[')
		for i, el := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = e.value(b, el, depth+1); err != nil {
				return b, err
			}
		}
		return append(b, ']'), nil
	case ObjectID:
		b = append(b, `{"$oid":"`...)
		b = hex.AppendEncode(b, x[:])
		return append(b, `"}`...), nil
	case time.Time:
		ms := x.UnixMilli()
		if !e.canonical && x.Year() >= 1970 && x.Year() <= 9999 {
			b = append(b, `{"$date":"`...)
			b = x.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
			return append(b, `"}`...), nil
		}
		b = append(b, `{"$date":{"$numberLong":"`...)
		b = strconv.AppendInt(b, ms, 10)
		return append(b, `"}}`...), nil
	case Decimal:
		b = append(b, `{"$numberDecimal":"`...)
		b = append(b, x.String()...)
		return append(b, `"}`...), nil
	case Binary:
		b = append(b, `{"$binary":{"base64":"`...)
		b = base64.StdEncoding.AppendEncode(b, x.Data)
		b = append(b, `","subType":"`...)
		b = hex.AppendEncode(b, []byte{x.Subtype})
		return append(b, `"}}`...), nil
	case Timestamp:
		b = append(b, `{"$timestamp":{"t":`...)
		b = strconv.AppendUint(b, uint64(x.T), 10)
		b = append(b, `,"i":`...)
		b = strconv.AppendUint(b, uint64(x.I), 10)
		return append(b, `}}`...), nil
	case Regex:
		b = append(b, `{"$regularExpression":{"pattern":`...)
		b = appendQuoted(b, x.Pattern)
		b = append(b, `,"options":`...)
		b = appendQuoted(b, x.Options)
		return append(b, `}}`...), nil
	case MinKey:
		return append(b, `{"$minKey":1}`...), nil
	case MaxKey:
		return append(b, `{"$maxKey":1}`...), nil
	case Code:
		b = append(b, `{"$code":`...)
		b = appendQuoted(b, string(x))
		return append(b, '}'), nil
	case bson.Decimal128:
		return e.value(b, Decimal{x}, depth)
	case []byte:
		return e.value(b, Binary{Data: x}, depth)
	case float32:
		return e.float(b, float64(x)), nil
	case uint64:
		if x > math.MaxInt64 {
			d, _ := ParseDecimal(strconv.FormatUint(x, 10)) // exact
			return e.value(b, d, depth)
		}
		return e.int(b, int64(x)), nil
	case uint:
		return e.value(b, uint64(x), depth)
	case time.Duration:
		return appendQuoted(b, x.String()), nil
	case map[string]string:
		m := make(map[string]any, len(x))
		for k, s := range x {
			m[k] = s
		}
		return e.object(b, m, depth)
	case []string:
		l := make([]any, len(x))
		for i, s := range x {
			l[i] = s
		}
		return e.value(b, l, depth)
	}
	if n, ok := AsInt(v); ok {
		return e.int(b, int64(n)), nil
	}
	if s, ok := v.(fmt.Stringer); ok {
		return appendQuoted(b, s.String()), nil
	}
	return b, fmt.Errorf("cannot encode a value of type %T", v)
}

func (e *jsonEncoder) object(b []byte, m map[string]any, depth int) ([]byte, error) {
	var small [16]string
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b, err := e.members(append(b, '{'), m, keys, true, depth)
	if err != nil {
		return b, err
	}
	return append(b, '}'), nil
}

// members appends the members of m named by keys, in that order, as "key":value pairs separated by
// commas (and preceded by one unless first).
func (e *jsonEncoder) members(b []byte, m map[string]any, keys []string, first bool, depth int) ([]byte, error) {
	for _, k := range keys {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendQuoted(b, k)
		b = append(b, ':')
		var err error
		if b, err = e.value(b, m[k], depth+1); err != nil {
			return b, err
		}
	}
	return b, nil
}

func (e *jsonEncoder) int(b []byte, n int64) []byte {
	if !e.canonical {
		return strconv.AppendInt(b, n, 10)
	}
	if n >= math.MinInt32 && n <= math.MaxInt32 {
		b = append(b, `{"$numberInt":"`...)
	} else {
		b = append(b, `{"$numberLong":"`...)
	}
	b = strconv.AppendInt(b, n, 10)
	return append(b, `"}`...)
}

func (e *jsonEncoder) float(b []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, `{"$numberDouble":"NaN"}`...)
	case math.IsInf(f, 1):
		return append(b, `{"$numberDouble":"Infinity"}`...)
	case math.IsInf(f, -1):
		return append(b, `{"$numberDouble":"-Infinity"}`...)
	}
	if e.canonical {
		b = append(b, `{"$numberDouble":"`...)
	}
	start := len(b)
	b = strconv.AppendFloat(b, f, 'g', -1, 64)
	if !slices.ContainsFunc(b[start:], func(c byte) bool { return c == '.' || c == 'e' }) {
		b = append(b, ".0"...)
	}
	if e.canonical {
		b = append(b, `"}`...)
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendQuoted appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
