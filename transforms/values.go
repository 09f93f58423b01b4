package transforms

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr/vm/runtime"

	"github.com/sluicehq/sluice/transforms/codec"
)

// The value model. Payload values are plain Go values (codec lists them); every operator and builtin treats
// them the same way:
//
//   - nil (a missing field) is false wherever a condition is expected (filter, when, &&, ||, !, not, ?:);
//     ==, != compare it; <, <=, >, >= with nil are false; arithmetic with nil is an error naming the field.
//   - functions of one value give nil for nil (upper(nil) == nil); predicates (hasPrefix, contains, in,
//     matches) are false; len(nil) is 0; the builtins that iterate (map, filter, all, sum, …) take nil as
//     an empty array; aggregates (min, max, mean, median, sum) skip nil elements.
//   - equality, ordering, in, sort, sortBy, min, max and uniq all use one comparison: numbers by value
//     (a Decimal exactly against ints and floats, a float by its shortest decimal form), an ObjectID
//     equal to its hex string and ordered by its bytes, Timestamps by (t, i), dates by instant.
//   - Decimal arithmetic stays Decimal (decimal.go); int with int stays int; with a float, float.

// argError is a function's complaint about one of its arguments; the Runner names the field the argument
// read (values.go's call sites) when it reports it.
type argError struct {
	fn  string // the function's internal name (as called)
	arg int    // the argument's index
	msg string // what is wrong, as "is int 5, want a string"
}

func (e *argError) Error() string {
	return fmt.Sprintf("argument %d %s", e.arg+1, e.msg)
}

// badArg returns an argError saying v is not what fn wants.
func badArg(fn string, arg int, v any, want string) *argError {
	return &argError{fn: fn, arg: arg, msg: fmt.Sprintf("is %s, want %s", show(v), want)}
}

// nilArg returns an argError saying argument arg of fn is nil.
func nilArg(fn string, arg int) *argError {
	return &argError{fn: fn, arg: arg, msg: "is nil (a missing field?)"}
}

// typeName names a value's type the way the documentation does.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "nil"
	case int:
		return "int"
	case float64:
		return "float"
	case string:
		return "string"
	case bool:
		return "bool"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case codec.ObjectID:
		return "ObjectID"
	case codec.Decimal:
		return "Decimal"
	case time.Time:
		return "date"
	case time.Duration:
		return "duration"
	case codec.Timestamp:
		return "Timestamp"
	case codec.Binary:
		return "Binary"
	case codec.Regex:
		return "Regex"
	case codec.MinKey:
		return "MinKey"
	case codec.MaxKey:
		return "MaxKey"
	case codec.Code:
		return "Code"
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice:
		return "array"
	case reflect.Map:
		return "object"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8,
		reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "int"
	case reflect.Float32, reflect.Float64:
		return "float"
	case reflect.String:
		return "string"
	}
	return fmt.Sprintf("%T", v)
}

// show prints a value with its type, shortened: `15000 (int)`, `"abc" (string)`, `{"a":1} (object)`.
func show(v any) string {
	switch x := v.(type) {
	case nil:
		return "nil"
	case string:
		return fmt.Sprintf("%q (string)", Truncate(x, 60))
	}
	text, err := toText(v)
	if err != nil {
		text = fmt.Sprint(v)
	}
	return Truncate(text, 60) + " (" + typeName(v) + ")"
}

// maxShown is how many bytes of a value from a record a message shows; a longer value is cut and marked
// with "…". Messages reach logs, alerts and dead-letter metadata: they never carry a field's whole value.
const maxShown = 60

// maxMessage bounds a failure's message (Failure.Err); a longer one is cut and marked.
const maxMessage = 1024

// Truncate cuts s to at most n bytes, at a character boundary, and marks the cut with "…" (messages and
// previews of values, here and in sluice verify's report).
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// clipValues returns msg, a message from code that quotes its arguments whole (Go's strconv and time
// errors, a regexp's syntax error), with each string among args (at any depth of an array or object)
// longer than maxShown cut to maxShown and marked, as written or quoted as Go's strconv and time packages
// quote.
func clipValues(msg string, args ...any) string {
	seen := 0 // values looked at: a message is about a few of them, an array may hold millions
	var walk func(v any)
	walk = func(v any) {
		if seen++; seen > 10000 {
			return
		}
		switch x := v.(type) {
		case string:
			if len(x) <= maxShown {
				return
			}
			cut := Truncate(x, maxShown)
			kept := strings.TrimSuffix(cut, "…")
			for _, quote := range []func(string) string{strconv.Quote, strconv.QuoteToASCII, timeQuote} {
				if q := quote(x); strings.Contains(msg, q) {
					k := quote(kept)
					msg = strings.ReplaceAll(msg, q, k[:len(k)-1]+`…"`)
				}
			}
			msg = strings.ReplaceAll(msg, x, cut)
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	for _, a := range args {
		walk(a)
	}
	return msg
}

// timeQuote quotes s as the time package's errors do: in double quotes, each byte of a character that is
// not printable ASCII as \xNN.
func timeQuote(s string) string {
	const hex = "0123456789abcdef"
	b := []byte{'"'}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= utf8.RuneSelf || c < ' ':
			b = append(b, '\\', 'x', hex[c>>4], hex[c&0xF])
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		default:
			b = append(b, c)
		}
	}
	return string(append(b, '"'))
}

// clipped is an error whose message was cut to maxMessage; it wraps the original.
type clipped struct {
	msg string
	err error
}

func (e *clipped) Error() string { return e.msg }
func (e *clipped) Unwrap() error { return e.err }

// clipError returns err, or when its message is longer than maxMessage, an error wrapping it whose
// message is cut there and says how much was cut.
func clipError(err error) error {
	msg := err.Error()
	if len(msg) <= maxMessage {
		return err
	}
	return &clipped{msg: fmt.Sprintf("%s (message cut: %d bytes more)", Truncate(msg, maxMessage), len(msg)-maxMessage), err: err}
}

func opEq(a, b any) (any, error) { return equal(a, b), nil }
func opNe(a, b any) (any, error) { return !equal(a, b), nil }

// equal is sluice's equality.
func equal(a, b any) bool {
	switch x := a.(type) {
	case string:
		switch y := b.(type) {
		case string:
			return x == y
		case codec.ObjectID:
			return x == y.String()
		}
	case int:
		switch y := b.(type) {
		case int:
			return x == y
		case float64:
			return float64(x) == y
		}
	case float64:
		switch y := b.(type) {
		case float64:
			return x == y
		case int:
			return x == float64(y)
		}
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case codec.ObjectID:
		switch y := b.(type) {
		case codec.ObjectID:
			return x == y
		case string:
			return x.String() == y
		}
		return false
	case codec.Timestamp:
		y, ok := b.(codec.Timestamp)
		return ok && x == y
	case codec.Decimal:
		c, ok := compareDecimal(x, b)
		return ok && c == 0
	case time.Time:
		y, ok := b.(time.Time)
		return ok && x.Equal(y)
	case codec.Binary:
		y, ok := b.(codec.Binary)
		return ok && x.Subtype == y.Subtype && bytes.Equal(x.Data, y.Data)
	case nil:
		return b == nil
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !equal(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equal(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	switch b.(type) {
	case nil:
		return false
	case codec.ObjectID, codec.Timestamp, codec.Decimal, time.Time, codec.Binary:
		return equal(b, a)
	}
	ok, err := safe(func() bool { return runtime.Equal(normalize(a), normalize(b)) })
	return err == nil && ok
}

// normalize turns values of named basic types (time.Month, time.Weekday, …), which methods like
// created.Month() return, into int, float64 or string, so that they compare with literals.
func normalize(v any) any {
	switch v.(type) {
	case int, float64, string, bool, nil, time.Duration:
		return v
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return int(rv.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if u := rv.Uint(); u <= math.MaxInt64 {
			return int(u)
		}
	case reflect.Float32, reflect.Float64:
		return rv.Float()
	case reflect.String:
		return rv.String()
	}
	return v
}

// errIncomparable is returned by compare for values that have no order between them.
var errIncomparable = errors.New("no order")

// compare orders a and b: numbers (int, float, Decimal) by value, strings, dates, durations, ObjectIDs
// (by bytes, so by creation time), Timestamps (by t, then i), bools (false first). Other pairs are
// errIncomparable. Neither may be nil.
func compare(a, b any) (int, error) {
	switch x := a.(type) {
	case int:
		switch y := b.(type) {
		case int:
			return cmp3(x < y, x > y), nil
		case float64:
			return cmp3(float64(x) < y, float64(x) > y), nil
		}
	case float64:
		switch y := b.(type) {
		case float64:
			return cmp3(x < y, x > y), nil
		case int:
			return cmp3(x < float64(y), x > float64(y)), nil
		}
	case string:
		if y, ok := b.(string); ok {
			return strings.Compare(x, y), nil
		}
	case codec.Decimal:
		if c, ok := compareDecimal(x, b); ok {
			return c, nil
		}
		return 0, errIncomparable
	case codec.ObjectID:
		if y, ok := b.(codec.ObjectID); ok {
			return bytes.Compare(x[:], y[:]), nil
		}
		return 0, errIncomparable
	case codec.Timestamp:
		if y, ok := b.(codec.Timestamp); ok {
			if x.T != y.T {
				return cmp3(x.T < y.T, x.T > y.T), nil
			}
			return cmp3(x.I < y.I, x.I > y.I), nil
		}
		return 0, errIncomparable
	case time.Time:
		if y, ok := b.(time.Time); ok {
			return x.Compare(y), nil
		}
		return 0, errIncomparable
	case time.Duration:
		if y, ok := b.(time.Duration); ok {
			return cmp3(x < y, x > y), nil
		}
	case bool:
		if y, ok := b.(bool); ok {
			return cmp3(!x && y, x && !y), nil
		}
	}
	if y, ok := b.(codec.Decimal); ok {
		if c, ok := compareDecimal(y, a); ok {
			return -c, nil
		}
		return 0, errIncomparable
	}
	na, nb := normalize(a), normalize(b)
	if reflect.TypeOf(na) != reflect.TypeOf(a) || reflect.TypeOf(nb) != reflect.TypeOf(b) {
		return compare(na, nb)
	}
	return 0, errIncomparable
}

func cmp3(less, more bool) int {
	switch {
	case less:
		return -1
	case more:
		return 1
	}
	return 0
}

// order evaluates an ordering operator: false when either side is nil, an error when the two cannot be
// ordered.
func order(fn, op string, a, b any) (int, bool, error) {
	if a == nil || b == nil {
		return 0, false, nil
	}
	c, err := compare(a, b)
	if err != nil {
		return 0, false, fmt.Errorf("invalid operation: %s %s %s (%s and %s have no order)", typeName(a), op, typeName(b), show(a), show(b))
	}
	return c, true, nil
}

func opLt(a, b any) (any, error) {
	c, ok, err := order("__lt", "<", a, b)
	return ok && c < 0, err
}

func opLe(a, b any) (any, error) {
	c, ok, err := order("__le", "<=", a, b)
	return ok && c <= 0, err
}

func opGt(a, b any) (any, error) {
	c, ok, err := order("__gt", ">", a, b)
	return ok && c > 0, err
}

func opGe(a, b any) (any, error) {
	c, ok, err := order("__ge", ">=", a, b)
	return ok && c >= 0, err
}

func safe[T any](f func() T) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return f(), nil
}

// arith runs an arithmetic operator on values that are not two ints or two floats.
func arith(fn, op string, a, b any, f func(a, b any) any) (any, error) {
	if a == nil {
		return nil, nilArg(fn, 0)
	}
	if b == nil {
		return nil, nilArg(fn, 1)
	}
	_, da := a.(codec.Decimal)
	_, db := b.(codec.Decimal)
	if da || db {
		return decimalOp(op, a, b)
	}
	v, err := safe(func() any { return f(normalize(a), normalize(b)) })
	if err != nil {
		return nil, fmt.Errorf("invalid operation: %s %s %s", show(a), op, show(b))
	}
	return v, nil
}

// overflow is the error of int or duration arithmetic whose result does not fit in 64 bits: neither wraps
// around. what is the operation, as written (9223372036854775807 + 1).
func overflow(what string, x any) error {
	if _, ok := x.(time.Duration); ok {
		return fmt.Errorf("duration overflow in %s: the result is beyond ±292 years", what)
	}
	return fmt.Errorf("integer overflow in %s: the result does not fit in 64 bits (decimal(x) computes exactly)", what)
}

// intPair returns a and b as ints when both are integers of any Go type that fits (a payload's int32 or
// int64 as much as an int).
func intPair(a, b any) (int, int, bool) {
	x, ok1 := a.(int)
	y, ok2 := b.(int)
	if ok1 && ok2 {
		return x, y, true
	}
	x, ok1 = normalize(a).(int)
	y, ok2 = normalize(b).(int)
	return x, y, ok1 && ok2
}

// checked runs + - or * on two ints, or on durations (both for + and -, one for *: a duration times an
// int), failing on overflow. ok is false when a and b are not such a pair.
func checked(op string, a, b any) (v any, ok bool, err error) {
	da, isDa := a.(time.Duration)
	db, isDb := b.(time.Duration)
	var x, y int
	switch {
	case isDa && isDb && op != "*":
		x, y = int(da), int(db)
	case isDa && op == "*":
		if y, ok = normalize(b).(int); !ok {
			return nil, false, nil
		}
		x = int(da)
	case isDb && op == "*":
		if x, ok = normalize(a).(int); !ok {
			return nil, false, nil
		}
		y = int(db)
	case isDa || isDb:
		return nil, false, nil
	default:
		if x, y, ok = intPair(a, b); !ok {
			return nil, false, nil
		}
	}
	var z int
	var over bool
	switch op {
	case "+":
		z, over = x+y, (y > 0 && x > math.MaxInt-y) || (y < 0 && x < math.MinInt-y)
	case "-":
		z, over = x-y, (y < 0 && x > math.MaxInt+y) || (y > 0 && x < math.MinInt+y)
	case "*":
		z = x * y
		over = x != 0 && (z/x != y || (x == -1 && y == math.MinInt) || (y == -1 && x == math.MinInt))
	}
	if isDa || isDb {
		if over {
			return nil, true, overflow(fmt.Sprintf("%v %s %v", a, op, b), time.Duration(0))
		}
		return time.Duration(z), true, nil
	}
	if over {
		return nil, true, overflow(fmt.Sprintf("%d %s %d", x, op, y), x)
	}
	return z, true, nil
}

func opAdd(a, b any) (any, error) {
	if v, ok, err := checked("+", a, b); ok {
		return v, err
	}
	switch x := a.(type) {
	case float64:
		if y, ok := b.(float64); ok {
			return x + y, nil
		}
	case string:
		if y, ok := b.(string); ok {
			return x + y, nil
		}
	}
	return arith("__add", "+", a, b, runtime.Add)
}

func opSub(a, b any) (any, error) {
	if v, ok, err := checked("-", a, b); ok {
		return v, err
	}
	switch x := a.(type) {
	case float64:
		if y, ok := b.(float64); ok {
			return x - y, nil
		}
	}
	return arith("__sub", "-", a, b, runtime.Subtract)
}

func opMul(a, b any) (any, error) {
	if v, ok, err := checked("*", a, b); ok {
		return v, err
	}
	switch x := a.(type) {
	case float64:
		if y, ok := b.(float64); ok {
			return x * y, nil
		}
	}
	return arith("__mul", "*", a, b, runtime.Multiply)
}

func opDiv(a, b any) (any, error) {
	if y, ok := b.(int); ok && y == 0 {
		if _, ok := a.(int); ok {
			return nil, errors.New("integer division by zero")
		}
	}
	return arith("__div", "/", a, b, func(a, b any) any { return runtime.Divide(a, b) })
}

func opMod(a, b any) (any, error) {
	if x, ok := a.(int); ok {
		if y, ok := b.(int); ok {
			if y == 0 {
				return nil, errors.New("integer division by zero")
			}
			return x % y, nil
		}
	}
	return arith("__mod", "%", a, b, func(a, b any) any { return runtime.Modulo(a, b) })
}

func opPow(a, b any) (any, error) {
	return arith("__pow", "**", a, b, func(a, b any) any { return runtime.Exponent(a, b) })
}

func opNeg(a any) (any, error) {
	switch x := normalize(a).(type) {
	case int:
		if x == math.MinInt {
			return nil, overflow(fmt.Sprintf("-(%d)", x), x)
		}
		return -x, nil
	case float64:
		return -x, nil
	case codec.Decimal:
		return decimalRound("neg", x)
	case time.Duration:
		if x == math.MinInt64 {
			return nil, overflow(fmt.Sprintf("-(%v)", x), x)
		}
		return -x, nil
	case nil:
		return nil, nilArg("__neg", 0)
	}
	return nil, badArg("__neg", 0, a, "a number")
}

// opBool is a condition: nil is false, a bool is itself, anything else is an error.
func opBool(a any) (any, error) {
	switch x := a.(type) {
	case bool:
		return x, nil
	case nil:
		return false, nil
	}
	return nil, badArg("__bool", 0, a, "true or false (or nil)")
}

// opIn is `x in collection`: an element of an array (sluice's equality) or a key of an object; false for
// a nil collection.
func opIn(x, coll any) (any, error) {
	switch c := coll.(type) {
	case nil:
		return false, nil
	case []any:
		for _, e := range c {
			if equal(x, e) {
				return true, nil
			}
		}
		return false, nil
	case map[string]any:
		k, ok := x.(string)
		if !ok {
			return false, nil
		}
		_, ok = c[k]
		return ok, nil
	case map[string]string:
		k, ok := x.(string)
		if !ok {
			return false, nil
		}
		_, ok = c[k]
		return ok, nil
	}
	rv := reflect.ValueOf(coll)
	if rv.Kind() == reflect.Slice {
		for i := range rv.Len() {
			if equal(x, rv.Index(i).Interface()) {
				return true, nil
			}
		}
		return false, nil
	}
	return nil, badArg("__in", 1, coll, "an array or an object")
}

// stringOp runs a string predicate operator: false when either side is nil.
func stringOp(fn string, f func(a, b string) bool) func(a, b any) (any, error) {
	return func(a, b any) (any, error) {
		if a == nil || b == nil {
			return false, nil
		}
		x, ok := a.(string)
		if !ok {
			return nil, badArg(fn, 0, a, "a string")
		}
		y, ok := b.(string)
		if !ok {
			return nil, badArg(fn, 1, b, "a string")
		}
		return f(x, y), nil
	}
}

// regexps caches the patterns of `matches`, which are usually constants.
var regexps struct {
	sync.Mutex
	m map[string]*regexp.Regexp
}

func opMatches(a, b any) (any, error) {
	if a == nil || b == nil {
		return false, nil
	}
	s, ok := a.(string)
	if !ok {
		return nil, badArg("__matches", 0, a, "a string")
	}
	p, ok := b.(string)
	if !ok {
		return nil, badArg("__matches", 1, b, "a regular expression (a string)")
	}
	regexps.Lock()
	re := regexps.m[p]
	regexps.Unlock()
	if re == nil {
		var err error
		if re, err = regexp.Compile(p); err != nil {
			return nil, fmt.Errorf("matches: %s", clipValues(err.Error(), p))
		}
		regexps.Lock()
		if regexps.m == nil || len(regexps.m) > 1000 {
			regexps.m = map[string]*regexp.Regexp{}
		}
		regexps.m[p] = re
		regexps.Unlock()
	}
	return re.MatchString(s), nil
}

// opArray is the array argument of a builtin that iterates: nil is an empty array.
func opArray(a, b any) (any, error) {
	switch x := a.(type) {
	case nil:
		return []any{}, nil
	case []any:
		return x, nil
	}
	if reflect.ValueOf(a).Kind() == reflect.Slice {
		return a, nil
	}
	return nil, badArg("__array", 0, a, "an array")
}

// opGet reads fields: __get(base, "a", "b") is base?.a?.b.
func opGet(args ...any) (any, error) {
	path := make([]string, len(args)-1)
	for i, a := range args[1:] {
		path[i], _ = a.(string)
	}
	return getFields(args[0], path)
}

// getFields is opGet with the field names in a slice: getFields(base, ["a", "b"]) is base?.a?.b. An
// error names the argument of __get it is about (1 for "a").
func getFields(base any, path []string) (any, error) {
	cur := base
	for i := 0; i < len(path) && cur != nil; i++ {
		name := path[i]
		switch m := cur.(type) {
		case map[string]any:
			cur = m[name]
		case map[string]string:
			v, ok := m[name]
			if !ok {
				return nil, nil
			}
			cur = v
		default:
			v, err := safe(func() any { return runtime.Fetch(cur, name) })
			if err != nil {
				return nil, &argError{fn: "__get", arg: i + 1, msg: fmt.Sprintf("is %s, not an object: it has no field %s", show(cur), name)}
			}
			cur = v
		}
	}
	return cur, nil
}
