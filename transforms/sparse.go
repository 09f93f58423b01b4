package transforms

import (
	"bytes"
	"slices"

	"github.com/expr-lang/expr/ast"
)

// Sparse decoding. Most steps read a handful of fields of a large payload (a filter on operationType and
// fullDocument.total; a set of fullDocument.total_cents). Decoding the whole document into maps costs far
// more than the expressions. So the compiler records which payload paths the steps read or write, and a
// JSON payload is decoded into a sparse document holding only those paths; everything else is skipped
// without allocating. When a step changes the payload, the output is the original bytes with the changes
// patched in: fields no step touched are copied as they were, in their place.
//
// Paths are exact for what expressions can do with them: an expression only ever uses the value at the
// end of a member chain (fullDocument.total); that value is decoded whole. Anything the compiler cannot
// follow — `payload`, a computed property (doc[k]) — makes the program decode every payload whole.

// pathNode is a node of the tree of paths a program uses.
type pathNode struct {
	// full: the value at this path is used whole, so it is decoded whole.
	full bool
	kids map[string]*pathNode
	// id numbers the partial nodes (0 is the root), to index a record's layout.
	id int
}

// number assigns ids to the partial nodes under n and returns the next free id.
func (n *pathNode) number(next int) int {
	n.id = next
	next++
	for _, k := range n.kids {
		if !k.full {
			next = k.number(next)
		}
	}
	return next
}

// span is where one member of a partially decoded object is in the original document.
type span struct {
	member, value, end int
	kid                *pathNode // nil: a member no step uses
}

// layout records, for one record, where the members of each partially decoded object are: layout[id]
// for the object at the node numbered id. ok[id] is false when that object was not decoded partially
// (absent, not an object, or a wrapper).
type layout struct {
	objs [][]span
	ok   []bool
}

func (l *layout) reset(nodes int) {
	if cap(l.objs) < nodes {
		l.objs = make([][]span, nodes)
		l.ok = make([]bool, nodes)
	}
	l.objs, l.ok = l.objs[:nodes], l.ok[:nodes]
	clear(l.ok)
}

func (n *pathNode) add(path []string) *pathNode {
	for _, seg := range path {
		if n.kids == nil {
			n.kids = map[string]*pathNode{}
		}
		k := n.kids[seg]
		if k == nil {
			k = &pathNode{}
			n.kids[seg] = k
		}
		n = k
	}
	n.full = true
	return n
}

// find returns the node for path, or nil.
func (n *pathNode) find(path []string) *pathNode {
	for _, seg := range path {
		if n == nil {
			return nil
		}
		n = n.kids[seg]
	}
	return n
}

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

// addTo adds the expression's paths to root; it reports false when the expression needs whole payloads.
func (p *pathUse) addTo(root *pathNode) bool {
	if p.whole {
		return false
	}
	for _, r := range p.roots {
		if !p.consumed[r] {
			return false // __doc used bare
		}
	}
	for m, path := range p.chains {
		if !p.consumed[m] {
			root.add(path)
		}
	}
	for _, path := range p.extra {
		root.add(path)
	}
	return true
}

// skip moves past one JSON value without decoding it.
func (d *jsonDecoder) skip() error {
	d.space()
	if d.i >= len(d.data) {
		return d.errorf("unexpected end of input")
	}
	switch d.data[d.i] {
	case '"':
		return d.skipString()
	case '{', '[':
		level := 0
		for d.i < len(d.data) {
			switch d.data[d.i] {
			case '"':
				if err := d.skipString(); err != nil {
					return err
				}
				continue
			case '{', '[':
				level++
			case '}', ']':
				level--
				if level == 0 {
					d.i++
					return nil
				}
			}
			d.i++
		}
		return d.errorf("unexpected end of input")
	}
	start := d.i
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if d.i == start {
				return d.errorf("unexpected character %q", d.data[d.i])
			}
			return nil
		}
		d.i++
	}
	return nil
}

func (d *jsonDecoder) skipString() error {
	data := d.data
	i := d.i + 1
	// Short strings (most keys and values) are cheaper to scan inline than to hand to IndexByte.
	for end := min(i+16, len(data)); i < end; i++ {
		switch data[i] {
		case '"':
			d.i = i + 1
			return nil
		case '\\':
			i++
		}
	}
	for i < len(data) {
		j := bytes.IndexByte(data[i:], '"')
		if j < 0 {
			break
		}
		// The quote ends the string unless an odd number of backslashes precede it.
		k := i + j
		n := 0
		for k-1-n >= i && data[k-1-n] == '\\' {
			n++
		}
		i = k + 1
		if n%2 == 0 {
			d.i = i
			return nil
		}
	}
	d.i = len(data)
	return d.errorf("unterminated string")
}

// key reads an object key at d.i (its opening quote). raw is the key's bytes, valid until the next call;
// it aliases the input when the key has no escapes.
func (d *jsonDecoder) key() (raw []byte, err error) {
	start := d.i + 1
	if err := d.skipString(); err != nil {
		return nil, err
	}
	raw = d.data[start : d.i-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw, nil
	}
	d.i = start - 1
	s, err := d.string()
	return []byte(s), err
}

// members calls fn for each member of the object at d.i, with the key's bytes (valid during the call),
// where the member starts (its key's quote) and where its value starts; fn must move d.i past the value.
func (d *jsonDecoder) members(fn func(key []byte, member, value int) error) error {
	d.space()
	if d.i >= len(d.data) || d.data[d.i] != '{' {
		return d.errorf("want an object")
	}
	if d.depth++; d.depth > maxDepth {
		return d.errorf("nested more than %d levels deep", maxDepth)
	}
	d.i++
	d.space()
	if d.i < len(d.data) && d.data[d.i] == '}' {
		d.i++
		d.depth--
		return nil
	}
	for {
		d.space()
		if d.i >= len(d.data) || d.data[d.i] != '"' {
			return d.errorf("want a string key")
		}
		member := d.i
		k, err := d.key()
		if err != nil {
			return err
		}
		d.space()
		if d.i >= len(d.data) || d.data[d.i] != ':' {
			return d.errorf("want ':' after a key")
		}
		d.i++
		d.space()
		if err := fn(k, member, d.i); err != nil {
			return err
		}
		d.space()
		if d.i >= len(d.data) {
			return d.errorf("unexpected end of input in an object")
		}
		switch d.data[d.i] {
		case ',':
			d.i++
		case '}':
			d.i++
			d.depth--
			return nil
		default:
			return d.errorf("want ',' or '}' in an object")
		}
	}
}

// decodeSparse decodes the paths of tree from a JSON document, recording in l where the members of the
// partially decoded objects are.
func decodeSparse(data []byte, tree *pathNode, l *layout) (map[string]any, error) {
	d := jsonDecoder{data: data, layout: l}
	return d.document(func() (any, error) { return d.sparse(tree) })
}

// sparse decodes the value at d.i keeping only the paths of n. An object that may be an Extended JSON
// wrapper (its first key starts with $) is decoded whole.
func (d *jsonDecoder) sparse(n *pathNode) (any, error) {
	d.space()
	if n.full || d.i >= len(d.data) || d.data[d.i] != '{' || d.wrapperAhead() {
		return d.value()
	}
	m := make(map[string]any, len(n.kids))
	spans := d.layout.objs[n.id][:0]
	err := d.members(func(k []byte, member, value int) error {
		kid := n.kids[string(k)]
		var err error
		if kid == nil {
			err = d.skip()
		} else {
			var v any
			if v, err = d.sparse(kid); err == nil {
				m[string(k)] = v
			}
		}
		spans = append(spans, span{member: member, value: value, end: d.i, kid: kid})
		return err
	})
	d.layout.objs[n.id], d.layout.ok[n.id] = spans, err == nil
	return m, err
}

// wrapperAhead reports whether the object at d.i starts with a "$" key.
func (d *jsonDecoder) wrapperAhead() bool {
	j := d.i + 1
	for j < len(d.data) && (d.data[j] == ' ' || d.data[j] == '\t' || d.data[j] == '\n' || d.data[j] == '\r') {
		j++
	}
	return j+1 < len(d.data) && d.data[j] == '"' && d.data[j+1] == '$'
}

// encodePatched appends the JSON document orig with the changes the steps made to its sparse decoding doc,
// using the layout decodeSparse recorded: members no step uses are copied as written; members of the
// tree are taken from doc (left out when doc lacks them, re-encoded when used whole or replaced, patched
// recursively when partial); members doc gained are appended in sorted order.
func encodePatched(dst, orig []byte, doc map[string]any, tree *pathNode, l *layout, replaced []*pathNode) ([]byte, error) {
	e := jsonEncoder{}
	return e.patched(dst, orig, doc, tree, l, replaced, 0)
}

func (e *jsonEncoder) patched(b, orig []byte, doc map[string]any, n *pathNode, l *layout, replaced []*pathNode, depth int) ([]byte, error) {
	b = append(b, '{')
	first := true
	var small [8]string
	emitted := small[:0]
	for _, sp := range l.objs[n.id] {
		if !first {
			b = append(b, ',')
		}
		if sp.kid == nil {
			b = append(b, orig[sp.member:sp.end]...)
			first = false
			continue
		}
		var key string
		for k, kid := range n.kids { // a handful of kids: cheaper than decoding the key again
			if kid == sp.kid {
				key = k
				break
			}
		}
		v, ok := doc[key]
		if !ok {
			if !first {
				b = b[:len(b)-1] // removed by a step: take the comma back
			}
			continue
		}
		first = false
		emitted = append(emitted, key)
		b = appendQuoted(b, key)
		b = append(b, ':')
		sub, isMap := v.(map[string]any)
		var err error
		if !sp.kid.full && isMap && l.ok[sp.kid.id] && !slices.Contains(replaced, sp.kid) {
			b, err = e.patched(b, orig, sub, sp.kid, l, replaced, depth+1)
		} else {
			b, err = e.value(b, v, depth+1)
		}
		if err != nil {
			return b, err
		}
	}
	if len(emitted) < len(doc) {
		var added []string
		for k := range doc {
			if !slices.Contains(emitted, k) {
				added = append(added, k)
			}
		}
		slices.Sort(added)
		var err error
		if b, err = e.members(b, doc, added, first, depth); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}
