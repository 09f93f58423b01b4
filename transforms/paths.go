package transforms

import (
	"slices"

	"github.com/expr-lang/expr/ast"

	"github.com/sluicehq/sluice/transforms/codec"
)

// The payload paths a program uses. Most steps read a handful of fields of a large payload; the compiler
// records which (an expression only ever uses the value at the end of a member chain, fullDocument.total),
// and which paths the steps write, in a codec.Tree. A JSON payload is then decoded sparsely and written
// back patched (see the codec package). Anything the compiler cannot follow — `payload`, a computed
// property (doc[k]) — makes the program read whole payloads.

// pathUse is an AST visitor that records the payload paths one expression reads: every member chain
// rooted at the payload (__doc.a.b) whose value is used other than as the base of a longer chain.
type pathUse struct {
	chains   map[*ast.MemberNode][]string
	consumed map[ast.Node]bool
	roots    []*ast.IdentifierNode
	// whole: the expression uses the payload in a way paths cannot describe.
	whole bool
	// extra are paths used whole because a computed property or a method is applied to them.
	extra [][]string
}

func newPathUse() *pathUse {
	return &pathUse{chains: map[*ast.MemberNode][]string{}, consumed: map[ast.Node]bool{}}
}

func unchain(n ast.Node) ast.Node {
	if c, ok := n.(*ast.ChainNode); ok {
		return c.Node
	}
	return n
}

func (p *pathUse) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		if n.Value == docName {
			p.roots = append(p.roots, n)
		}
	case *ast.MemberNode:
		base := unchain(n.Node)
		var basePath []string
		switch b := base.(type) {
		case *ast.IdentifierNode:
			if b.Value != docName {
				return
			}
		case *ast.MemberNode:
			bp, ok := p.chains[b]
			if !ok {
				return
			}
			basePath = bp
		default:
			return
		}
		p.consumed[base] = true
		if s, ok := n.Property.(*ast.StringNode); ok && !n.Method {
			p.chains[n] = append(slices.Clip(basePath), s.Value)
			return
		}
		// doc[k], doc.items[0], doc.created.Year(): the base is needed whole.
		if basePath == nil {
			p.whole = true
		} else {
			p.extra = append(p.extra, basePath)
		}
	}
}

// addTo adds the paths the expression reads to t: the whole document when the expression uses it in a
// way paths cannot describe.
func (p *pathUse) addTo(t *codec.Tree) {
	whole := p.whole
	for _, r := range p.roots {
		whole = whole || !p.consumed[r] // __doc used bare
	}
	if whole {
		t.Read(nil)
	}
	for m, path := range p.chains {
		if !p.consumed[m] {
			t.Read(path)
		}
	}
	for _, path := range p.extra {
		t.Read(path)
	}
}
