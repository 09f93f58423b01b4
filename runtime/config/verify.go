package config

import (
	"fmt"

	"github.com/sluicehq/sluice/transforms"
)

// verifyKeys are the keys of a pipeline's verify object.
var verifyKeys = []string{"compare", "ignore_deleted"}

// Verify is a pipeline's verify: block, which tells `sluice verify` how to compare the two ends of the
// pipeline:
//
//	verify:
//	  compare: payload.fullDocument   the value compared, on each side's record (default: the whole payload)
//	  ignore_deleted: true            keys the source no longer has may stay in the sink (not "extra")
type Verify struct {
	// Compare is the expression whose value is compared, evaluated on the source's record (after the
	// transforms) and on the sink's; nil compares whole payloads. CompareText is it as written.
	Compare     *transforms.Expression
	CompareText string
	// IgnoreDeleted: a key the sink holds and the source does not is not reported (nor tombstoned by a
	// repair), for pipelines that keep what the source deletes.
	IgnoreDeleted bool
	// Pos is where the block is written (zero when absent).
	Pos Pos
}

// verify reads a pipeline's verify key.
func (v *validator) verify(n *node, p *Pipeline) {
	c := n.fields["verify"]
	if c == nil || isNull(c) {
		return
	}
	if c.kind != kindMap {
		v.errorf(c.pos, "verify: want an object { compare: EXPRESSION, ignore_deleted: BOOL }, got %s", describe(c, false))
		return
	}
	p.Verify.Pos = c.pos
	v.unknownKeys(c, "in verify", verifyKeys)
	if f := c.fields["ignore_deleted"]; f != nil {
		p.Verify.IgnoreDeleted = v.boolKey(f, "verify.ignore_deleted")
	}
	f := c.fields["compare"]
	if f == nil {
		return
	}
	e, ok := v.expr(f, "verify.compare")
	if !ok {
		return
	}
	x, col, err := transforms.CompileExpression(e.Text)
	if err != nil {
		pos := f.pos
		if col > 0 {
			pos = v.inside(pos, e.Text, col)
		}
		msg := "verify.compare: " + err.Error()
		if col > 0 {
			msg += fmt.Sprintf(" (column %d of the expression)", col)
		}
		v.errorf(pos, "%s", msg)
		return
	}
	p.Verify.Compare, p.Verify.CompareText = x, e.Text
}
