package transforms

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/transforms/codec"
)

// Diff compares two decoded values and describes each difference on one line, as "path: want X, got Y",
// with each value's type when the types differ. It returns nil when they are equal. Numbers are equal only
// when both value and type are (15000 and 15000.0 differ: a sink would see the difference); dates compare
// as instants.
func Diff(want, got any) []string {
	var out []string
	diff(&out, "", want, got)
	return out
}

func diff(out *[]string, path string, want, got any) {
	where := path
	if where == "" {
		where = "(document)"
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			*out = append(*out, fmt.Sprintf("%s: want an object, got %s", where, showValue(got)))
			return
		}
		keys := make([]string, 0, len(w)+len(g))
		for k := range w {
			keys = append(keys, k)
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			wv, wok := w[k]
			gv, gok := g[k]
			p := k
			if path != "" {
				p = path + "." + k
			}
			switch {
			case !gok:
				*out = append(*out, fmt.Sprintf("%s: missing, want %s", p, showValue(wv)))
			case !wok:
				*out = append(*out, fmt.Sprintf("%s: unexpected, got %s", p, showValue(gv)))
			default:
				diff(out, p, wv, gv)
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok {
			*out = append(*out, fmt.Sprintf("%s: want an array, got %s", where, showValue(got)))
			return
		}
		if len(w) != len(g) {
			*out = append(*out, fmt.Sprintf("%s: want %d elements, got %d: %s", where, len(w), len(g), showValue(got)))
			return
		}
		for i := range w {
			diff(out, path+"["+strconv.Itoa(i)+"]", w[i], g[i])
		}
	default:
		if !sameValue(want, got) {
			*out = append(*out, fmt.Sprintf("%s: want %s, got %s", where, showValue(want), showValue(got)))
		}
	}
}

func sameValue(want, got any) bool {
	if wt, ok := want.(time.Time); ok {
		gt, ok := got.(time.Time)
		return ok && wt.Equal(gt)
	}
	if wb, ok := want.(codec.Binary); ok {
		gb, ok := got.(codec.Binary)
		return ok && wb.Subtype == gb.Subtype && string(wb.Data) == string(gb.Data)
	}
	if wd, ok := want.(codec.Decimal); ok {
		gd, ok := got.(codec.Decimal)
		if !ok {
			return false
		}
		c, ok := compareDecimal(wd, gd)
		return ok && c == 0 || wd.String() == gd.String()
	}
	if wf, ok := want.(float64); ok {
		gf, ok := got.(float64)
		if !ok {
			return false
		}
		if math.IsNaN(wf) && math.IsNaN(gf) {
			return true
		}
	}
	if _, ok := want.(int); ok {
		if _, ok := got.(int); !ok {
			return false
		}
	}
	return equal(want, got)
}

// showValue prints a value with its type: `15000 (int)`, `"abc" (string)`, `{"a":1} (object)`.
func showValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(x) + " (string)"
	case map[string]any, []any:
		s, err := toText(v)
		if err != nil {
			return fmt.Sprint(v)
		}
		return s
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano) + " (date)"
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64) + " (float)"
	}
	return fmt.Sprintf("%v (%s)", v, typeName(v))
}
