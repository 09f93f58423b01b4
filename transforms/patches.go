package transforms

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"

	"github.com/sluicehq/sluice/transforms/codec"
)

// The syntax-tree passes that give expressions sluice's value model (see values.go): operators become
// calls to sluice's functions, boolean contexts accept nil as false, the builtins that iterate accept nil
// as an empty array, and every call site is recorded so that a run-time error names the field it is about.

// opFuncs maps the binary operators whose meaning sluice extends to the functions that implement them.
var opFuncs = map[string]string{
	"==": "__eq", "!=": "__ne", "<": "__lt", "<=": "__le", ">": "__gt", ">=": "__ge",
	"+": "__add", "-": "__sub", "*": "__mul", "/": "__div", "%": "__mod", "**": "__pow", "^": "__pow",
	"in": "__in", "contains": "__contains", "startsWith": "__startsWith", "endsWith": "__endsWith",
	"matches": "__matches",
}

// opNames is how messages name the operator functions.
var opNames = func() map[string]string {
	m := map[string]string{"__neg": "-", "__bool": "a condition", "__array": ""}
	for op, fn := range opFuncs {
		m[fn] = op
	}
	m["__pow"] = "**"
	return m
}()

// boolFuncs are the functions known to return a bool (never nil).
var boolFuncs = map[string]bool{
	"__eq": true, "__ne": true, "__lt": true, "__le": true, "__gt": true, "__ge": true, "__in": true,
	"__contains": true, "__startsWith": true, "__endsWith": true, "__matches": true, "__bool": true,
	"hasPrefix": true, "hasSuffix": true,
}

// operators replaces operators with calls to sluice's versions, and makes boolean contexts (&&, ||, !,
// not, ?:) treat nil as false.
type operators struct{}

func (operators) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.BinaryNode:
		switch n.Operator {
		case "&&", "||", "and", "or":
			n.Left, n.Right = asBool(n.Left), asBool(n.Right)
			return
		}
		if fn, ok := opFuncs[n.Operator]; ok {
			ast.Patch(node, callNode(fn, n.Location().From, n.Left, n.Right))
		}
	case *ast.UnaryNode:
		switch n.Operator {
		case "!", "not":
			n.Node = asBool(n.Node)
		case "-":
			ast.Patch(node, callNode("__neg", n.Location().From, n.Node))
		}
	case *ast.ConditionalNode:
		n.Cond = asBool(n.Cond)
	}
}

func callNode(fn string, from int, args ...ast.Node) *ast.CallNode {
	c := &ast.CallNode{Callee: &ast.IdentifierNode{Value: fn}, Arguments: args}
	c.SetLocation(locationAt(from))
	c.Callee.SetLocation(locationAt(from))
	return c
}

// asBool wraps n in __bool unless it is known to give a bool.
func asBool(n ast.Node) ast.Node {
	switch x := n.(type) {
	case *ast.BoolNode, *ast.UnaryNode:
		return n
	case *ast.BinaryNode:
		switch x.Operator {
		case "&&", "||", "and", "or":
			return n
		}
	case *ast.CallNode:
		if id, ok := x.Callee.(*ast.IdentifierNode); ok && boolFuncs[id.Value] {
			return n
		}
	case *ast.BuiltinNode:
		switch x.Name {
		case "all", "any", "none", "one":
			return n
		}
	}
	if t := n.Type(); t != nil && t.Kind() == reflect.Bool {
		return n
	}
	return callNode("__bool", n.Location().From, n)
}

// iterating are expr's builtins that take an array and a predicate.
var iterating = map[string]bool{
	"all": true, "none": true, "any": true, "one": true, "filter": true, "map": true, "count": true,
	"find": true, "findIndex": true, "findLast": true, "findLastIndex": true, "groupBy": true, "reduce": true,
}

// conditions are the builtins whose predicate is a condition.
var conditions = map[string]bool{
	"all": true, "none": true, "any": true, "one": true, "filter": true, "count": true,
	"find": true, "findIndex": true, "findLast": true, "findLastIndex": true,
}

// builtins makes the builtins that iterate take nil as an empty array (and say clearly when given
// something else), and routes sum and sortBy through sluice's arithmetic and ordering.
type builtins struct{}

func (builtins) Visit(node *ast.Node) {
	n, ok := (*node).(*ast.BuiltinNode)
	if !ok || len(n.Arguments) == 0 {
		return
	}
	from := n.Location().From
	arr := func() ast.Node { return callNode("__array", from, n.Arguments[0], &ast.StringNode{Value: n.Name}) }
	switch {
	case iterating[n.Name]:
		n.Arguments[0] = arr()
		if conditions[n.Name] && len(n.Arguments) > 1 {
			if p, ok := n.Arguments[1].(*ast.PredicateNode); ok {
				p.Node = asBool(p.Node)
			}
		}
	case n.Name == "sum":
		var list ast.Node = arr()
		if len(n.Arguments) == 2 {
			m := &ast.BuiltinNode{Name: "map", Arguments: []ast.Node{list, n.Arguments[1]}}
			m.SetLocation(locationAt(from))
			list = m
		}
		ast.Patch(node, callNode("__sum", from, list))
	case n.Name == "sortBy":
		// sortBy(a, key, order) → __sortBy(map(a, [#, key]), order): each element with its key, sorted by
		// sluice's order.
		p, ok := n.Arguments[1].(*ast.PredicateNode)
		if !ok {
			return
		}
		pair := &ast.ArrayNode{Nodes: []ast.Node{&ast.PointerNode{}, p.Node}}
		pair.SetLocation(p.Location())
		p.Node = pair
		pairs := &ast.BuiltinNode{Name: "map", Arguments: []ast.Node{arr(), p}}
		pairs.SetLocation(locationAt(from))
		ast.Patch(node, callNode("__sortBy", from, append([]ast.Node{pairs}, n.Arguments[2:]...)...))
	}
}

// getters replaces each chain of field accesses (fullDocument?.customer?.name, written
// fullDocument.customer.name) with one call, __get(base, "customer", "name"): expr fetches a field through
// reflection, allocating, where __get indexes the maps directly. A nil on the way gives nil, as ?. does.
type getters struct{}

func (getters) Visit(node *ast.Node) {
	c, ok := (*node).(*ast.ChainNode)
	if !ok {
		return
	}
	m, ok := c.Node.(*ast.MemberNode)
	if !ok || m.Method {
		return
	}
	prop, ok := m.Property.(*ast.StringNode)
	if !ok {
		return
	}
	if base, ok := m.Node.(*ast.CallNode); ok {
		if id, ok := base.Callee.(*ast.IdentifierNode); ok && id.Value == "__get" {
			base.Arguments = append(base.Arguments, &ast.StringNode{Value: prop.Value})
			*node = base
			return
		}
	}
	ast.Patch(node, callNode("__get", m.Location().From, m.Node, &ast.StringNode{Value: prop.Value}))
}

// call describes one function call of an expression, for run-time messages.
type call struct {
	fn   string   // the function called (its internal name)
	name string   // how messages name it
	args []string // each argument as a field path, or "" when it is not one
}

// callSites records every call of an expression by the position of the call, and every field read
// through a member chain by its position.
type callSites struct {
	sites   map[int][]call
	members map[int]string
}

func (c *callSites) Visit(node *ast.Node) {
	if m, ok := (*node).(*ast.MemberNode); ok {
		if p := pathText(m); p != "" {
			c.members[m.Location().From] = p
		}
		return
	}
	n, ok := (*node).(*ast.CallNode)
	if !ok {
		return
	}
	id, ok := n.Callee.(*ast.IdentifierNode)
	if !ok {
		return
	}
	cl := call{fn: id.Value, name: id.Value}
	if op, ok := opNames[id.Value]; ok {
		cl.name = op
	}
	for i, a := range n.Arguments {
		if id.Value == "__get" && i > 0 {
			// The path read so far, for "fullDocument.customer is a string".
			prefix := &ast.CallNode{Callee: id, Arguments: n.Arguments[:i]}
			cl.args = append(cl.args, pathText(prefix))
			continue
		}
		cl.args = append(cl.args, pathText(a))
	}
	if id.Value == "__array" && len(n.Arguments) == 2 {
		if s, ok := n.Arguments[1].(*ast.StringNode); ok {
			cl.name = s.Value
		}
	}
	from := n.Location().From
	c.sites[from] = append(c.sites[from], cl)
}

// pathText returns the field path n reads (fullDocument.customer, meta["x"], key), or "".
func pathText(n ast.Node) string {
	switch x := unchain(n).(type) {
	case *ast.CallNode:
		id, ok := x.Callee.(*ast.IdentifierNode)
		if !ok || id.Value != "__get" || len(x.Arguments) < 2 {
			return ""
		}
		base := ""
		if b, ok := x.Arguments[0].(*ast.IdentifierNode); !ok || b.Value != docName {
			if base = pathText(x.Arguments[0]); base == "" {
				return ""
			}
		}
		for _, a := range x.Arguments[1:] {
			s, ok := a.(*ast.StringNode)
			if !ok {
				return ""
			}
			switch {
			case base == "":
				base = s.Value
			case base == "meta" || base == "payload":
				base = fmt.Sprintf("%s[%q]", base, s.Value)
			default:
				base += "." + s.Value
			}
		}
		return base
	case *ast.IdentifierNode:
		switch x.Value {
		case "meta", "key", "op", "payload":
			return x.Value
		}
		return ""
	case *ast.MemberNode:
		if id, ok := unchain(x.Node).(*ast.IdentifierNode); ok && id.Value == docName {
			if s, ok := x.Property.(*ast.StringNode); ok {
				return s.Value
			}
			return ""
		}
		base := pathText(x.Node)
		if base == "" {
			return ""
		}
		switch p := x.Property.(type) {
		case *ast.StringNode:
			if base == "meta" || base == "payload" {
				return fmt.Sprintf("%s[%q]", base, p.Value)
			}
			return base + "." + p.Value
		case *ast.IntegerNode:
			return fmt.Sprintf("%s[%d]", base, p.Value)
		}
	}
	return ""
}

// methods are the methods payload values have (dates, ObjectIDs, Decimals, Timestamps, Binary).
var methods = func() []string {
	var names []string
	for _, v := range []any{time.Time{}, codec.ObjectID{}, codec.Decimal{}, codec.Timestamp{}, codec.Binary{}, codec.Regex{}, time.Duration(0)} {
		t := reflect.TypeOf(v)
		for i := range t.NumMethod() {
			if !slices.Contains(names, t.Method(i).Name) {
				names = append(names, t.Method(i).Name)
			}
		}
	}
	slices.Sort(names)
	return names
}()

// checkError is a problem found by sluice's own checks at compile time, with the column it is at.
type checkError struct {
	col int
	msg string
}

func (e *checkError) Error() string { return e.msg }

// checks finds, at compile time, mistakes expr cannot see because payload fields have no static type or
// sluice's functions declare none: a method that no payload value has (fullDocument.customer.upper()), a
// wrong number of arguments.
type checks struct{ err error }

func (c *checks) Visit(node *ast.Node) {
	if c.err != nil {
		return
	}
	if b, ok := (*node).(*ast.BinaryNode); ok {
		c.pattern(b)
		return
	}
	n, ok := (*node).(*ast.CallNode)
	if !ok {
		return
	}
	if id, ok := n.Callee.(*ast.IdentifierNode); ok {
		if msg, known := argCount(id.Value, len(n.Arguments)); known && msg != "" {
			c.err = &checkError{col: n.Location().From + 1, msg: msg}
		}
		return
	}
	m, ok := unchain(n.Callee).(*ast.MemberNode)
	if !ok || !m.Method {
		return
	}
	name, ok := m.Property.(*ast.StringNode)
	if !ok || slices.Contains(methods, name.Value) {
		return
	}
	base := pathText(m.Node)
	if base == "" {
		return
	}
	msg := fmt.Sprintf("%s.%s(): payload values have no method %s", base, name.Value, name.Value)
	if isFunction(name.Value) || isBuiltin(name.Value) {
		msg += fmt.Sprintf("; call the function instead: %s(%s)", name.Value, base)
	} else {
		msg += didYouMean(name.Value, methods)
	}
	c.err = &checkError{col: m.Location().From + 1, msg: msg}
}

// pattern checks the regular expression of a matches operator when it is written in the expression: one
// that does not compile would fail every record.
func (c *checks) pattern(b *ast.BinaryNode) {
	s, ok := b.Right.(*ast.StringNode)
	if b.Operator != "matches" || !ok {
		return
	}
	if _, err := regexp.Compile(s.Value); err != nil {
		c.err = &checkError{col: b.Right.Location().From + 1, msg: fmt.Sprintf("matches: %v", err)}
	}
}

// notBoolean reports a filter or when whose expression cannot give true or false: arithmetic, or a
// function that gives a string or a number. A bare field (filter: fullDocument.active) may hold a bool,
// so it is left to run time (and to `sluice validate --sample`).
func notBoolean(n ast.Node, d *direct) error {
	c, ok := n.(*ast.CallNode)
	if !ok {
		return nil
	}
	name := d.calleeName(c)
	what := ""
	switch name {
	case "":
		return nil
	case "__add", "__sub", "__mul", "__div", "__mod", "__pow", "__neg":
		what = "a number (arithmetic)"
	default:
		if valueFuncs[name] {
			what = "the result of " + name + "()"
		}
	}
	if what == "" {
		return nil
	}
	return &checkError{col: c.Location().From + 1, msg: fmt.Sprintf("a condition must be true or false, and this expression gives %s: compare it (== != < >) or test it (!= nil)", what)}
}

// didYouMean returns `; did you mean "x"?` for the candidate closest to name, or "".
func didYouMean(name string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if strings.HasPrefix(c, "__") {
			continue
		}
		d := distance(strings.ToLower(name), strings.ToLower(c))
		if d < bestD || d == bestD && best != "" && c < best {
			best, bestD = c, d
		}
	}
	if best == "" || bestD >= len(name)/2+1 {
		return ""
	}
	return fmt.Sprintf("; did you mean %s?", best)
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// locationAt is the location of a node that starts at character from.
func locationAt(from int) file.Location { return file.Location{From: from, To: from} }

// calls reports whether text calls name at column col (0-based, in characters).
func calls(text string, col int, name string) bool {
	r := []rune(text)
	if col < 0 || col > len(r) {
		return false
	}
	rest := strings.TrimPrefix(string(r[col:]), name)
	return strings.HasPrefix(strings.TrimLeft(rest, " "), "(")
}

// direct turns the calls of sluice's internal functions into calls of their directFuncs: expr's VM calls
// a function value of such a type with the arguments on its stack, where it gives a declared function a
// slice it allocates on every evaluation. A chain of fields, __get(base, "a", "b"), becomes a call with
// the names as one constant, __get(base, ["a", "b"]). It runs after every other pass, which know these
// calls by their callee's name; names keeps that name for the checks made after compiling (notBoolean).
type direct struct{ names map[*ast.CallNode]string }

func (d *direct) Visit(node *ast.Node) {
	c, ok := (*node).(*ast.CallNode)
	if !ok {
		return
	}
	id, ok := c.Callee.(*ast.IdentifierNode)
	if !ok {
		return
	}
	fn, ok := directFuncs[id.Value]
	if !ok {
		return
	}
	args := c.Arguments
	if id.Value == "__get" {
		if len(args) < 2 {
			return
		}
		path := make([]string, 0, len(args)-1)
		for _, a := range args[1:] {
			s, ok := a.(*ast.StringNode)
			if !ok {
				return
			}
			path = append(path, s.Value)
		}
		names := &ast.ConstantNode{Value: path}
		names.SetType(reflect.TypeOf(path))
		names.SetLocation(args[1].Location())
		args = []ast.Node{args[0], names}
	}
	if reflect.TypeOf(fn).NumIn() != len(args) {
		return
	}
	callee := &ast.ConstantNode{Value: fn}
	callee.SetType(reflect.TypeOf(fn))
	callee.SetLocation(id.Location())
	c.Callee, c.Arguments = callee, args
	d.names[c] = id.Value
}

// calleeName is the name of the function c calls, "" when it calls none by name.
func (d *direct) calleeName(c *ast.CallNode) string {
	if id, ok := c.Callee.(*ast.IdentifierNode); ok {
		return id.Value
	}
	return d.names[c]
}
