package transforms

import (
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms/codec"
)

// Expression is one expression compiled on its own, outside a step: it sees a record as the steps'
// expressions do (payload fields by name, meta, key, op, payload) and follows the same value model. sluice
// verify's compare setting is one. It is immutable and safe for concurrent use; each goroutine evaluates
// it through its own Evaluator.
type Expression struct {
	p    *Program
	prog *program
}

// CompileExpression compiles text, an expression of any type. On error it also returns the 1-based column
// inside the expression where the problem is, 0 when it has none.
func CompileExpression(text string) (*Expression, int, error) {
	prog, u, col, err := compileExpr(text, wantAny)
	if err != nil {
		return nil, col, err
	}
	p := &Program{tree: codec.NewTree()}
	p.uses(u)
	if u.payload {
		u.paths.addTo(p.tree)
	}
	return &Expression{p: p, prog: prog}, 0, nil
}

// Text returns the expression as written.
func (e *Expression) Text() string { return e.prog.text }

// Evaluator evaluates an Expression on records, reusing its buffers. It is not safe for concurrent use.
type Evaluator struct {
	r    *Runner
	prog *program
}

// NewEvaluator returns an Evaluator for e.
func (e *Expression) NewEvaluator() *Evaluator {
	return &Evaluator{r: e.p.NewRunner(), prog: e.prog}
}

// Eval returns the expression's value on rec: a decoded value (nil, bool, int, float64, string, the
// codec types, map[string]any, []any) that stays valid after the next call.
func (ev *Evaluator) Eval(rec *record.Record) (any, error) {
	defer clear(ev.r.env)
	if _, err := ev.r.enter(rec); err != nil {
		return nil, err
	}
	v, err := ev.r.eval(ev.prog)
	if err != nil {
		return nil, clipError(err)
	}
	return v, nil
}

// Equal reports whether a and b are equal by the equality of the expressions' == (numbers by value, an
// ObjectID equal to its hex string, dates as instants, objects and arrays member by member).
func Equal(a, b any) bool { return equal(a, b) }
