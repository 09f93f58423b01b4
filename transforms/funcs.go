package transforms

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm/runtime"
)

// Helper functions available in expressions, beside expr's builtins (len, lower, upper, trim, split,
// hasPrefix, now, date, duration, …; see https://expr-lang.org/docs/language-definition).
//
//	oid(hex)          ObjectID from its 24-character hex form
//	decimal(x)        Decimal (Decimal128) from a string or number, exact for strings
//	timestamp(t, i)   BSON Timestamp (as in clusterTime)
//	json(x)           x as relaxed Extended JSON text (keys sorted), e.g. for keys: json(documentKey)
//	int(x), float(x)  like expr's, and also accept Decimal and Timestamp (its seconds)
//	string(x)         expr's: ObjectID gives its hex, Decimal its text, dates RFC 3339
var functions = []expr.Option{
	expr.Function("oid", fnOID, new(func(string) ObjectID)),
	expr.Function("decimal", fnDecimal),
	expr.Function("timestamp", fnTimestamp),
	expr.Function("json", fnJSON, new(func(any) string)),
	expr.Function("int", fnInt, new(func(any) int)),
	expr.Function("float", fnFloat, new(func(any) float64)),
	expr.Function("__eq", opEq, new(func(any, any) bool)),
	expr.Function("__ne", opNe, new(func(any, any) bool)),
	expr.Function("__lt", opLt, new(func(any, any) bool)),
	expr.Function("__le", opLe, new(func(any, any) bool)),
	expr.Function("__gt", opGt, new(func(any, any) bool)),
	expr.Function("__ge", opGe, new(func(any, any) bool)),
	expr.Function("__add", opAdd),
	expr.Function("__sub", opSub),
	expr.Function("__mul", opMul),
	expr.Function("__div", opDiv),
	// expr's repeat can build a string of any size from a short expression; this one is bounded.
	expr.Function("repeat", fnRepeat, new(func(string, int) string)),
}

// maxRepeat bounds the string repeat() builds.
const maxRepeat = 64 << 10

func fnRepeat(args ...any) (any, error) {
	s, _ := args[0].(string)
	n, _ := args[1].(int)
	if n < 0 || len(s) > 0 && n > maxRepeat/len(s) {
		return nil, fmt.Errorf("repeat(): the result would exceed %d bytes", maxRepeat)
	}
	return strings.Repeat(s, n), nil
}

var functionNames = map[string]bool{"oid": true, "decimal": true, "timestamp": true, "json": true,
	"int": true, "float": true, "repeat": true}

func isFunction(name string) bool { return functionNames[name] || strings.HasPrefix(name, "__") }

func fnOID(args ...any) (any, error) {
	s, ok := args[0].(string)
	if !ok {
		if id, ok := args[0].(ObjectID); ok {
			return id, nil
		}
		return nil, fmt.Errorf("oid() wants a hex string, got %s", typeName(args[0]))
	}
	return ParseObjectID(s)
}

func fnDecimal(args ...any) (any, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("decimal() takes 1 argument, got %d", len(args))
	}
	switch v := args[0].(type) {
	case Decimal:
		return v, nil
	case string:
		return ParseDecimal(v)
	case int:
		return ParseDecimal(strconv.Itoa(v))
	case float64:
		return ParseDecimal(strconv.FormatFloat(v, 'g', -1, 64))
	}
	return nil, fmt.Errorf("decimal() wants a string or a number, got %s", typeName(args[0]))
}

func fnTimestamp(args ...any) (any, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("timestamp() takes 2 arguments (seconds, increment), got %d", len(args))
	}
	t, ok1 := args[0].(int)
	i, ok2 := args[1].(int)
	if !ok1 || !ok2 || t < 0 || i < 0 || t > math.MaxUint32 || i > math.MaxUint32 {
		return nil, errors.New("timestamp() wants two non-negative 32-bit integers")
	}
	return Timestamp{T: uint32(t), I: uint32(i)}, nil
}

func fnJSON(args ...any) (any, error) {
	b, err := EncodeJSON(nil, map[string]any{"v": args[0]})
	if err != nil {
		return nil, err
	}
	// Strip the {"v": … } wrapper: the encoder writes objects only.
	b = bytes.TrimSuffix(bytes.TrimPrefix(b, []byte(`{"v":`)), []byte("}"))
	return string(b), nil
}

func fnInt(args ...any) (any, error) {
	switch v := args[0].(type) {
	case int:
		return v, nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("int(): cannot convert %v", v)
		}
		return int(v), nil
	case Decimal:
		f := v.Float64()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("int(): cannot convert %s", v)
		}
		return int(f), nil
	case Timestamp:
		return int(v.T), nil
	case string:
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
			return n, nil
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return nil, fmt.Errorf("int(): %q is not a number", v)
		}
		return int(f), nil
	case bool:
		if v {
			return 1, nil
		}
		return 0, nil
	case nil:
		return nil, errors.New("int(): the value is nil (a missing field?)")
	}
	if n, ok := toInt(args[0]); ok {
		return n, nil
	}
	return nil, fmt.Errorf("int(): cannot convert %s", typeName(args[0]))
}

func fnFloat(args ...any) (any, error) {
	switch v := args[0].(type) {
	case float64:
		return v, nil
	case int:
		return float64(v), nil
	case Decimal:
		return v.Float64(), nil
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return nil, fmt.Errorf("float(): %q is not a number", v)
		}
		return f, nil
	case nil:
		return nil, errors.New("float(): the value is nil (a missing field?)")
	}
	if n, ok := toInt(args[0]); ok {
		return float64(n), nil
	}
	if f, ok := args[0].(float32); ok {
		return float64(f), nil
	}
	return nil, fmt.Errorf("float(): cannot convert %s", typeName(args[0]))
}

// toInt converts Go's other integer types, which expressions may produce through builtins.
func toInt(v any) (int, bool) {
	switch n := v.(type) {
	case int8:
		return int(n), true
	case int16:
		return int(n), true
	case int32:
		return int(n), true
	case int64:
		return int(n), true
	case uint8:
		return int(n), true
	case uint16:
		return int(n), true
	case uint32:
		return int(n), true
	case uint64:
		if n <= math.MaxInt64 {
			return int(n), true
		}
	case uint:
		if n <= math.MaxInt64 {
			return int(n), true
		}
	}
	return 0, false
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
	case ObjectID:
		return "ObjectID"
	case Decimal:
		return "Decimal"
	case time.Time:
		return "date"
	case Timestamp:
		return "Timestamp"
	case Binary:
		return "Binary"
	}
	return fmt.Sprintf("%T", v)
}

// The operators. Each handles the common cases directly and sluice's own types (Decimal, ObjectID,
// Timestamp, nil) specially, and otherwise behaves as expr's operator does.

func opEq(args ...any) (any, error) { return equal(args[0], args[1]), nil }
func opNe(args ...any) (any, error) { return !equal(args[0], args[1]), nil }

func equal(a, b any) bool {
	switch x := a.(type) {
	case string:
		switch y := b.(type) {
		case string:
			return x == y
		case ObjectID:
			return x == y.String()
		}
	case int:
		if y, ok := b.(int); ok {
			return x == y
		}
	case ObjectID:
		switch y := b.(type) {
		case ObjectID:
			return x == y
		case string:
			return x.String() == y
		}
		return false
	case Timestamp:
		y, ok := b.(Timestamp)
		return ok && x == y
	case Decimal:
		c, ok := compareDecimal(x, b)
		return ok && c == 0
	case nil:
		return b == nil
	}
	switch b.(type) {
	case nil:
		return false
	case ObjectID, Timestamp:
		return equal(b, a)
	case Decimal:
		c, ok := compareDecimal(b.(Decimal), a)
		return ok && c == 0
	}
	return runtime.Equal(normalize(a), normalize(b))
}

// normalize turns values of named basic types (time.Month, time.Weekday, …), which methods like
// created.Month() return, into int, float64 or string, so that they compare with literals.
func normalize(v any) any {
	switch v.(type) {
	case int, float64, string, bool, nil:
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

// order compares a and b for <, <=, >, >=. ok is false when either is nil: an ordering comparison with a
// missing value is false, whichever the operator.
func order(a, b any, op string) (c int, ok bool, err error) {
	if a == nil || b == nil {
		return 0, false, nil
	}
	switch x := a.(type) {
	case int:
		switch y := b.(type) {
		case int:
			return cmp3(x < y, x > y), true, nil
		case float64:
			return cmp3(float64(x) < y, float64(x) > y), true, nil
		}
	case float64:
		switch y := b.(type) {
		case float64:
			return cmp3(x < y, x > y), true, nil
		case int:
			return cmp3(x < float64(y), x > float64(y)), true, nil
		}
	case string:
		if y, ok := b.(string); ok {
			return strings.Compare(x, y), true, nil
		}
	case Decimal:
		if c, ok := compareDecimal(x, b); ok {
			return c, true, nil
		}
		return 0, false, fmt.Errorf("invalid operation: Decimal %s %s", op, typeName(b))
	case ObjectID:
		if y, ok := b.(ObjectID); ok {
			return bytes.Compare(x[:], y[:]), true, nil
		}
		return 0, false, fmt.Errorf("invalid operation: ObjectID %s %s", op, typeName(b))
	case Timestamp:
		if y, ok := b.(Timestamp); ok {
			return cmpTimestamp(x, y), true, nil
		}
		return 0, false, fmt.Errorf("invalid operation: Timestamp %s %s", op, typeName(b))
	}
	if y, ok := b.(Decimal); ok {
		if c, ok := compareDecimal(y, a); ok {
			return -c, true, nil
		}
	}
	switch b.(type) {
	case Decimal, ObjectID, Timestamp:
		return 0, false, fmt.Errorf("invalid operation: %s %s %s", typeName(a), op, typeName(b))
	}
	a, b = normalize(a), normalize(b)
	if x, ok := a.(int); ok {
		if y, ok := b.(int); ok {
			return cmp3(x < y, x > y), true, nil
		}
	}
	less, err := safe(func() bool { return runtime.Less(a, b) })
	if err != nil {
		return 0, false, fmt.Errorf("invalid operation: %s %s %s", typeName(a), op, typeName(b))
	}
	if less {
		return -1, true, nil
	}
	if runtime.Equal(a, b) {
		return 0, true, nil
	}
	return 1, true, nil
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

func cmpTimestamp(x, y Timestamp) int {
	if x.T != y.T {
		return cmp3(x.T < y.T, x.T > y.T)
	}
	return cmp3(x.I < y.I, x.I > y.I)
}

// compareDecimal compares a Decimal exactly with a Decimal, int or float64.
func compareDecimal(x Decimal, b any) (int, bool) {
	xr := x.Rat()
	var yr *big.Rat
	switch y := b.(type) {
	case Decimal:
		yr = y.Rat()
	case int:
		yr = new(big.Rat).SetInt64(int64(y))
	case float64:
		if math.IsNaN(y) || math.IsInf(y, 0) {
			return 0, false
		}
		// The float's shortest decimal form: what the user wrote (0.1 compares equal to Decimal 0.1).
		yr, _ = new(big.Rat).SetString(strconv.FormatFloat(y, 'g', -1, 64))
	default:
		return 0, false
	}
	if xr == nil || yr == nil { // NaN or infinities
		return 0, false
	}
	return xr.Cmp(yr), true
}

func safe[T any](f func() T) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return f(), nil
}

func opLt(args ...any) (any, error) {
	c, ok, err := order(args[0], args[1], "<")
	return ok && c < 0, err
}

func opLe(args ...any) (any, error) {
	c, ok, err := order(args[0], args[1], "<=")
	return ok && c <= 0, err
}

func opGt(args ...any) (any, error) {
	c, ok, err := order(args[0], args[1], ">")
	return ok && c > 0, err
}

func opGe(args ...any) (any, error) {
	c, ok, err := order(args[0], args[1], ">=")
	return ok && c >= 0, err
}

// arith runs an arithmetic operator. A Decimal operand is converted to float (documented: arithmetic on
// Decimal128 gives a float; use decimal() to get a Decimal back). nil operands are an error naming the
// operator, since a missing field most likely means a wrong path.
func arith(op string, a, b any, f func(a, b any) any) (any, error) {
	if a == nil || b == nil {
		return nil, fmt.Errorf("invalid operation: %s %s %s (a missing field?)", typeName(a), op, typeName(b))
	}
	if x, ok := a.(Decimal); ok {
		a = x.Float64()
	}
	if y, ok := b.(Decimal); ok {
		b = y.Float64()
	}
	v, err := safe(func() any { return f(a, b) })
	if err != nil {
		return nil, fmt.Errorf("invalid operation: %s %s %s", typeName(a), op, typeName(b))
	}
	return v, nil
}

func opAdd(args ...any) (any, error) {
	switch x := args[0].(type) {
	case int:
		if y, ok := args[1].(int); ok {
			return x + y, nil
		}
	case float64:
		if y, ok := args[1].(float64); ok {
			return x + y, nil
		}
	case string:
		if y, ok := args[1].(string); ok {
			return x + y, nil
		}
	}
	return arith("+", args[0], args[1], runtime.Add)
}

func opSub(args ...any) (any, error) {
	switch x := args[0].(type) {
	case int:
		if y, ok := args[1].(int); ok {
			return x - y, nil
		}
	case float64:
		if y, ok := args[1].(float64); ok {
			return x - y, nil
		}
	}
	return arith("-", args[0], args[1], runtime.Subtract)
}

func opMul(args ...any) (any, error) {
	switch x := args[0].(type) {
	case int:
		if y, ok := args[1].(int); ok {
			return x * y, nil
		}
	case float64:
		if y, ok := args[1].(float64); ok {
			return x * y, nil
		}
	}
	return arith("*", args[0], args[1], runtime.Multiply)
}

func opDiv(args ...any) (any, error) {
	if y, ok := args[1].(int); ok && y == 0 {
		if _, ok := args[0].(int); ok {
			return nil, errors.New("integer division by zero")
		}
	}
	return arith("/", args[0], args[1], func(a, b any) any { return runtime.Divide(a, b) })
}
