package config

import (
	"github.com/pelletier/go-toml/v2/unstable"
)

// tomlIndex records where each key and value of a TOML document starts, using go-toml's unstable parser.
// It runs after koanf has accepted the document, so it only stops early on a parser error it should not
// meet (the positions found so far are kept).
func tomlIndex(ls *lines) (idx posIndex) {
	idx = posIndex{}
	defer func() {
		// The parser should not panic on a document koanf accepted; if it does, keep the positions found
		// so far (the others take their parent's).
		_ = recover()
	}()
	t := tomlWalker{ls: ls, idx: idx, arrays: map[string]int{}}
	t.p.Reset(ls.data)
	for t.p.NextExpression() {
		e := t.p.Expression()
		switch e.Kind {
		case unstable.KeyValue:
			t.keyValue(e, t.table, 0)
		case unstable.Table:
			t.table = t.header(e, false)
		case unstable.ArrayTable:
			t.table = t.header(e, true)
		}
	}
	return idx
}

type tomlWalker struct {
	ls  *lines
	idx posIndex
	p   unstable.Parser
	// table is the resolved path of the current [table] or [[array table]] element.
	table string
	// arrays counts the elements of each array of tables, by resolved path.
	arrays map[string]int
}

func (t *tomlWalker) pos(n *unstable.Node) Pos { return t.ls.pos(int(n.Raw.Offset)) }

// header resolves a [a.b] or [[a.b]] header to the path of the table it opens. A prefix that names an
// array of tables refers to its last element.
func (t *tomlWalker) header(e *unstable.Node, array bool) string {
	path := ""
	it := e.Key()
	for it.Next() {
		k := it.Node()
		path = child(path, string(k.Data))
		kp := t.pos(k)
		t.idx.add(path, posEntry{key: kp, val: kp})
		if it.IsLast() && array {
			n := t.arrays[path]
			t.arrays[path] = n + 1
			path = item(path, n)
			t.idx.add(path, posEntry{key: kp, val: kp})
			break
		}
		if n, ok := t.arrays[path]; ok {
			path = item(path, n-1)
		}
	}
	return path
}

// keyValue records a (possibly dotted) key = value under table.
func (t *tomlWalker) keyValue(e *unstable.Node, table string, depth int) {
	path := table
	var last *unstable.Node
	it := e.Key()
	for it.Next() {
		k := it.Node()
		path = child(path, string(k.Data))
		kp := t.pos(k)
		t.idx.add(path, posEntry{key: kp, val: kp})
		last = k
	}
	v := e.Value()
	vp := t.valuePos(v, last)
	t.idx[path] = posEntry{key: t.idx[path].key, val: vp, text: string(v.Data)}
	t.value(v, path, vp, depth)
}

// valuePos is where value v of the key ending with key part last starts. Arrays carry no range in the
// parser's tree, so their start is found after the '='.
func (t *tomlWalker) valuePos(v, last *unstable.Node) Pos {
	if v.Kind != unstable.Array {
		return t.pos(v)
	}
	off := int(last.Raw.Offset + last.Raw.Length)
	data := t.ls.data
	for off < len(data) && (data[off] == ' ' || data[off] == '\t' || data[off] == '=') {
		off++
	}
	return t.ls.pos(off)
}

// value records the positions inside an inline table or array at path, which starts at pos.
func (t *tomlWalker) value(v *unstable.Node, path string, pos Pos, depth int) {
	if depth > maxDepth {
		return
	}
	switch v.Kind {
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				t.keyValue(c, path, depth+1)
			}
		}
	case unstable.Array:
		i := 0
		it := v.Children()
		for it.Next() {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			p := item(path, i)
			cp := pos // a nested array's own start is not known; its first element's is
			if c.Kind != unstable.Array {
				cp = t.pos(c)
			} else if first := c.Child(); first != nil && first.Kind != unstable.Array {
				cp = t.pos(first)
			}
			t.idx.add(p, posEntry{key: cp, val: cp, text: string(c.Data)})
			t.value(c, p, cp, depth+1)
			i++
		}
	}
}
