package transforms

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/builtin"

	"github.com/sluicehq/sluice/transforms/codec"
)

// The functions expressions can call: expr's builtins, each wrapped to follow the value model (values.go),
// and sluice's own. The README's "Transforms" section has the table of every function and how it treats
// nil and each BSON type; TestBuiltinTable checks that table against this one.

// arg kinds a builtin's first argument must have.
const (
	argAny    = iota
	argString // a string
	argArray  // an array
	argObject // an object
	argNumber // an int, float or Decimal
	argInt    // an int
	argKey    // a string or an int (an object's key or an array's index)
	argText   // an array of strings
)

// wrapped describes how an expr builtin is wrapped.
type wrapped struct {
	first int // the kind of the first argument
	// onNil is the result when the first argument is nil.
	onNil any
	// min and max bound the number of arguments (max -1: any).
	min, max int
	// rest, when not argAny, is the kind of every other argument; kinds, when set, are the kinds of the
	// arguments after the first, one each.
	rest  int
	kinds []int
}

// exprBuiltins are expr's builtins (other than those that take a predicate, which the builtins patch
// handles) with how sluice wraps them. Builtins sluice replaces outright are in own.
var exprBuiltins = map[string]wrapped{
	"trim":        {first: argString, min: 1, max: 2, rest: argString},
	"trimPrefix":  {first: argString, min: 2, max: 2, rest: argString},
	"trimSuffix":  {first: argString, min: 2, max: 2, rest: argString},
	"upper":       {first: argString, min: 1, max: 1},
	"lower":       {first: argString, min: 1, max: 1},
	"split":       {first: argString, min: 2, max: 3, kinds: []int{argString, argInt}},
	"splitAfter":  {first: argString, min: 2, max: 3, kinds: []int{argString, argInt}},
	"replace":     {first: argString, min: 3, max: 3, rest: argString},
	"indexOf":     {first: argString, min: 2, max: 2, rest: argString},
	"lastIndexOf": {first: argString, min: 2, max: 2, rest: argString},
	"hasPrefix":   {first: argString, onNil: false, min: 2, max: 2, rest: argString},
	"hasSuffix":   {first: argString, onNil: false, min: 2, max: 2, rest: argString},
	"toBase64":    {first: argString, min: 1, max: 1},
	"fromBase64":  {first: argString, min: 1, max: 1},
	"join":        {first: argText, min: 1, max: 2, rest: argString},
	"first":       {first: argArray, min: 1, max: 1},
	"last":        {first: argArray, min: 1, max: 1},
	"take":        {first: argArray, min: 2, max: 2, rest: argInt},
	"reverse":     {first: argArray, min: 1, max: 1},
	"flatten":     {first: argArray, min: 1, max: 1},
	"get":         {first: argAny, min: 2, max: 2, rest: argKey},
	"keys":        {first: argObject, min: 1, max: 1},
	"values":      {first: argObject, min: 1, max: 1},
	"toPairs":     {first: argObject, min: 1, max: 1},
	"fromPairs":   {first: argArray, min: 1, max: 1},
	"duration":    {first: argString, min: 1, max: 1},
	"timezone":    {first: argString, min: 1, max: 1},
	"now":         {min: 0, max: 0},
	"bitand":      {first: argInt, min: 2, max: 2, rest: argInt},
	"bitor":       {first: argInt, min: 2, max: 2, rest: argInt},
	"bitxor":      {first: argInt, min: 2, max: 2, rest: argInt},
	"bitnand":     {first: argInt, min: 2, max: 2, rest: argInt},
	"bitnot":      {first: argInt, min: 1, max: 1},
	"bitshl":      {first: argInt, min: 2, max: 2, rest: argInt},
	"bitshr":      {first: argInt, min: 2, max: 2, rest: argInt},
	"bitushr":     {first: argInt, min: 2, max: 2, rest: argInt},
}

// own are the functions sluice implements itself, with their argument counts.
var own = map[string]struct {
	fn       func(args ...any) (any, error)
	min, max int
}{
	"len":           {fnLen, 1, 1},
	"type":          {fnType, 1, 1},
	"abs":           {rounding("abs"), 1, 1},
	"ceil":          {rounding("ceil"), 1, 1},
	"floor":         {rounding("floor"), 1, 1},
	"round":         {rounding("round"), 1, 1},
	"int":           {fnInt, 1, 1},
	"float":         {fnFloat, 1, 1},
	"string":        {fnString, 1, 1},
	"max":           {extreme("max", 1), 1, -1},
	"min":           {extreme("min", -1), 1, -1},
	"mean":          {fnMean, 1, -1},
	"median":        {fnMedian, 1, -1},
	"toJSON":        {fnJSON, 1, 1},
	"json":          {fnJSON, 1, 1},
	"fromJSON":      {fnFromJSON, 1, 1},
	"date":          {fnDate, 1, 3},
	"sort":          {fnSort, 1, 2},
	"uniq":          {fnUniq, 1, 1},
	"concat":        {fnConcat, 1, -1},
	"repeat":        {fnRepeat, 2, 2},
	"oid":           {fnOID, 1, 1},
	"decimal":       {fnDecimal, 1, 1},
	"timestamp":     {fnTimestamp, 2, 2},
	"oidTime":       {fnOIDTime, 1, 1},
	"timestampDate": {fnTimestampDate, 1, 1},
}

// unaryOps and binaryOps are the internal functions of one and two arguments the syntax-tree passes call
// (patches.go). Expressions call them directly (directFuncs); internal declares them to expr's checker.
var (
	unaryOps  = map[string]func(a any) (any, error){"__neg": opNeg, "__bool": opBool}
	binaryOps = map[string]func(a, b any) (any, error){
		"__eq": opEq, "__ne": opNe, "__lt": opLt, "__le": opLe, "__gt": opGt, "__ge": opGe,
		"__add": opAdd, "__sub": opSub, "__mul": opMul, "__div": opDiv, "__mod": opMod, "__pow": opPow,
		"__in": opIn, "__array": opArray, "__matches": opMatches,
		"__contains": stringOp("__contains", strings.Contains), "__startsWith": stringOp("__startsWith", strings.HasPrefix),
		"__endsWith": stringOp("__endsWith", strings.HasSuffix),
	}
)

// internal are the functions the syntax-tree passes call (patches.go), in expr's form.
var internal = func() map[string]func(args ...any) (any, error) {
	m := map[string]func(args ...any) (any, error){"__get": opGet, "__sum": fnSum, "__sortBy": fnSortBy}
	for name, f := range unaryOps {
		m[name] = func(args ...any) (any, error) { return f(args[0]) }
	}
	for name, f := range binaryOps {
		m[name] = func(args ...any) (any, error) { return f(args[0], args[1]) }
	}
	return m
}()

// directFuncs are the functions of unaryOps and binaryOps (and __get) as function values of types expr's
// VM calls without allocating: func(any) any, func(any) bool, func(any, any) any, func(any, any) bool.
// A function declared with expr.Function gets its arguments in a slice the VM allocates on every
// evaluation that calls one, which is most of what a small expression costs. An error is raised as a
// panic, which the VM turns into the error it returns, as it does for a declared function's error.
var directFuncs = func() map[string]any {
	m := map[string]any{"__get": func(base, path any) any {
		v, err := getFields(base, path.([]string))
		if err != nil {
			panic(err)
		}
		return v
	}}
	for name, f := range unaryOps {
		if boolFuncs[name] {
			m[name] = func(a any) bool {
				v, err := f(a)
				if err != nil {
					panic(clipErr(err, a))
				}
				return v.(bool)
			}
			continue
		}
		m[name] = func(a any) any {
			v, err := f(a)
			if err != nil {
				panic(clipErr(err, a))
			}
			return v
		}
	}
	for name, f := range binaryOps {
		if boolFuncs[name] {
			m[name] = func(a, b any) bool {
				v, err := f(a, b)
				if err != nil {
					panic(clipErr(err, a, b))
				}
				return v.(bool)
			}
			continue
		}
		m[name] = func(a, b any) any {
			v, err := f(a, b)
			if err != nil {
				panic(clipErr(err, a, b))
			}
			return v
		}
	}
	return m
}()

// valueFuncs are the functions that never give a bool (for the load-time check of conditions).
var valueFuncs = func() map[string]bool {
	m := map[string]bool{}
	for name, w := range exprBuiltins {
		if w.onNil == nil {
			m[name] = true
		}
	}
	for name := range own {
		m[name] = true
	}
	return m
}()

// functions are the expr options declaring every function.
var functions = func() []expr.Option {
	var opts []expr.Option
	for name, w := range exprBuiltins {
		b := builtin.Builtins[builtin.Index[name]]
		if w.onNil == false {
			opts = append(opts, expr.Function(name, wrap(name, b, w), new(func(any, any) bool)))
		} else {
			opts = append(opts, expr.Function(name, wrap(name, b, w)))
		}
	}
	for name, f := range own {
		opts = append(opts, expr.Function(name, clipArgs(f.fn)))
	}
	for name, f := range internal {
		f = clipArgs(f)
		switch {
		case name == "__bool":
			opts = append(opts, expr.Function(name, f, new(func(any) bool)))
			continue
		case boolFuncs[name]:
			opts = append(opts, expr.Function(name, f, new(func(any, any) bool)))
			continue
		}
		opts = append(opts, expr.Function(name, f))
	}
	return opts
}()

// clipArgs wraps a function so that its errors never quote a long argument whole (clipValues); an
// argError, which shows its value shortened already, is returned as it is.
func clipArgs(f func(args ...any) (any, error)) func(args ...any) (any, error) {
	return func(args ...any) (any, error) {
		v, err := f(args...)
		if err == nil {
			return v, nil
		}
		return v, clipErr(err, args...)
	}
}

// clipErr is err with no argument of the call it came from quoted whole (clipValues); an argError, which
// shows its value shortened already, is returned as it is.
func clipErr(err error, args ...any) error {
	var ae *argError
	if errors.As(err, &ae) {
		return err
	}
	msg := err.Error()
	if cut := clipValues(msg, args...); cut != msg {
		return &clipped{msg: cut, err: err}
	}
	return err
}

// isFunction reports whether name is a function sluice declares (every expr builtin it wraps included).
func isFunction(name string) bool {
	_, ok1 := exprBuiltins[name]
	_, ok2 := own[name]
	_, ok3 := internal[name]
	return ok1 || ok2 || ok3
}

// isBuiltin reports whether name is one of expr's builtins that take a predicate (map, filter, …).
func isBuiltin(name string) bool { return iterating[name] || name == "sum" || name == "sortBy" }

// functionList lists every function name users can call, for "did you mean".
func functionList() []string {
	var names []string
	for name := range exprBuiltins {
		names = append(names, name)
	}
	for name := range own {
		names = append(names, name)
	}
	for name := range iterating {
		names = append(names, name)
	}
	names = append(names, "sum", "sortBy")
	slices.Sort(names)
	return names
}

// argCount checks the number of arguments of a call to a function sluice declares; ok is false for
// functions it does not know.
func argCount(name string, n int) (string, bool) {
	min, max := 0, 0
	if w, ok := exprBuiltins[name]; ok {
		min, max = w.min, w.max
	} else if f, ok := own[name]; ok {
		min, max = f.min, f.max
	} else {
		return "", false
	}
	switch {
	case n < min && min == max, n > max && max >= 0 && min == max:
		return fmt.Sprintf("%s() takes %d argument%s, got %d", name, min, plural(min), n), true
	case n < min:
		return fmt.Sprintf("%s() takes at least %d argument%s, got %d", name, min, plural(min), n), true
	case max >= 0 && n > max:
		return fmt.Sprintf("%s() takes at most %d arguments, got %d", name, max, n), true
	}
	return "", true
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// kindOK reports whether v has kind k.
func kindOK(v any, k int) (bool, string) {
	switch k {
	case argString:
		_, ok := v.(string)
		return ok, "a string"
	case argArray:
		if _, ok := v.([]any); ok {
			return true, ""
		}
		return reflect.ValueOf(v).Kind() == reflect.Slice, "an array"
	case argObject:
		switch v.(type) {
		case map[string]any, map[string]string:
			return true, ""
		}
		return false, "an object"
	case argNumber:
		switch v.(type) {
		case int, float64, codec.Decimal:
			return true, ""
		}
		return false, "a number"
	case argInt:
		_, ok := v.(int)
		return ok, "an int"
	case argKey:
		switch v.(type) {
		case string, int:
			return true, ""
		}
		return false, "a string or an int"
	case argText:
		switch x := v.(type) {
		case []string:
			return true, ""
		case []any:
			for _, e := range x {
				if _, ok := e.(string); !ok {
					return false, "an array of strings"
				}
			}
			return true, ""
		}
		return false, "an array of strings"
	}
	return true, ""
}

// wrap wraps an expr builtin: nil first argument → w.onNil; arguments of the wrong kind → an error naming
// them; expr's own failures (panics included) → an error without Go's internals.
func wrap(name string, b *builtin.Function, w wrapped) func(args ...any) (any, error) {
	return func(args ...any) (any, error) {
		if len(args) > 0 && args[0] == nil {
			return w.onNil, nil
		}
		for i, a := range args {
			k := w.rest
			switch {
			case i == 0:
				k = w.first
			case i-1 < len(w.kinds):
				k = w.kinds[i-1]
			}
			if a == nil && i > 0 && k != argAny {
				return nil, nilArg(name, i)
			}
			if ok, want := kindOK(a, k); !ok {
				return nil, badArg(name, i, a, want)
			}
		}
		v, err := safe(func() any {
			switch {
			case b.Fast != nil && len(args) == 1:
				return b.Fast(args[0])
			case b.Func != nil:
				v, err := b.Func(args...)
				if err != nil {
					return callErr{err}
				}
				return v
			case b.Safe != nil:
				v, _, err := b.Safe(args...)
				if err != nil {
					return callErr{err}
				}
				return v
			}
			return callErr{fmt.Errorf("%s() cannot be called this way", name)}
		})
		if err != nil {
			return nil, fmt.Errorf("%s(): %s", name, clipValues(cleanMessage(err.Error()), args...))
		}
		if ce, ok := v.(callErr); ok {
			return nil, fmt.Errorf("%s(): %s", name, clipValues(cleanMessage(ce.err.Error()), args...))
		}
		return v, nil
	}
}

type callErr struct{ err error }

// cleanMessage takes Go's type names out of an expr message.
func cleanMessage(msg string) string {
	r := strings.NewReplacer("map[string]interface {}", "object", "[]interface {}", "array", "interface {}", "value",
		"<nil>", "nil", "float64", "float", "codec.", "", "time.Time", "date", "time.Duration", "duration")
	return r.Replace(msg)
}

func fnLen(args ...any) (any, error) {
	switch x := args[0].(type) {
	case nil:
		return 0, nil
	case string:
		return utf8.RuneCountInString(x), nil
	case []any:
		return len(x), nil
	case map[string]any:
		return len(x), nil
	case codec.Binary:
		return len(x.Data), nil
	}
	rv := reflect.ValueOf(args[0])
	switch rv.Kind() {
	case reflect.Slice, reflect.Map:
		return rv.Len(), nil
	}
	return nil, badArg("len", 0, args[0], "a string, an array, an object or Binary")
}

func fnType(args ...any) (any, error) { return typeName(args[0]), nil }

// rounding returns abs, ceil, floor or round: nil gives nil, a Decimal stays Decimal.
func rounding(name string) func(args ...any) (any, error) {
	return func(args ...any) (any, error) {
		switch x := args[0].(type) {
		case nil:
			return nil, nil
		case int:
			if name == "abs" && x < 0 {
				if x == math.MinInt {
					return nil, overflow(fmt.Sprintf("abs(%d)", x), x)
				}
				return -x, nil
			}
			return x, nil
		case float64:
			switch name {
			case "abs":
				return math.Abs(x), nil
			case "ceil":
				return math.Ceil(x), nil
			case "floor":
				return math.Floor(x), nil
			}
			return math.Round(x), nil
		case codec.Decimal:
			return decimalRound(name, x)
		}
		return nil, badArg(name, 0, args[0], "a number")
	}
}

// elements returns the values an aggregate works on: its arguments, or the elements of its one array
// argument; nils are left out. ok is false when the only argument is nil.
func elements(name string, args []any) ([]any, bool, error) {
	list := args
	if len(args) == 1 {
		switch x := args[0].(type) {
		case nil:
			return nil, false, nil
		case []any:
			list = x
		default:
			rv := reflect.ValueOf(x)
			if rv.Kind() == reflect.Slice {
				list = make([]any, rv.Len())
				for i := range list {
					list[i] = rv.Index(i).Interface()
				}
			}
		}
	}
	out := make([]any, 0, len(list))
	for _, v := range list {
		if v != nil {
			out = append(out, v)
		}
	}
	return out, true, nil
}

// extreme returns max (sign 1) or min (sign -1).
func extreme(name string, sign int) func(args ...any) (any, error) {
	return func(args ...any) (any, error) {
		list, ok, err := elements(name, args)
		if !ok || err != nil || len(list) == 0 {
			return nil, err
		}
		best := list[0]
		for _, v := range list[1:] {
			c, err := compare(v, best)
			if err != nil {
				return nil, fmt.Errorf("%s(): %s and %s have no order", name, show(v), show(best))
			}
			if c*sign > 0 {
				best = v
			}
		}
		return best, nil
	}
}

// fnSum adds the elements of an array (nil elements skipped): ints give an int, a float makes a float, a
// Decimal a Decimal; an empty array gives 0.
func fnSum(args ...any) (any, error) {
	list, _, _ := elements("sum", args[:1])
	var total any = 0
	for _, v := range list {
		switch v.(type) {
		case int, float64, codec.Decimal:
		default:
			return nil, fmt.Errorf("sum(): %s is not a number", show(v))
		}
		var err error
		if total, err = opAdd(total, v); err != nil {
			return nil, fmt.Errorf("sum(): %v", err)
		}
	}
	return total, nil
}

func fnMean(args ...any) (any, error) {
	list, ok, err := elements("mean", args)
	if !ok || err != nil || len(list) == 0 {
		return nil, err
	}
	total, err := fnSum(list)
	if err != nil {
		return nil, errors.New(strings.Replace(err.Error(), "sum()", "mean()", 1))
	}
	if d, ok := total.(codec.Decimal); ok {
		return decimalOp("/", d, len(list))
	}
	f, _ := fnFloat(total)
	return f.(float64) / float64(len(list)), nil
}

func fnMedian(args ...any) (any, error) {
	list, ok, err := elements("median", args)
	if !ok || err != nil || len(list) == 0 {
		return nil, err
	}
	sorted, err := sortValues("median", list, false)
	if err != nil {
		return nil, err
	}
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2], nil
	}
	return fnMean(sorted[n/2-1], sorted[n/2])
}

// sortValues sorts a copy of list with sluice's order, nils first.
func sortValues(name string, list []any, desc bool) ([]any, error) {
	out := slices.Clone(list)
	var bad error
	sort.SliceStable(out, func(i, j int) bool {
		c, err := compareNil(out[i], out[j])
		if err != nil && bad == nil {
			bad = fmt.Errorf("%s(): %s and %s have no order", name, show(out[i]), show(out[j]))
		}
		if desc {
			return c > 0
		}
		return c < 0
	})
	return out, bad
}

// compareNil is compare with nil before everything.
func compareNil(a, b any) (int, error) {
	switch {
	case a == nil && b == nil:
		return 0, nil
	case a == nil:
		return -1, nil
	case b == nil:
		return 1, nil
	}
	return compare(a, b)
}

func sortOrder(name string, args []any, at int) (bool, error) {
	if len(args) <= at {
		return false, nil
	}
	switch args[at] {
	case "asc":
		return false, nil
	case "desc":
		return true, nil
	}
	return false, &argError{fn: name, arg: at, msg: fmt.Sprintf("is %s, want \"asc\" or \"desc\"", show(args[at]))}
}

func fnSort(args ...any) (any, error) {
	if args[0] == nil {
		return nil, nil
	}
	list, ok := args[0].([]any)
	if !ok {
		l, _, _ := elements("sort", args[:1])
		if ok, want := kindOK(args[0], argArray); !ok {
			return nil, badArg("sort", 0, args[0], want)
		}
		list = l
	}
	desc, err := sortOrder("sort", args, 1)
	if err != nil {
		return nil, err
	}
	return sortValues("sort", list, desc)
}

// fnSortBy is sortBy(array, key, order): its first argument holds each element with its key, as pairs.
func fnSortBy(args ...any) (any, error) {
	pairs, _ := args[0].([]any)
	desc, err := sortOrder("__sortBy", args, 1)
	if err != nil {
		return nil, err
	}
	var bad error
	sorted := slices.Clone(pairs)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i].([]any)[1], sorted[j].([]any)[1]
		c, err := compareNil(a, b)
		if err != nil && bad == nil {
			bad = fmt.Errorf("sortBy(): keys %s and %s have no order", show(a), show(b))
		}
		if desc {
			return c > 0
		}
		return c < 0
	})
	out := make([]any, len(sorted))
	for i, p := range sorted {
		out[i] = p.([]any)[0]
	}
	return out, bad
}

func fnUniq(args ...any) (any, error) {
	if args[0] == nil {
		return nil, nil
	}
	if ok, want := kindOK(args[0], argArray); !ok {
		return nil, badArg("uniq", 0, args[0], want)
	}
	list, _, _ := elements("uniq", args)
	var out []any
	for _, v := range list {
		if !slices.ContainsFunc(out, func(u any) bool { return equal(u, v) }) {
			out = append(out, v)
		}
	}
	if out == nil {
		out = []any{}
	}
	return out, nil
}

// fnConcat joins arrays; nil arguments count as empty arrays.
func fnConcat(args ...any) (any, error) {
	out := []any{}
	for i, a := range args {
		if a == nil {
			continue
		}
		if ok, want := kindOK(a, argArray); !ok {
			return nil, badArg("concat", i, a, want)
		}
		l, _, _ := elements("concat", []any{a})
		out = append(out, l...)
	}
	return out, nil
}

// maxRepeat bounds the string repeat() builds.
const maxRepeat = 64 << 10

func fnRepeat(args ...any) (any, error) {
	if args[0] == nil {
		return nil, nil
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, badArg("repeat", 0, args[0], "a string")
	}
	n, ok := args[1].(int)
	if !ok {
		return nil, badArg("repeat", 1, args[1], "an int")
	}
	if n < 0 || len(s) > 0 && n > maxRepeat/len(s) {
		return nil, fmt.Errorf("repeat(): the result would exceed %d bytes", maxRepeat)
	}
	return strings.Repeat(s, n), nil
}

func fnOID(args ...any) (any, error) {
	switch x := args[0].(type) {
	case nil:
		return nil, nil
	case codec.ObjectID:
		return x, nil
	case string:
		return codec.ParseObjectID(x)
	}
	return nil, badArg("oid", 0, args[0], "a 24-digit hex string")
}

func fnDecimal(args ...any) (any, error) {
	switch v := args[0].(type) {
	case nil:
		return nil, nil
	case codec.Decimal:
		return v, nil
	case string:
		return codec.ParseDecimal(strings.TrimSpace(v))
	case int:
		return codec.ParseDecimal(strconv.Itoa(v))
	case float64:
		return codec.ParseDecimal(strconv.FormatFloat(v, 'g', -1, 64))
	}
	return nil, badArg("decimal", 0, args[0], "a string or a number")
}

func fnTimestamp(args ...any) (any, error) {
	t, ok1 := args[0].(int)
	i, ok2 := args[1].(int)
	if !ok1 || !ok2 || t < 0 || i < 0 || t > math.MaxUint32 || i > math.MaxUint32 {
		return nil, errors.New("timestamp() wants two non-negative 32-bit integers (seconds, increment)")
	}
	return codec.Timestamp{T: uint32(t), I: uint32(i)}, nil
}

// fnOIDTime is the creation time an ObjectID (or its hex form) holds.
func fnOIDTime(args ...any) (any, error) {
	switch x := args[0].(type) {
	case nil:
		return nil, nil
	case codec.ObjectID:
		return x.Time(), nil
	case string:
		id, err := codec.ParseObjectID(x)
		if err != nil {
			return nil, badArg("oidTime", 0, x, "an ObjectID")
		}
		return id.Time(), nil
	}
	return nil, badArg("oidTime", 0, args[0], "an ObjectID")
}

// fnTimestampDate is a Timestamp's seconds as a date.
func fnTimestampDate(args ...any) (any, error) {
	switch x := args[0].(type) {
	case nil:
		return nil, nil
	case codec.Timestamp:
		return x.Time(), nil
	}
	return nil, badArg("timestampDate", 0, args[0], "a Timestamp")
}

// fnJSON is x as relaxed Extended JSON text (keys of objects sorted); nil is "null".
func fnJSON(args ...any) (any, error) {
	b, err := codec.AppendJSON(nil, args[0])
	if err != nil {
		return nil, fmt.Errorf("json(): %v", err)
	}
	return string(b), nil
}

// fnFromJSON parses JSON or Extended JSON text; nil gives nil.
func fnFromJSON(args ...any) (any, error) {
	switch x := args[0].(type) {
	case nil:
		return nil, nil
	case string:
		v, err := codec.DecodeJSONValue([]byte(x))
		if err != nil {
			return nil, fmt.Errorf("fromJSON(): %v", err)
		}
		return v, nil
	}
	return nil, badArg("fromJSON", 0, args[0], "a string")
}

// fnDate is expr's date(): nil gives nil and a date is itself.
func fnDate(args ...any) (any, error) {
	switch x := args[0].(type) {
	case nil:
		return nil, nil
	case time.Time:
		if len(args) == 1 {
			return x, nil
		}
		return nil, &argError{fn: "date", arg: 0, msg: "is a date already; date(text, layout) parses text"}
	case codec.ObjectID:
		return nil, &argError{fn: "date", arg: 0, msg: "is an ObjectID: use oidTime(x) for its creation time"}
	case codec.Timestamp:
		return nil, &argError{fn: "date", arg: 0, msg: "is a Timestamp: use timestampDate(x)"}
	case string:
	default:
		return nil, badArg("date", 0, args[0], "a string")
	}
	return wrap("date", builtin.Builtins[builtin.Index["date"]], wrapped{min: 1, max: 3, rest: argString})(args...)
}

func fnInt(args ...any) (any, error) {
	switch v := args[0].(type) {
	case nil:
		return nil, nil
	case int:
		return v, nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) || v >= math.MaxInt64 || v < math.MinInt64 {
			return nil, badArg("int", 0, v, "a number that fits in an int")
		}
		return int(v), nil
	case codec.Decimal:
		f := v.Float64()
		if math.IsNaN(f) || math.IsInf(f, 0) || f >= math.MaxInt64 || f < math.MinInt64 {
			return nil, badArg("int", 0, v, "a number that fits in an int")
		}
		d, _ := decimalRound("floor", v)
		if v.Float64() < 0 {
			d, _ = decimalRound("ceil", v)
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(d.(codec.Decimal).String(), ".0"), 10, 64)
		if err != nil {
			return int(f), nil
		}
		return int(n), nil
	case codec.Timestamp:
		return int(v.T), nil
	case time.Duration:
		return int(v), nil
	case string:
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
			return n, nil
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return nil, badArg("int", 0, v, "a number")
		}
		if math.IsNaN(f) || math.IsInf(f, 0) || f >= math.MaxInt64 || f < math.MinInt64 {
			return nil, badArg("int", 0, v, "a number that fits in an int")
		}
		return int(f), nil
	case bool:
		if v {
			return 1, nil
		}
		return 0, nil
	}
	if n, ok := codec.AsInt(args[0]); ok {
		return n, nil
	}
	return nil, badArg("int", 0, args[0], "a number, a string or a bool")
}

func fnFloat(args ...any) (any, error) {
	switch v := args[0].(type) {
	case nil:
		return nil, nil
	case float64:
		return v, nil
	case int:
		return float64(v), nil
	case codec.Decimal:
		return v.Float64(), nil
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return nil, badArg("float", 0, v, "a number")
		}
		return f, nil
	}
	if n, ok := codec.AsInt(args[0]); ok {
		return float64(n), nil
	}
	if f, ok := args[0].(float32); ok {
		return float64(f), nil
	}
	return nil, badArg("float", 0, args[0], "a number or a string")
}

// fnString converts a value to text: nil stays nil.
func fnString(args ...any) (any, error) {
	if args[0] == nil {
		return nil, nil
	}
	return toText(args[0])
}

// toText is a value as text: strings as they are, numbers in their shortest form, dates in RFC 3339 with
// milliseconds (UTC), ObjectIDs in hex, Decimals in their canonical text, Binary as its UUID or base64,
// objects and arrays as relaxed Extended JSON.
func toText(v any) (string, error) {
	switch t := v.(type) {
	case string:
		return t, nil
	case int:
		return strconv.Itoa(t), nil
	case float64:
		return strconv.FormatFloat(t, 'g', -1, 64), nil
	case bool:
		return strconv.FormatBool(t), nil
	case time.Time:
		return t.UTC().Format("2006-01-02T15:04:05.000Z07:00"), nil
	case codec.ObjectID, codec.Decimal, codec.Binary, codec.Timestamp, codec.Regex, time.Duration:
		return fmt.Sprint(t), nil
	case codec.Code:
		return string(t), nil
	}
	if s, ok := v.(fmt.Stringer); ok {
		return s.String(), nil
	}
	b, err := codec.AppendJSON(nil, v)
	if err != nil {
		return "", err
	}
	return string(b), nil
}
