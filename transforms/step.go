// Package transforms compiles and runs the steps a pipeline applies to records between its stages: filter,
// set, drop, rename, route and key, written as expressions in expr-lang/expr.
//
// # Use
//
// The config loader turns a connector file's `transforms:` list into []Step, with the position of every
// expression in the file, and calls Compile once, at load. Compile checks every expression and returns an
// *Errors naming each bad step and the column inside its expression. The host then keeps one Runner per
// stream and calls Run for each batch:
//
//	prog, err := transforms.Compile(steps)
//	r := prog.NewRunner()
//	out, failed := r.Run(batch)
//
// # The expression environment
//
// An expression sees the record as users think of it: the decoded payload's top-level fields (for a MongoDB
// change event operationType, ns, documentKey, fullDocument, …), plus meta (the metadata as a map of
// strings), key (the record key as a string), op (the operation: "insert", "update", …) and payload (the
// whole decoded payload, for field names that are not identifiers). Fields that are missing are nil, and so
// is anything reached through a nil: fullDocument.customer.name is nil when fullDocument has no customer.
//
// Payload values are plain Go values (see the codec package): numbers are int or float64, Extended JSON and BSON
// types are ObjectID, time.Time, Decimal, Binary, Timestamp and Regex. Comparison and arithmetic operators
// work across them the way a user expects: a Decimal compares exactly with numbers, an ObjectID equals its
// hex string, dates compare with dates. Helper functions are listed in funcs.go and the README.
//
// # Cost
//
// A payload is decoded at most once per record, and only when some step reads or changes payload fields;
// it is encoded back once, after the last step, and only when a step changed it. A filter that reads only
// meta, key or op never decodes a payload.
package transforms

import (
	"fmt"
	"strings"
)

// Kind is a step kind.
type Kind string

// The step kinds.
const (
	// Filter keeps the records for which its expression is true and drops the others. A nil result (a
	// missing field) counts as false; any other non-boolean result is an error.
	Filter Kind = "filter"
	// Set assigns expression results to fields (payload paths, "meta.<key>" or "key"). A path written with
	// a trailing "?" ("fullDocument.name?") is set only when its value is not nil.
	Set Kind = "set"
	// Drop removes fields.
	Drop Kind = "drop"
	// Rename moves fields to new paths.
	Rename Kind = "rename"
	// Route sets the record's destination name (metadata record.MetaRoute) from a string expression.
	Route Kind = "route"
	// Key sets the record's key from an expression (a string, bytes, a number or an ObjectID).
	Key Kind = "key"
)

// Kinds lists the step kinds in the order the documentation presents them.
var Kinds = []Kind{Filter, Set, Drop, Rename, Route, Key}

// Pos is a position in a connector file (1-based; 0 means unknown).
type Pos struct {
	Line, Col int
}

// Expr is an expression as written in a connector file.
type Expr struct {
	Text string
	// At is where the expression's text begins in the file.
	At Pos
}

// Field is one entry of a set or rename step.
type Field struct {
	// Path is the field the entry writes (set) or moves (rename): a payload path such as
	// "fullDocument.total", "meta.<key>" or "key".
	Path string
	// At is where Path is written in the file.
	At Pos
	// Expr is the value of a set entry.
	Expr Expr
	// To is the new path of a rename entry, written at ToAt.
	To   string
	ToAt Pos
}

// Step is one transform step as written in a connector file.
type Step struct {
	Kind Kind
	// At is where the step is written.
	At Pos
	// Expr is the expression of a filter, route or key step.
	Expr Expr
	// When, if its text is not empty, is the step's condition: the step runs on the records for which it
	// is true and leaves the others as they are (nil, a missing field, counts as false).
	When Expr
	// Fields are the entries of a set or rename step, in the order written.
	Fields []Field
	// Paths are the fields a drop step removes, each with its position.
	Paths []Field
}

// Error is a step that does not compile.
type Error struct {
	// Step is the index of the step in its list.
	Step int
	Kind Kind
	// Field names the entry of a set, rename or drop step ("" for the others).
	Field string
	// When is true when the error is in the step's when condition.
	When bool
	// At is the position in the file the error points at: the expression's start, or the field's.
	At Pos
	// Column is the 1-based column inside the expression where the problem is, 0 when the problem is not
	// inside an expression.
	Column int
	Msg    string
}

// Error formats the error without a file position (the config loader prepends file:line:col).
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "transforms[%d].%s", e.Step, e.Kind)
	if e.When {
		b.WriteString(".when")
	} else if e.Field != "" {
		fmt.Fprintf(&b, "[%q]", e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	if e.Column > 0 {
		fmt.Fprintf(&b, " (column %d of the expression)", e.Column)
	}
	return b.String()
}

// Errors lists every step that does not compile, in step order.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}
