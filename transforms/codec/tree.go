package codec

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"slices"
)

// Sparse decoding and patching. Most transform steps read a handful of fields of a large payload (a filter on
// operationType and fullDocument.total) and write fewer (fullDocument.total_cents). Decoding the whole
// document into maps costs far more than the steps, and re-encoding it loses what the producer wrote (key
// order, number and date spelling). So a Tree lists the paths a program reads and writes; DecodeSparse
// decodes only what is read, skipping everything else without allocating, and records where the members of
// the objects on the way to a written path are; AppendPatched then writes the original bytes with only the
// changed members re-encoded.

// Tree is the set of payload paths a program uses. Build it once (it is read-only afterwards and safe for
// concurrent use); each record's changes are kept in a Changes.
type Tree struct {
	root  *Node
	nodes []*Node // by id
}

// Node is one field name of a Tree's paths.
type Node struct {
	name string
	// member is the name as a JSON object member starts: "name":
	member []byte
	parent *Node
	kids   []*Node // in the order first added
	index  map[string]*Node
	id     int
	// read: the value here is used whole, so it is decoded whole.
	read bool
	// target: a step writes or removes this path.
	target bool
	// below: some path strictly below this node is a target, so an object here is decoded member by
	// member and its members' places are recorded.
	below bool
}

// NewTree returns an empty tree: nothing is read, nothing written.
func NewTree() *Tree {
	t := &Tree{}
	t.root = t.node("", nil)
	return t
}

func (t *Tree) node(name string, parent *Node) *Node {
	n := &Node{name: name, parent: parent, id: len(t.nodes), member: append(appendQuoted(nil, name), ':')}
	t.nodes = append(t.nodes, n)
	return n
}

func (t *Tree) add(path []string) *Node {
	n := t.root
	for _, seg := range path {
		k := n.index[seg]
		if k == nil {
			if n.index == nil {
				n.index = map[string]*Node{}
			}
			k = t.node(seg, n)
			n.index[seg] = k
			n.kids = append(n.kids, k)
		}
		n = k
	}
	return n
}

// kid returns the child named k, or nil. Nodes have few children: comparing is cheaper than hashing.
func (n *Node) kid(k []byte) *Node {
	for _, c := range n.kids {
		if len(c.name) == len(k) && c.name == string(k) {
			return c
		}
	}
	return nil
}

// Read adds a path whose value is used whole; the empty path reads the whole document.
func (t *Tree) Read(path []string) { t.add(path).read = true }

// Write adds a path a step writes or removes and returns its node, for Changes.Mark. path must not be
// empty.
func (t *Tree) Write(path []string) *Node {
	n := t.add(path)
	n.target = true
	for p := n.parent; p != nil; p = p.parent {
		p.below = true
	}
	return n
}

// ReadsAll reports whether the whole document is read.
func (t *Tree) ReadsAll() bool { return t.root.read }

// Reads reports whether anything of the document is read or written.
func (t *Tree) Reads() bool { return len(t.nodes) > 1 || t.root.read }

// Paths returns the paths read (not those only written), each as its segments, in the order added.
func (t *Tree) Paths() [][]string {
	var out [][]string
	var walk func(n *Node, path []string)
	walk = func(n *Node, path []string) {
		if n.read && len(path) > 0 {
			out = append(out, slices.Clone(path))
		}
		for _, k := range n.kids {
			walk(k, append(path, k.name))
		}
	}
	walk(t.root, nil)
	return out
}

// Changes records which paths of a Tree one record's steps changed, and where the members of the objects
// on the way are in the original document. Reuse one per goroutine: Reset it for each record.
type Changes struct {
	tree    *Tree
	dirty   []bool // something at or below the node changed
	written []bool // the node's value was replaced or removed
	emitted []bool // scratch for AppendPatched
	spans   [][]span
	walked  []bool // spans[id] is valid: the object at the node was decoded member by member
	// maps are the objects decoded member by member for the previous record, reused for the next.
	maps []map[string]any
}

// span is where one member of an object is in the original document.
type span struct {
	member, end int
	kid         *Node // nil: a member no path names
}

// Reset prepares c for a record of a program using t.
func (c *Changes) Reset(t *Tree) {
	n := len(t.nodes)
	if c.tree != t || len(c.dirty) != n {
		c.tree = t
		c.dirty, c.written, c.emitted = make([]bool, n), make([]bool, n), make([]bool, n)
		c.spans, c.walked = make([][]span, n), make([]bool, n)
		c.maps = make([]map[string]any, n)
		return
	}
	clear(c.dirty)
	clear(c.written)
	clear(c.walked)
}

// Mark records that the value at n (a node Write returned) was replaced or removed.
func (c *Changes) Mark(n *Node) {
	c.written[n.id] = true
	for p := n; p != nil && !c.dirty[p.id]; p = p.parent {
		c.dirty[p.id] = true
	}
}

// Changed reports whether Mark was called since the last Reset.
func (c *Changes) Changed() bool { return len(c.dirty) > 0 && c.dirty[0] }

// DecodeSparse decodes the paths t reads from a JSON document, and records in c (which must have been
// Reset for t) where the members of the objects on the way to t's written paths are. Values no path
// names are skipped and absent from the result. The objects on the paths are reused by the next
// DecodeSparse with c: the result is valid until then.
func DecodeSparse(data []byte, t *Tree, c *Changes) (map[string]any, error) {
	d := jsonDecoder{data: data, changes: c}
	return d.document(func() (any, error) { return d.sparse(t.root) })
}

// sparse decodes the value at d.i keeping the paths under n. A value that is not an object, or an object
// that may be an Extended JSON wrapper (its first key starts with $), is decoded whole.
func (d *jsonDecoder) sparse(n *Node) (any, error) {
	d.space()
	if n.read && !n.below || d.i >= len(d.data) || d.data[d.i] != '{' || d.wrapperAhead() {
		return d.value()
	}
	var m map[string]any
	if d.changes != nil && !n.read {
		if m = d.changes.maps[n.id]; m != nil {
			clear(m)
		} else {
			m = make(map[string]any, len(n.kids))
			d.changes.maps[n.id] = m
		}
	} else {
		m = make(map[string]any, len(n.kids))
	}
	var spans []span
	record := n.below && d.changes != nil
	if record {
		spans = d.changes.spans[n.id][:0]
	}
	err := d.members(func(k []byte, member, _ int) error {
		kid := n.kid(k)
		var err error
		var v any
		switch {
		case kid != nil && (kid.read || len(kid.kids) > 0):
			if v, err = d.sparse(kid); err == nil {
				m[kid.name] = v // the node's name: no new string
			}
		case n.read:
			if v, err = d.value(); err == nil {
				m[string(k)] = v
			}
		default:
			err = d.skip()
		}
		if record {
			spans = append(spans, span{member: member, end: d.i, kid: kid})
		}
		return err
	})
	if record {
		d.changes.spans[n.id], d.changes.walked[n.id] = spans, err == nil
	}
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

// AppendPatched appends the JSON document orig with the changes c records applied from doc (its decoding
// by DecodeSparse with t and c, as the steps changed it). Members that did not change are copied as
// written, in their place; changed members are encoded from doc (left out when doc no longer has them);
// members doc gained go at the end of their object, in the order t names them. When orig is not an
// object decoded by DecodeSparse (an empty or raw payload), doc is encoded whole, new members in t's order.
func AppendPatched(dst, orig []byte, doc map[string]any, t *Tree, c *Changes) ([]byte, error) {
	e := jsonEncoder{}
	if c.tree != t {
		c.Reset(t)
	}
	clear(c.emitted)
	if len(orig) > 0 && c.walked[0] {
		return e.patched(dst, orig, doc, t.root, c, 0)
	}
	return e.ordered(dst, doc, t.root, c, 0)
}

func (e *jsonEncoder) patched(b, orig []byte, doc map[string]any, n *Node, c *Changes, depth int) ([]byte, error) {
	if depth > maxDepth {
		return b, errTooDeep
	}
	b = append(b, '{')
	first := true
	for _, sp := range c.spans[n.id] {
		kid := sp.kid
		if kid == nil || !c.dirty[kid.id] {
			if !first {
				b = append(b, ',')
			}
			b = append(b, orig[sp.member:sp.end]...)
			first = false
			continue
		}
		v, ok := doc[kid.name]
		if !ok || c.emitted[kid.id] { // removed by a step, or a duplicate key
			continue
		}
		c.emitted[kid.id] = true
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, kid.member...)
		var err error
		if sub, isMap := v.(map[string]any); isMap && !c.written[kid.id] && c.walked[kid.id] {
			b, err = e.patched(b, orig, sub, kid, c, depth+1)
		} else {
			b, err = e.ordered(b, v, kid, c, depth+1)
		}
		if err != nil {
			return b, err
		}
	}
	b, err := e.added(b, doc, n, c, first, depth)
	if err != nil {
		return b, err
	}
	return append(b, '}'), nil
}

// added appends the members of doc that the steps added under n (dirty kids not yet emitted), in the order
// the tree names them.
func (e *jsonEncoder) added(b []byte, doc map[string]any, n *Node, c *Changes, first bool, depth int) ([]byte, error) {
	for _, kid := range n.kids {
		if !c.dirty[kid.id] || c.emitted[kid.id] {
			continue
		}
		v, ok := doc[kid.name]
		if !ok {
			continue
		}
		c.emitted[kid.id] = true
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, kid.member...)
		var err error
		if b, err = e.ordered(b, v, kid, c, depth+1); err != nil {
			return b, err
		}
	}
	return b, nil
}

// ordered encodes v, the value at n. An object that was not replaced whole, and so holds members the steps
// added, lists the members the tree names first, in its order, then the others sorted.
func (e *jsonEncoder) ordered(b []byte, v any, n *Node, c *Changes, depth int) ([]byte, error) {
	m, isMap := v.(map[string]any)
	if !isMap || c.written[n.id] || len(n.kids) == 0 {
		return e.value(b, v, depth)
	}
	if depth > maxDepth {
		return b, errTooDeep
	}
	b = append(b, '{')
	first := true
	var small [16]string
	rest := small[:0]
	for k := range m {
		if kid := n.index[k]; kid == nil || !c.dirty[kid.id] {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	b, err := e.members(b, m, rest, first, depth)
	if err != nil {
		return b, err
	}
	first = len(rest) == 0
	if b, err = e.added(b, m, n, c, first, depth); err != nil {
		return b, err
	}
	return append(b, '}'), nil
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
		return d.skipNested()
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

// skipNested moves past the object or array at d.i. Only strings and brackets matter: a value is checked
// when a step reads it, not when it is skipped.
func (d *jsonDecoder) skipNested() error {
	data := d.data
	level := 0
	for i := d.i; i < len(data); i++ {
		c := data[i]
		if !structural[c] {
			continue
		}
		switch c {
		case '"':
			d.i = i
			if err := d.skipString(); err != nil {
				return err
			}
			i = d.i - 1
		case '{', '[':
			level++
		case '}', ']':
			level--
			if level == 0 {
				d.i = i + 1
				return nil
			}
		}
	}
	d.i = len(data)
	return d.errorf("unexpected end of input")
}

// structural marks the bytes skipNested stops at.
var structural = [256]bool{'"': true, '{': true, '[': true, '}': true, ']': true}

// skipString moves past the string at d.i (its opening quote) without decoding it.
func (d *jsonDecoder) skipString() error {
	data := d.data
	i := d.i + 1
	// Most strings are short: look at their first 32 bytes a word at a time, finding the first quote or
	// backslash in a word without looking at each byte.
	for range 4 {
		if i+8 > len(data) {
			break
		}
		m := quoteOrBackslash(binary.LittleEndian.Uint64(data[i:]))
		if m == 0 {
			i += 8
			continue
		}
		i += bits.TrailingZeros64(m) >> 3
		if data[i] == '"' {
			d.i = i + 1
			return nil
		}
		i += 2 // a backslash and the character it escapes
	}
	// The rest of a longer one with bytes.IndexByte, which scans with vector instructions: find the next
	// quote, then look for a backslash before it (one escapes the character after it, which may be that
	// quote). quote is kept while it is ahead, so that a string with many escapes is scanned once.
	quote := -1
	for i < len(data) {
		if quote < i {
			k := bytes.IndexByte(data[i:], '"')
			if k < 0 {
				break
			}
			quote = i + k
		}
		k := bytes.IndexByte(data[i:quote], '\\')
		if k < 0 {
			d.i = quote + 1
			return nil
		}
		i += k + 2
	}
	d.i = len(data)
	return d.errorf("unterminated string")
}

// quoteOrBackslash returns a word with the high bit set in the lowest byte of w that is a quote or a
// backslash (higher bytes may be marked wrongly; the lowest mark is exact), or 0 when there is none.
func quoteOrBackslash(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q := w ^ (ones * '"')
	b := w ^ (ones * '\\')
	return ((q-ones)&^q | (b-ones)&^b) & highs
}

// key reads an object key at d.i (its opening quote). raw is the key's bytes, valid until the next call;
// it aliases the input when the key has no escapes.
func (d *jsonDecoder) key() (raw []byte, err error) {
	start := d.i + 1
	// Most keys are short and plain: look for the closing quote directly.
	for i := start; i < len(d.data) && i < start+32; i++ {
		switch d.data[i] {
		case '"':
			d.i = i + 1
			return d.data[start:i], nil
		case '\\':
			s, err := d.string()
			return []byte(s), err
		}
	}
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
