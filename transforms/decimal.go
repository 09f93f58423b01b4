package transforms

import (
	"fmt"
	"math"
	"strconv"

	"github.com/cockroachdb/apd/v3"

	"github.com/sluicehq/sluice/transforms/codec"
)

// Decimal arithmetic. MongoDB's Decimal128 (IEEE 754-2008 decimal128) holds 34 significant digits and
// exponents from -6176 to 6111; arithmetic on it is done with cockroachdb/apd in a context with the same
// precision, exponent range and rounding (half even), so results are what MongoDB would compute and always
// fit back into a Decimal128. See docs/decisions/2026-11-30-transforms-values.md.

// decimal128 is the arithmetic context of Decimal128.
var decimal128 = apd.Context{
	Precision:   34,
	MaxExponent: 6144,
	MinExponent: -6143,
	Rounding:    apd.RoundHalfEven,
	Traps:       apd.Overflow | apd.DivisionByZero | apd.DivisionUndefined | apd.DivisionImpossible | apd.InvalidOperation,
}

// toApd converts a Decimal, int or float to an apd decimal; a float is taken by its shortest decimal form
// (what the user wrote: 0.1 is 0.1). ok is false for other types.
func toApd(v any) (*apd.Decimal, bool) {
	var s string
	switch x := v.(type) {
	case codec.Decimal:
		s = x.String()
	case int:
		return apd.New(int64(x), 0), true
	case float64:
		switch {
		case math.IsNaN(x):
			s = "NaN"
		case math.IsInf(x, 1):
			s = "Infinity"
		case math.IsInf(x, -1):
			s = "-Infinity"
		default:
			s = strconv.FormatFloat(x, 'g', -1, 64)
		}
	default:
		return nil, false
	}
	d, _, err := apd.NewFromString(s)
	if err != nil {
		return nil, false
	}
	return d, true
}

// fromApd converts an apd result to a Decimal.
func fromApd(d *apd.Decimal) (codec.Decimal, error) {
	return codec.ParseDecimal(d.String())
}

// decimalOp applies a Decimal operation to a and b (Decimal, int or float; at least one a Decimal).
func decimalOp(op string, a, b any) (any, error) {
	x, ok1 := toApd(a)
	y, ok2 := toApd(b)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("invalid operation: %s %s %s", typeName(a), op, typeName(b))
	}
	var z apd.Decimal
	var err error
	switch op {
	case "+":
		_, err = decimal128.Add(&z, x, y)
	case "-":
		_, err = decimal128.Sub(&z, x, y)
	case "*":
		_, err = decimal128.Mul(&z, x, y)
	case "/":
		_, err = decimal128.Quo(&z, x, y)
	case "%":
		_, err = decimal128.Rem(&z, x, y)
	case "**":
		_, err = decimal128.Pow(&z, x, y)
	default:
		return nil, fmt.Errorf("invalid operation: Decimal %s", op)
	}
	if err != nil {
		return nil, fmt.Errorf("Decimal %s %s %s: %v", x, op, y, err) //nolint:staticcheck // ST1005: Decimal is the type's name
	}
	return fromApd(&z)
}

// decimalRound applies ceil, floor, round (half away from zero, as expr's round) or abs to a Decimal.
func decimalRound(fn string, d codec.Decimal) (any, error) {
	x, _ := toApd(d)
	var z apd.Decimal
	var err error
	switch fn {
	case "abs":
		_, err = decimal128.Abs(&z, x)
	case "ceil":
		_, err = decimal128.Ceil(&z, x)
	case "floor":
		_, err = decimal128.Floor(&z, x)
	case "round":
		c := decimal128
		c.Rounding = apd.RoundHalfUp
		_, err = c.RoundToIntegralValue(&z, x)
	case "neg":
		_, err = decimal128.Neg(&z, x)
	}
	if err != nil {
		return nil, fmt.Errorf("%s(%s): %v", fn, d, err)
	}
	return fromApd(&z)
}

// compareDecimal compares a Decimal exactly with a Decimal, int or float64. ok is false for other types
// and when either side is NaN.
func compareDecimal(x codec.Decimal, b any) (int, bool) {
	xd, _ := toApd(x)
	yd, ok := toApd(b)
	if !ok || xd == nil || xd.Form == apd.NaN || xd.Form == apd.NaNSignaling || yd.Form == apd.NaN || yd.Form == apd.NaNSignaling {
		return 0, false
	}
	return xd.Cmp(yd), true
}
