package transforms

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	"github.com/sluicehq/sluice/transforms/codec"
)

// Limits that keep a connector file from hanging or exhausting the host. Expressions have no loops; the
// builtins that iterate (map, filter, all, …) are bounded by the data, and the VM's memory budget bounds
// what ranges and builtins may allocate per evaluation.
const (
	// MaxExprLen is the longest expression text accepted, in bytes.
	MaxExprLen = 4096
	// MaxNodes is the largest expression accepted, in syntax tree nodes.
	MaxNodes = 500
	// MemoryBudget bounds the values one evaluation may allocate (expr's unit: roughly elements).
	MemoryBudget = 100_000
)

// Program is a compiled list of steps. It is immutable and safe for concurrent use; each goroutine runs it
// through its own Runner.
type Program struct {
	steps []step
	// decode is true when some step reads or writes payload fields.
	decode bool
	// meta, key and op are true when some expression reads them; payload when some expression names the
	// whole payload (payload["odd-name"]).
	meta, key, op, payload bool
	// tree holds the payload paths the steps read and write (paths.go).
	tree *codec.Tree
}

func (p *Program) uses(u usage) {
	p.decode = p.decode || u.payload
	p.meta = p.meta || u.meta
	p.key = p.key || u.key
	p.op = p.op || u.op
	p.payload = p.payload || u.whole
}

// Len returns the number of steps.
func (p *Program) Len() int { return len(p.steps) }

type step struct {
	kind   Kind
	prog   *program    // filter, route, key
	when   *program    // nil: the step always runs
	fields []compField // set, rename, drop
	index  int
}

type compField struct {
	path target
	to   target
	prog *program
	// optional: set only a value that is not nil (a path written with a trailing "?").
	optional bool
}

// area is the part of a record a path addresses.
type area uint8

const (
	areaPayload area = iota
	areaMeta
	areaKey
)

// target is a parsed field path.
type target struct {
	// node is the path's node in the program's path tree (payload paths).
	node *codec.Node
	area area
	// path holds the payload path's segments; for meta, path[0] is the metadata key.
	path []string
	text string
}

// parsePath parses a field path: "a.b.c" (payload), "payload.a.b" (payload, for fields named like the
// reserved names), "meta.<key>" (the rest is the metadata key, dots included) or "key".
func parsePath(s string) (target, error) {
	t := target{text: s}
	switch {
	case s == "":
		return t, errors.New("empty field path")
	case s == "key":
		t.area = areaKey
		return t, nil
	case s == "op":
		return t, errors.New(`"op" cannot be changed by a step; it is the operation the source reported`)
	case s == "meta" || s == "payload":
		return t, fmt.Errorf("%q names the whole %s; name a field in it (%q)", s, s, s+".name")
	case strings.HasPrefix(s, "meta."):
		t.area = areaMeta
		t.path = []string{s[len("meta."):]}
		return t, nil
	case strings.HasPrefix(s, "payload."):
		s = s[len("payload."):]
	}
	t.area = areaPayload
	t.path = strings.Split(s, ".")
	for _, seg := range t.path {
		if seg == "" {
			return t, fmt.Errorf("field path %q has an empty segment", t.text)
		}
	}
	return t, nil
}

// docName is the environment entry holding the decoded payload. Every identifier that is not a reserved
// name, a function or a variable is rewritten to a member of it (operationType → __doc.operationType), so
// that the environment is a small map the Runner reuses rather than a copy of each payload.
const docName = "__doc"

// envShape declares the types of the environment's fixed names for the type checker; payload fields are
// not declared (their types are only known at run time).
var envShape = map[string]any{
	"meta":    map[string]string{},
	"key":     "",
	"op":      "",
	"payload": map[string]any{},
	docName:   map[string]any{},
}

// usage records what an expression reads, gathered while patching its syntax tree.
type usage struct {
	payload, meta, key, op bool
	// whole: the expression names the whole payload (payload).
	whole bool
	// paths are the payload paths the expression reads.
	paths *pathUse
}

// Compile compiles steps. It reports every step that does not compile, not only the first, as Errors.
func Compile(steps []Step) (*Program, error) {
	p := &Program{tree: codec.NewTree()}
	var errs Errors
	// use records what an expression reads.
	use := func(u usage) {
		p.uses(u)
		if u.payload {
			u.paths.addTo(p.tree)
		}
	}
	for i, s := range steps {
		cs := step{kind: s.Kind, index: i}
		fail := func(field string, at Pos, col int, msg string) {
			errs = append(errs, &Error{Step: i, Kind: s.Kind, Field: field, At: at, Column: col, Msg: msg})
		}
		if s.When.Text != "" {
			prog, u, col, err := compileExpr(s.When.Text, wantBool)
			if err != nil {
				errs = append(errs, &Error{Step: i, Kind: s.Kind, When: true, At: s.When.At, Column: col, Msg: err.Error()})
			} else {
				cs.when = prog
				use(u)
			}
		}
		switch s.Kind {
		case Filter, Route, Key:
			var want exprType
			switch s.Kind {
			case Filter:
				want = wantBool
			case Route:
				want = wantString
			}
			prog, u, col, err := compileExpr(s.Expr.Text, want)
			if err != nil {
				fail("", s.Expr.At, col, err.Error())
				continue
			}
			cs.prog = prog
			use(u)
		case Set:
			if len(s.Fields) == 0 {
				fail("", s.At, 0, "set needs at least one field: { path: expression }")
			}
			for _, f := range s.Fields {
				path, optional := strings.CutSuffix(f.Path, "?")
				t, err := parsePath(path)
				if err != nil {
					fail(f.Path, f.At, 0, err.Error())
					continue
				}
				prog, u, col, err := compileExpr(f.Expr.Text, wantAny)
				if err != nil {
					fail(f.Path, f.Expr.At, col, err.Error())
					continue
				}
				use(u)
				p.decode = p.decode || t.area == areaPayload
				cs.fields = append(cs.fields, compField{path: t, prog: prog, optional: optional})
			}
		case Drop:
			if len(s.Paths) == 0 {
				fail("", s.At, 0, "drop needs at least one field path")
			}
			for _, f := range s.Paths {
				t, err := parsePath(f.Path)
				if err != nil {
					fail(f.Path, f.At, 0, err.Error())
					continue
				}
				cs.fields = append(cs.fields, compField{path: t})
				p.decode = p.decode || t.area == areaPayload
			}
		case Rename:
			if len(s.Fields) == 0 {
				fail("", s.At, 0, "rename needs at least one field: { from: to }")
			}
			for _, f := range s.Fields {
				from, err := parsePath(f.Path)
				if err != nil {
					fail(f.Path, f.At, 0, err.Error())
					continue
				}
				to, err := parsePath(f.To)
				if err != nil {
					fail(f.Path, f.ToAt, 0, err.Error())
					continue
				}
				if from.text == to.text {
					fail(f.Path, f.ToAt, 0, "renames a field to itself")
					continue
				}
				cs.fields = append(cs.fields, compField{path: from, to: to})
				p.decode = p.decode || from.area == areaPayload || to.area == areaPayload
			}
		default:
			fail("", s.At, 0, fmt.Sprintf("unknown step kind %q", s.Kind))
			continue
		}
		p.steps = append(p.steps, cs)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	// The paths steps write, drop and move. A dropped or moved path is also read: a drop must know whether
	// the field was there, a rename needs its value.
	for i := range p.steps {
		st := &p.steps[i]
		for j := range st.fields {
			f := &st.fields[j]
			if f.path.area == areaPayload {
				if st.kind != Set {
					p.tree.Read(f.path.path)
				}
				f.path.node = p.tree.Write(f.path.path)
			}
			if f.to.area == areaPayload && len(f.to.path) > 0 {
				f.to.node = p.tree.Write(f.to.path)
			}
		}
	}
	return p, nil
}

type exprType uint8

const (
	wantAny exprType = iota
	wantBool
	wantString
)

// program is one compiled expression.
type program struct {
	vm   *vm.Program
	text string
	// calls describes the function calls of the expression by where they are, to name the argument a
	// run-time error is about.
	calls map[int][]call
	// members are the field paths the expression reads, by where they are.
	members map[int]string
	// constant: the expression is a literal (true, "orders", 5) whose value is value, for every record.
	constant bool
	value    any
}

// compileExpr compiles one expression. On error it returns the 1-based column inside the expression when
// the error has one.
func compileExpr(text string, want exprType) (*program, usage, int, error) {
	var u usage
	if strings.TrimSpace(text) == "" {
		return nil, u, 0, errors.New("empty expression")
	}
	if len(text) > MaxExprLen {
		return nil, u, 0, fmt.Errorf("expression is %d bytes long; the limit is %d", len(text), MaxExprLen)
	}
	vars := &variables{names: map[string]bool{}}
	u.paths = newPathUse()
	calls := &callSites{sites: map[int][]call{}, members: map[int]string{}}
	checks := &checks{}
	direct := &direct{names: map[*ast.CallNode]string{}}
	opts := []expr.Option{
		expr.Env(envShape),
		expr.MaxNodes(MaxNodes),
		expr.Patch(vars),
		expr.Patch(&fields{vars: vars, u: &u}),
		expr.Patch(u.paths),
		expr.Patch(checks),
		expr.Patch(&nilSafe{}),
		expr.Patch(operators{}),
		expr.Patch(builtins{}),
		expr.Patch(getters{}),
		expr.Patch(calls),
		expr.Patch(direct), // last: the passes above know calls by name
	}
	opts = append(opts, functions...)
	switch want {
	case wantString:
		opts = append(opts, expr.AsKind(reflect.String))
	}
	prog, err := expr.Compile(text, opts...)
	if err == nil && checks.err != nil {
		err = checks.err
	}
	if err == nil && want == wantBool {
		// A condition's value is checked here when its type is known, and at run time otherwise (nil
		// counts as false there, which expr's AsBool would refuse).
		if t := prog.Node().Type(); t != nil && t.Kind() != reflect.Bool && t.Kind() != reflect.Interface {
			err = fmt.Errorf("expected bool, but got %s", typeName(reflect.Zero(t).Interface()))
		} else {
			err = notBoolean(prog.Node(), direct)
		}
	}
	if err != nil {
		return nil, u, compileColumn(err), compileError(text, err)
	}
	p := &program{vm: prog, text: text, calls: calls.sites, members: calls.members}
	switch prog.Node().(type) {
	case *ast.BoolNode, *ast.StringNode, *ast.IntegerNode, *ast.FloatNode, *ast.NilNode:
		// Computed once, here, rather than by the VM for each record.
		var m vm.VM
		if v, err := m.Run(prog, map[string]any{}); err == nil {
			p.constant, p.value = true, v
		}
	}
	return p, u, 0, nil
}

// compileColumn returns the 1-based column an expr compile error points at, 0 when it has none.
func compileColumn(err error) int {
	var fe *file.Error
	if errors.As(err, &fe) {
		return fe.Column + 1 // expr counts from 0
	}
	var ce *checkError
	if errors.As(err, &ce) {
		return ce.col
	}
	return 0
}

// compileError rewrites expr's compile errors into sluice's words, with a "did you mean" where one helps.
func compileError(text string, err error) error {
	var fe *file.Error
	if !errors.As(err, &fe) {
		return err
	}
	msg := fe.Message
	switch {
	case strings.HasPrefix(msg, "unknown name "):
		name := strings.TrimPrefix(msg, "unknown name ")
		if calls(text, fe.Column, name) {
			msg = fmt.Sprintf("unknown function %s%s", name, didYouMean(name, functionList()))
		}
	case strings.HasPrefix(msg, "unknown func "):
		name := strings.TrimPrefix(msg, "unknown func ")
		msg = fmt.Sprintf("unknown function %s%s", name, didYouMean(name, functionList()))
	case strings.Contains(msg, `unexpected token Operator("=")`):
		msg = `unexpected "=": did you mean "==" (equality)?`
	}
	return errors.New(msg)
}

// nilSafe makes every member access nil-safe, as if written with ?.: a missing field reads as nil, and so
// does anything reached through it.
type nilSafe struct{}

func (nilSafe) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.MemberNode:
		if n.Method {
			return
		}
		n.Optional = true
		ast.Patch(node, &ast.ChainNode{Node: n})
	case *ast.CallNode:
		// A method call's callee must stay a member node.
		if c, ok := n.Callee.(*ast.ChainNode); ok {
			if m, ok := c.Node.(*ast.MemberNode); ok {
				m.Optional = false
				n.Callee = m
			}
		}
	}
}

// variables collects the names an expression declares with let.
type variables struct{ names map[string]bool }

func (v *variables) Visit(node *ast.Node) {
	if n, ok := (*node).(*ast.VariableDeclaratorNode); ok {
		v.names[n.Name] = true
	}
}

// fields rewrites payload field names to members of the decoded payload and records which parts of the
// record the expression reads.
type fields struct {
	vars *variables
	u    *usage
}

func (f *fields) Visit(node *ast.Node) {
	if c, ok := (*node).(*ast.CallNode); ok {
		// An unknown function name is not a field: keep it, so the error says "unknown func".
		if m, ok := c.Callee.(*ast.MemberNode); ok {
			if id, ok := m.Node.(*ast.IdentifierNode); ok && id.Value == docName {
				if s, ok := m.Property.(*ast.StringNode); ok {
					c.Callee = &ast.IdentifierNode{Value: s.Value}
				}
			}
		}
		return
	}
	n, ok := (*node).(*ast.IdentifierNode)
	if !ok {
		return
	}
	switch name := n.Value; {
	case name == "meta":
		f.u.meta = true
	case name == "key":
		f.u.key = true
	case name == "op":
		f.u.op = true
	case name == "payload":
		f.u.payload, f.u.whole = true, true
		f.u.paths.whole = true
	case name == docName, strings.HasPrefix(name, "__"), f.vars.names[name], strings.HasPrefix(name, "$"):
	default:
		f.u.payload = true
		ast.Patch(node, &ast.MemberNode{
			Node:     &ast.IdentifierNode{Value: docName},
			Property: &ast.StringNode{Value: name},
		})
	}
}
