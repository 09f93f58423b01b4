package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	koanfjson "github.com/knadh/koanf/parsers/json"
	koanftoml "github.com/knadh/koanf/parsers/toml/v2"
	koanfyaml "github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
	"github.com/pelletier/go-toml/v2"
	"gopkg.in/yaml.v3"
)

// format is a connector file's syntax.
type format int

const (
	formatYAML format = iota + 1
	formatJSON
	formatTOML
)

func (f format) String() string {
	switch f {
	case formatYAML:
		return "YAML"
	case formatJSON:
		return "JSON"
	case formatTOML:
		return "TOML"
	}
	return "unknown"
}

func formatOf(path string) (format, bool) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		return formatYAML, true
	case ".json":
		return formatJSON, true
	case ".toml":
		return formatTOML, true
	}
	return 0, false
}

// kind is the shape of a node.
type kind int

const (
	kindScalar kind = iota
	kindMap
	kindList
)

// node is one value of the document: koanf's value joined with the position the parser saw it at.
type node struct {
	kind kind
	// pos is where the value starts; key is where its key starts (a list item's key is its pos).
	pos, key Pos
	// scalar is string, int64, float64, bool or nil.
	scalar any
	// fields and keys (in document order) hold a map's entries.
	fields map[string]*node
	keys   []string
	items  []*node
}

// posEntry is what the parser says about the value at one path.
type posEntry struct {
	key, val Pos
	// text is a scalar's literal text: used to keep YAML/TOML dates as written and to read JSON integers
	// exactly.
	text string
	// jsonInt: a JSON number written without fraction or exponent.
	jsonInt bool
	// nth is the key's place in its mapping as written (0, 1, …): it orders the keys of a mapping reached
	// through a YAML alias, which all share the alias's position.
	nth int
}

// posIndex maps a path (see child and item) to what the parser says about its value.
type posIndex map[string]posEntry

// add records e for path unless the path is already known (a TOML table may be opened several times).
func (x posIndex) add(path string, e posEntry) {
	if _, ok := x[path]; !ok {
		x[path] = e
	}
}

// child and item build the paths of posIndex: NUL before a map key, SOH before a list index.
func child(path, key string) string  { return path + "\x00" + key }
func item(path string, i int) string { return path + "\x01" + strconv.Itoa(i) }

// lines converts byte offsets to positions.
type lines struct {
	file  string
	data  []byte
	start []int // offset of each line's first byte
}

func newLines(file string, data []byte) *lines {
	l := &lines{file: file, data: data, start: []int{0}}
	for i, c := range data {
		if c == '\n' {
			l.start = append(l.start, i+1)
		}
	}
	return l
}

// pos returns the position of the byte at offset; Col counts characters.
func (l *lines) pos(offset int) Pos {
	offset = max(0, min(offset, len(l.data)))
	i := sort.Search(len(l.start), func(i int) bool { return l.start[i] > offset }) - 1
	return Pos{File: l.file, Line: i + 1, Col: utf8.RuneCount(l.data[l.start[i]:offset]) + 1}
}

// lineStart returns the position of line n's first non-blank character (column 1 if blank or unknown).
func (l *lines) lineStart(n int) Pos {
	if n < 1 || n > len(l.start) {
		return Pos{File: l.file, Line: max(n, 1), Col: 1}
	}
	off := l.start[n-1]
	for off < len(l.data) && (l.data[off] == ' ' || l.data[off] == '\t') {
		off++
	}
	if off >= len(l.data) || l.data[off] == '\n' || l.data[off] == '\r' {
		return Pos{File: l.file, Line: n, Col: 1}
	}
	return l.pos(off)
}

// indentTab returns the offset of a tab in line n's indentation, or -1.
func (l *lines) indentTab(n int) int {
	if n < 1 || n > len(l.start) {
		return -1
	}
	for off := l.start[n-1]; off < len(l.data); off++ {
		switch l.data[off] {
		case '\t':
			return off
		case ' ':
			continue
		}
		break
	}
	return -1
}

// end is the position just after the last character of the file.
func (l *lines) end() Pos {
	end := len(l.data)
	for end > 0 && (l.data[end-1] == '\n' || l.data[end-1] == '\r') {
		end--
	}
	return l.pos(end)
}

// document parses data into a node tree, or returns the syntax problems found. Values come from koanf;
// positions from the format's own parser.
func document(path string, data []byte) (*node, Errors) {
	f, ok := formatOf(path)
	if !ok {
		return nil, Errors{{Pos: Pos{File: path, Line: 1, Col: 1},
			Msg: fmt.Sprintf("unsupported file extension %s: want .yaml, .yml, .json or .toml", quote(filepath.Ext(path)))}}
	}
	// Editors on Windows may start a file with a byte order mark; no parser here wants it, and no user
	// sees it, so positions are counted without it.
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	ls := newLines(path, data)
	var (
		idx  posIndex
		errs Errors
	)
	if f == formatYAML {
		// Parse with yaml.v3 first: it reports where syntax errors are, and duplicate keys get a better
		// message than koanf's decoder gives.
		if idx, errs = yamlIndex(ls); errs != nil {
			return nil, errs
		}
	}
	raw, err := koanfLoad(f, data)
	if err != nil {
		return nil, Errors{syntaxError(ls, f, err)}
	}
	switch f {
	case formatJSON:
		if idx, errs = jsonIndex(ls); errs != nil {
			return nil, errs
		}
	case formatTOML:
		idx = tomlIndex(ls)
	case formatYAML: // indexed above
	}
	b := builder{idx: idx}
	root := b.build(raw, "", Pos{File: path, Line: 1, Col: 1})
	root.pos = Pos{File: path, Line: 1, Col: 1}
	return root, nil
}

// koanfLoad loads the document with koanf and returns its raw nested map. A panic in a parser (they
// read untrusted bytes) becomes an error, so that Load never panics on any input.
func koanfLoad(f format, data []byte) (raw map[string]any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("parser failed: %v", r)
		}
	}()
	var p koanf.Parser
	switch f {
	case formatYAML:
		p = koanfyaml.Parser()
	case formatJSON:
		p = koanfjson.Parser()
	case formatTOML:
		p = koanftoml.Parser()
	}
	k := koanf.New(".")
	if err := k.Load(rawbytes.Provider(data), p); err != nil {
		return nil, err
	}
	return k.Raw(), nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: (?:unmarshal errors:\n\s*)?line (\d+): (.*)$`)

// syntaxError turns a parser's error into a positioned problem.
func syntaxError(ls *lines, f format, err error) *Error {
	pos := Pos{File: ls.file, Line: 1, Col: 1}
	msg := err.Error()
	var (
		jsonSyntax *json.SyntaxError
		jsonType   *json.UnmarshalTypeError
		tomlErr    *toml.DecodeError
	)
	switch {
	case errors.As(err, &jsonSyntax):
		if jsonSyntax.Offset >= int64(len(ls.data)) {
			pos = ls.end()
		} else {
			pos = ls.pos(int(max(jsonSyntax.Offset-1, 0)))
		}
	case errors.As(err, &jsonType):
		pos = ls.pos(int(max(jsonType.Offset-1, 0)))
		if jsonType.Field == "" {
			return &Error{Pos: ls.pos(0),
				Msg: fmt.Sprintf("the file must be a JSON object with keys version and pipelines, got %s", article(jsonType.Value))}
		}
	case errors.As(err, &tomlErr):
		line, col := tomlErr.Position()
		pos = Pos{File: ls.file, Line: line, Col: col}
		msg = strings.TrimPrefix(msg, "toml: ")
	case f == formatYAML:
		msg = strings.TrimPrefix(msg, "yaml: ")
		if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
			n, _ := strconv.Atoi(m[1])
			n = yamlProblemLine(ls, n, m[2])
			pos, msg = ls.lineStart(n), m[2]
			if tab := ls.indentTab(n); tab >= 0 && (strings.Contains(msg, "cannot start any token") || strings.Contains(msg, "tab character")) {
				return &Error{Pos: ls.pos(tab), Msg: "invalid YAML: a tab indents this line; YAML indents with spaces only"}
			}
		} else if strings.Contains(msg, "end of stream") {
			pos = ls.end()
		}
	}
	msg = strings.TrimPrefix(msg, "json: ")
	return &Error{Pos: pos, Msg: fmt.Sprintf("invalid %s: %s", f, msg)}
}

// yamlProblemLine finds the line of a YAML syntax error. yaml.v3 reports the line where the enclosing
// construct starts (a mapping that turns out to be badly indented, say), which can be far above the
// problem. The problem is on the first line from there whose inclusion makes a prefix of the document fail
// with the same message; when no prefix does (within a budget), the parser's line stands.
func yamlProblemLine(ls *lines, line int, msg string) int {
	budget := 4 << 20 // bytes re-parsed at most: the search is quadratic in the distance searched
	for k := line; k <= len(ls.start); k++ {
		end := len(ls.data)
		if k < len(ls.start) {
			end = ls.start[k]
		}
		if budget -= end; budget < 0 {
			break
		}
		var n yaml.Node
		if err := yaml.Unmarshal(ls.data[:end], &n); err != nil && strings.HasSuffix(err.Error(), ": "+msg) {
			return k
		}
	}
	return line
}

func article(what string) string {
	if what == "" {
		return "nothing"
	}
	if strings.ContainsRune("aeiou", rune(what[0])) {
		return "an " + what
	}
	return "a " + what
}

// yamlIndex parses a YAML document with yaml.v3's node API: it reports syntax errors, a document that is
// not a mapping, more than one document, and duplicate keys; otherwise it returns every key's and value's
// position.
func yamlIndex(ls *lines) (idx posIndex, errs Errors) {
	defer func() {
		if r := recover(); r != nil {
			idx, errs = nil, Errors{{Pos: Pos{File: ls.file, Line: 1, Col: 1}, Msg: fmt.Sprintf("invalid YAML: parser failed: %v", r)}}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(ls.data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && err != io.EOF {
		return nil, Errors{syntaxError(ls, formatYAML, err)}
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == io.EOF:
	case err != nil:
		return nil, Errors{syntaxError(ls, formatYAML, err)}
	default:
		return nil, Errors{{Pos: Pos{File: ls.file, Line: max(next.Line, 1), Col: max(next.Column, 1)},
			Msg: "a connector file holds one YAML document; remove the second one (or the extra '---')"}}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	switch {
	case root.Kind == 0 || root.Kind == yaml.DocumentNode, root.Kind == yaml.ScalarNode && root.Tag == "!!null":
		// Empty: validation reports the missing keys.
	case root.Kind != yaml.MappingNode:
		return nil, Errors{{Pos: yamlPos(ls.file, root),
			Msg: fmt.Sprintf("the file must be a mapping with keys version and pipelines, got %s", yamlKind(root))}}
	}
	idx = posIndex{}
	w := yamlWalker{file: ls.file, idx: idx, budget: maxAliasNodes}
	errs = w.walk(root, "", 0)
	errs.sort()
	return idx, errs
}

func yamlPos(file string, n *yaml.Node) Pos {
	return Pos{File: file, Line: max(n.Line, 1), Col: max(n.Column, 1)}
}

func yamlKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	}
	return "a " + strings.TrimPrefix(n.ShortTag(), "!!") + " value"
}

// maxDepth bounds the recursion over documents: deeper values keep their parent's position.
const maxDepth = 1000

// maxAliasNodes bounds the nodes yamlWalker visits through aliases, so that a document of nested aliases
// (a "billion laughs") costs little here; the YAML decoder then refuses it for its excessive aliasing.
const maxAliasNodes = 1 << 20

// yamlWalker records the positions of a YAML document's keys and values and reports duplicate keys.
type yamlWalker struct {
	file string
	idx  posIndex
	// at is, while walking the values an alias stands for, the alias's position: those values are
	// reported there, and their keys keep the order they were written in (posEntry.nth).
	at *Pos
	// budget is how many more nodes may be visited through aliases.
	budget int
}

// pos is where the value n is reported: at n, or at the alias being walked.
func (w *yamlWalker) pos(n *yaml.Node) Pos {
	if w.at != nil {
		return *w.at
	}
	return yamlPos(w.file, n)
}

// walk records the positions under n, found at path, and reports its duplicate keys (once: not again
// through an alias).
func (w *yamlWalker) walk(n *yaml.Node, path string, depth int) Errors {
	if depth > maxDepth {
		return nil
	}
	if w.at != nil {
		if w.budget--; w.budget < 0 {
			return nil
		}
	}
	var errs Errors
	switch n.Kind {
	case yaml.MappingNode:
		seen := map[string]*yaml.Node{}
		nth := 0
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
				continue
			}
			if first, dup := seen[k.Value]; dup {
				if w.at == nil {
					errs = append(errs, &Error{Pos: yamlPos(w.file, k),
						Msg: fmt.Sprintf("duplicate key %s (first at line %d); remove one", quote(k.Value), first.Line)})
				}
				continue
			}
			seen[k.Value] = k
			p := child(path, k.Value)
			w.idx.add(p, posEntry{key: w.pos(k), val: w.pos(v), text: scalarText(v), nth: nth})
			nth++
			errs = append(errs, w.walk(v, p, depth+1)...)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := item(path, i)
			w.idx.add(p, posEntry{key: w.pos(c), val: w.pos(c), text: scalarText(c), nth: i})
			errs = append(errs, w.walk(c, p, depth+1)...)
		}
	case yaml.AliasNode:
		// The values an alias stands for are reported at the alias, in the order they were written.
		if n.Alias != nil {
			if w.at == nil {
				at := yamlPos(w.file, n)
				w.at = &at
				defer func() { w.at = nil }()
			}
			// Duplicate keys under the anchor were reported where it is written.
			_ = w.walk(n.Alias, path, depth+1)
		}
	}
	return errs
}

// scalarText is the literal text of a scalar, following an alias to one.
func scalarText(n *yaml.Node) string {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias.Value
	}
	return n.Value
}

// jsonIndex reads a JSON document's tokens and records where each key and value starts; it reports
// duplicate keys, which encoding/json would silently collapse.
func jsonIndex(ls *lines) (posIndex, Errors) {
	type frame struct {
		obj     bool
		path    string
		n       int
		wantKey bool
		key     string
		keyPos  Pos
		seen    map[string]Pos
	}
	dec := json.NewDecoder(bytes.NewReader(ls.data))
	dec.UseNumber()
	idx := posIndex{}
	var (
		stack []*frame
		errs  Errors
		prev  int
	)
	for {
		tok, err := dec.Token()
		if err != nil {
			break // io.EOF, or trailing data koanf has already accepted or rejected
		}
		start := prev
		for start < len(ls.data) && strings.IndexByte(" \t\r\n,:", ls.data[start]) >= 0 {
			start++
		}
		prev = int(dec.InputOffset())
		pos := ls.pos(start)
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			continue
		}
		if top != nil && top.obj && top.wantKey {
			key, _ := tok.(string)
			if first, dup := top.seen[key]; dup {
				errs = append(errs, &Error{Pos: pos,
					Msg: fmt.Sprintf("duplicate key %s (first at line %d); remove one", quote(key), first.Line)})
			}
			top.seen[key] = pos
			top.key, top.keyPos, top.wantKey = key, pos, false
			continue
		}
		path, keyPos := "", pos
		switch {
		case top == nil:
		case top.obj:
			path, keyPos = child(top.path, top.key), top.keyPos
			top.wantKey = true
		default:
			path = item(top.path, top.n)
			top.n++
		}
		e := posEntry{key: keyPos, val: pos}
		if num, ok := tok.(json.Number); ok {
			e.text = string(num)
			e.jsonInt = !strings.ContainsAny(e.text, ".eE")
		}
		idx.add(path, e)
		if d, ok := tok.(json.Delim); ok {
			stack = append(stack, &frame{obj: d == '{', path: path, wantKey: d == '{', seen: map[string]Pos{}})
		}
		if len(stack) > maxDepth {
			break
		}
	}
	errs.sort()
	return idx, errs
}

// builder joins koanf's values with a posIndex.
type builder struct {
	idx posIndex
}

// build converts v, found at path, into a node; a value the index does not know takes its parent's
// position.
func (b *builder) build(v any, path string, parent Pos) *node {
	return b.buildDepth(v, path, parent, 0)
}

func (b *builder) buildDepth(v any, path string, parent Pos, depth int) *node {
	e, known := b.idx[path]
	n := &node{pos: parent, key: parent}
	if known {
		n.pos, n.key = e.val, e.key
	}
	if depth > maxDepth {
		n.scalar = nil
		return n
	}
	switch x := v.(type) {
	case map[string]any:
		n.kind, n.fields = kindMap, make(map[string]*node, len(x))
		for k, c := range x {
			n.fields[k] = b.buildDepth(c, child(path, k), n.pos, depth+1)
			n.keys = append(n.keys, k)
		}
		sort.Slice(n.keys, func(i, j int) bool {
			a, c := n.fields[n.keys[i]].key, n.fields[n.keys[j]].key
			if a != c {
				return a.before(c)
			}
			// Keys at one position (under a YAML alias) keep the order they were written in.
			if x, y := b.idx[child(path, n.keys[i])], b.idx[child(path, n.keys[j])]; x.nth != y.nth {
				return x.nth < y.nth
			}
			return n.keys[i] < n.keys[j]
		})
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, c := range x {
			m[fmt.Sprint(k)] = c
		}
		return b.buildDepth(m, path, parent, depth)
	case []any:
		n.kind = kindList
		for i, c := range x {
			n.items = append(n.items, b.buildDepth(c, item(path, i), n.pos, depth+1))
		}
	case float64:
		n.scalar = x
		if known && e.jsonInt {
			if i, err := strconv.ParseInt(e.text, 10, 64); err == nil {
				n.scalar = i
			}
		}
	case int:
		n.scalar = int64(x)
	case int64:
		n.scalar = x
	case uint64:
		if x <= 1<<63-1 {
			n.scalar = int64(x)
		} else {
			n.scalar = float64(x)
		}
	case string, bool, nil:
		n.scalar = x
	case time.Time:
		// Dates and times are kept as written (YAML and TOML decode them; JSON has none).
		n.scalar = x.Format(time.RFC3339Nano)
		if known && e.text != "" {
			n.scalar = e.text
		}
	default:
		// TOML local dates and times, and any other scalar a parser may produce.
		n.scalar = fmt.Sprint(x)
		if known && e.text != "" {
			n.scalar = e.text
		}
	}
	return n
}
