package transforms

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms/codec"
)

// Change events as a MongoDB source emits them (relaxed Extended JSON), for the value model's tests.
const (
	insertEvent = `{"_id": {"_data": "8264"}, "operationType": "insert",
 "clusterTime": {"$timestamp": {"t": 1700000000, "i": 3}}, "wallTime": {"$date": "2023-11-14T22:13:20.200Z"},
 "ns": {"db": "shop", "coll": "orders"}, "documentKey": {"_id": {"$oid": "6553f100c4d5e6f708192a3b"}},
 "fullDocument": {"_id": {"$oid": "6553f100c4d5e6f708192a3b"}, "customer": "bob", "total": {"$numberDecimal": "99.99"},
  "qty": 3, "ratio": 0.5, "placed": {"$date": "2024-01-02T03:04:05.200Z"}, "deleted": false,
  "items": [{"sku": "a", "price": {"$numberDecimal": "10.10"}}, {"sku": "b", "price": {"$numberDecimal": "2.5"}}, {"sku": "c", "price": {"$numberDecimal": "7"}}],
  "tags2": [{"n": 1}, {"n": 2}], "lag_ms": null}}`
	deleteEvent = `{"_id": {"_data": "8265"}, "operationType": "delete",
 "clusterTime": {"$timestamp": {"t": 1700000001, "i": 1}}, "wallTime": {"$date": "2023-11-14T22:13:21.000Z"},
 "ns": {"db": "shop", "coll": "orders"}, "documentKey": {"_id": {"$oid": "6553f100c4d5e6f708192a3b"}}}`
)

// eval evaluates one expression on a decoded payload, as a set step would.
func eval(t *testing.T, text, payload string) (any, error) {
	t.Helper()
	prog, err := Compile([]Step{set("out", text)})
	if err != nil {
		return nil, err
	}
	doc, err := codec.DecodeJSON([]byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	r := prog.NewRunner()
	r.env[docName], r.env["payload"] = doc, doc
	r.env["meta"], r.env["key"], r.env["op"] = map[string]string{"mongodb.coll": "orders"}, "k", "insert"
	return r.eval(prog.steps[0].fields[0].prog)
}

func mustDec(s string) codec.Decimal {
	d, err := codec.ParseDecimal(s)
	if err != nil {
		panic(err)
	}
	return d
}

// TestIssueExpressions are the expressions users wrote on change events that surprised them, with what
// they give now.
func TestIssueExpressions(t *testing.T) {
	tests := []struct {
		expr    string
		payload string // insertEvent when empty
		want    any
		wantErr string
	}{
		// A missing field is nil everywhere: functions of one value give nil, conditions treat it as false.
		{expr: `upper(fullDocument.customer)`, payload: deleteEvent, want: nil},
		{expr: `upper(fullDocument.customer)`, want: "BOB"},
		{expr: `not fullDocument.deleted`, payload: deleteEvent, want: true},
		{expr: `not fullDocument.nope`, want: true},
		{expr: `!fullDocument.deleted && fullDocument.nope == nil`, want: true},
		{expr: `fullDocument.nope ? 1 : 2`, want: 2},
		{expr: `sum(map(fullDocument.tags2, .n))`, want: 3},
		{expr: `sum(map(fullDocument.tags3, .n))`, want: 0},
		{expr: `sum(fullDocument.tags2, .n)`, want: 3},
		{expr: `len(fullDocument.nope)`, want: 0},
		{expr: `map(fullDocument.nope, # + 1)`, want: []any{}},
		{expr: `all(fullDocument.nope, # > 1)`, want: true},
		{expr: `string(fullDocument.nope)`, want: nil},
		{expr: `string(fullDocument.total)`, want: "99.99"},
		{expr: `string(documentKey._id)`, want: "6553f100c4d5e6f708192a3b"},
		{expr: `string(fullDocument.placed)`, want: "2024-01-02T03:04:05.200Z"},
		{expr: `hasPrefix(fullDocument.nope, "a")`, want: false},
		{expr: `fullDocument.nope contains "a"`, want: false},
		{expr: `fullDocument.nope matches "^a"`, want: false},
		{expr: `fullDocument.customer matches "^b"`, want: true},
		{expr: `trim(fullDocument.nope)`, want: nil},
		{expr: `int(fullDocument.nope)`, want: nil},
		{expr: `fullDocument.nope in ["a"]`, want: false},
		{expr: `"a" in fullDocument.nope`, want: false},
		{expr: `first(fullDocument.nope)`, want: nil},
		{expr: `max(fullDocument.nope)`, want: nil},
		// One equality and one order: ==, in, sorting, min, max, abs, sum agree on Decimal, ObjectID, dates.
		{expr: `fullDocument.total == 99.99`, want: true},
		{expr: `fullDocument.total in [99.99, 5]`, want: true},
		{expr: `99.99 in [fullDocument.total]`, want: true},
		{expr: `documentKey._id in ["6553f100c4d5e6f708192a3b"]`, want: true},
		{expr: `fullDocument.qty in [3.0]`, want: true},
		{expr: `fullDocument.placed in [date("2024-01-02T03:04:05.2Z")]`, want: true},
		{expr: `abs(decimal("-1.5"))`, want: mustDec("1.5")},
		{expr: `max(fullDocument.total, 100)`, want: 100},
		{expr: `max(fullDocument.total, 50)`, want: mustDec("99.99")},
		{expr: `min(map(fullDocument.items, .price))`, want: mustDec("2.5")},
		{expr: `map(sortBy(fullDocument.items, .price), .sku)`, want: []any{"b", "c", "a"}},
		{expr: `map(sortBy(fullDocument.items, .price, "desc"), .sku)`, want: []any{"a", "c", "b"}},
		{expr: `sort([fullDocument.total, 1, 200.5])`, want: []any{1, mustDec("99.99"), 200.5}},
		{expr: `sum(fullDocument.items, .price)`, want: mustDec("19.60")},
		{expr: `uniq([documentKey._id, fullDocument._id])`, want: []any{mustOID("6553f100c4d5e6f708192a3b")}},
		{expr: `median([1, 3, 2])`, want: 2},
		// Decimal arithmetic stays Decimal (money does not become 49.995000000000005).
		{expr: `fullDocument.total / 2`, want: mustDec("49.995")},
		{expr: `fullDocument.total * fullDocument.qty`, want: mustDec("299.97")},
		{expr: `fullDocument.total + 0.01`, want: mustDec("100.00")},
		{expr: `-fullDocument.total`, want: mustDec("-99.99")},
		{expr: `float(fullDocument.total / 2)`, want: 49.995},
		{expr: `round(fullDocument.total)`, want: mustDec("100")},
		{expr: `floor(fullDocument.total)`, want: mustDec("99")},
		{expr: `int(fullDocument.total)`, want: 99},
		{expr: `decimal("1") / 3`, want: mustDec("0.3333333333333333333333333333333333")},
		{expr: `fullDocument.total / 0`, wantErr: "division by zero"},
		// Extended JSON, and the times ObjectIDs and Timestamps hold.
		{expr: `toJSON(fullDocument._id)`, want: `{"$oid":"6553f100c4d5e6f708192a3b"}`},
		{expr: `toJSON({"t": fullDocument.total, "p": fullDocument.placed})`, want: `{"p":{"$date":"2024-01-02T03:04:05.200Z"},"t":{"$numberDecimal":"99.99"}}`},
		{expr: `toJSON(fullDocument.nope)`, want: `null`},
		{expr: `fromJSON('{"a": {"$numberLong": "5"}}').a`, want: 5},
		{expr: `oidTime(documentKey._id)`, want: time.Date(2023, 11, 14, 22, 13, 20, 0, time.UTC)},
		{expr: `timestampDate(clusterTime)`, want: time.Date(2023, 11, 14, 22, 13, 20, 0, time.UTC)},
		{expr: `timestampDate(clusterTime) == wallTime`, want: false},
		{expr: `oidTime(documentKey._id).Year()`, want: 2023},
		{expr: `fullDocument.placed + duration("1h") == date("2024-01-02T04:04:05.2Z")`, want: true},
		{expr: `fullDocument.placed - duration("1s") < fullDocument.placed`, want: true},
		{expr: `(fullDocument.placed - wallTime) > duration("1h")`, want: true},
		{expr: `type(fullDocument.total)`, want: "Decimal"},
		{expr: `type(fullDocument.nope)`, want: "nil"},
		// Fields named like functions are fields; calls are calls.
		{expr: `type == "change" && date == 1 && len(keys) == 2 && type(type) == "string"`, payload: `{"type": "change", "date": 1, "keys": [1, 2]}`, want: true},
		// Errors name the field and say what was wanted, never Go's internals.
		{expr: `upper(fullDocument.total)`, wantErr: `upper(): fullDocument.total is 99.99 (Decimal), want a string`},
		{expr: `fullDocument.nope * 100`, wantErr: `operator *: fullDocument.nope is nil (a missing field?)`},
		{expr: `not fullDocument.customer`, wantErr: `a condition must be true or false (or nil): fullDocument.customer is "bob" (string)`},
		{expr: `map(fullDocument.customer, # + 1)`, wantErr: `map(): fullDocument.customer is "bob" (string), want an array`},
		{expr: `fullDocument.customer > 5`, wantErr: `invalid operation: string > int`},
		{expr: `documentKey._id < 5`, wantErr: `invalid operation: ObjectID < int`},
		{expr: `trim(fullDocument.customer, fullDocument.nope)`, wantErr: `trim(): fullDocument.nope is nil`},
		{expr: `date(documentKey._id)`, wantErr: `use oidTime(x)`},
		{expr: `sum(fullDocument.items, .sku)`, wantErr: `sum(): "a" (string) is not a number`},
		{expr: `fullDocument.customer.x`, wantErr: ``},
	}
	for _, tt := range tests {
		payload := tt.payload
		if payload == "" {
			payload = insertEvent
		}
		got, err := eval(t, tt.expr, payload)
		switch {
		case tt.wantErr != "" && err == nil:
			t.Errorf("%s = %v, want an error containing %q", tt.expr, show(got), tt.wantErr)
		case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
			t.Errorf("%s: error %q, want it to contain %q", tt.expr, err, tt.wantErr)
		case tt.wantErr == "" && tt.expr == `fullDocument.customer.x`:
			// Reading through a string is nil, like through a missing field, or an error that says so.
			if err != nil && !strings.Contains(err.Error(), "fullDocument.customer") {
				t.Errorf("%s: error %q names no field", tt.expr, err)
			}
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.expr, err)
		case tt.wantErr == "" && !sameValue(tt.want, got) && !sameList(tt.want, got):
			t.Errorf("%s = %s, want %s", tt.expr, show(got), show(tt.want))
		}
		if err != nil {
			goInternals(t, tt.expr, err.Error())
		}
	}
}

// TestIntegerOverflow checks that int and duration arithmetic fails where the result does not fit in 64
// bits, rather than wrapping around, and gives exact results up to the limits.
func TestIntegerOverflow(t *testing.T) {
	const max, min = "9223372036854775807", "(-9223372036854775807 - 1)"
	tests := []struct {
		expr    string
		want    any
		wantErr string
	}{
		{expr: max + ` + 0`, want: math.MaxInt},
		{expr: max + ` - 1 + 1`, want: math.MaxInt},
		{expr: min + ` + ` + max, want: -1},
		{expr: min + ` * 1`, want: math.MinInt},
		{expr: `-1 * ` + max, want: -math.MaxInt},
		{expr: `-` + max, want: -math.MaxInt},
		{expr: `3037000499 * 3037000499`, want: 3037000499 * 3037000499},
		{expr: `sum([` + max + `, -1, 1])`, want: math.MaxInt},
		{expr: `duration("1h") * 3 + duration("1s")`, want: 3*time.Hour + time.Second},
		{expr: max + ` + 1`, wantErr: `integer overflow in 9223372036854775807 + 1: the result does not fit in 64 bits`},
		{expr: `fullDocument.qty + ` + max, wantErr: `integer overflow in 3 + 9223372036854775807`},
		{expr: min + ` - 1`, wantErr: `integer overflow in -9223372036854775808 - 1`},
		{expr: `-2 - ` + max, wantErr: `integer overflow in -2 - 9223372036854775807`},
		{expr: `fullDocument.qty * 3074457345618258603`, wantErr: `integer overflow in 3 * 3074457345618258603`},
		{expr: `3037000500 * -3037000500`, wantErr: `integer overflow in 3037000500 * -3037000500`},
		{expr: `-1 * ` + min, wantErr: `integer overflow in -1 * -9223372036854775808`},
		{expr: min + ` * -1`, wantErr: `integer overflow in -9223372036854775808 * -1`},
		{expr: `-` + min, wantErr: `integer overflow in -(-9223372036854775808)`},
		{expr: `abs(` + min + `)`, wantErr: `integer overflow in abs(-9223372036854775808)`},
		{expr: `sum([` + max + `, 1])`, wantErr: `sum(): integer overflow in 9223372036854775807 + 1`},
		{expr: `int("1e30")`, wantErr: `int(): argument 1 is "1e30" (string), want a number that fits in an int`},
		{expr: `duration("2000000h") * 1000000`, wantErr: `duration overflow in 2000000h0m0s * 1000000`},
		{expr: `duration("1000000h") + duration("1000000h") + duration("1000000h")`, wantErr: `duration overflow in 2000000h0m0s + 1000000h0m0s`},
	}
	for _, tt := range tests {
		got, err := eval(t, tt.expr, insertEvent)
		switch {
		case tt.wantErr != "" && err == nil:
			t.Errorf("%s = %v, want an error containing %q", tt.expr, show(got), tt.wantErr)
		case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
			t.Errorf("%s: error %q, want it to contain %q", tt.expr, err, tt.wantErr)
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.expr, err)
		case tt.wantErr == "" && got != tt.want:
			t.Errorf("%s = %s, want %s", tt.expr, show(got), show(tt.want))
		}
		if err != nil {
			goInternals(t, tt.expr, err.Error())
		}
	}
}

// sameList compares arrays element by element with sameValue.
func sameList(want, got any) bool {
	w, ok1 := want.([]any)
	g, ok2 := got.([]any)
	if !ok1 || !ok2 || len(w) != len(g) {
		return false
	}
	for i := range w {
		if !sameValue(w[i], g[i]) {
			return false
		}
	}
	return true
}

// goInternals fails when a message shows Go's internals instead of sluice's words.
func goInternals(t *testing.T, what, msg string) {
	t.Helper()
	for _, bad := range []string{"interface conversion", "interface {}", "reflect", "runtime error", "<nil>", "map[string]", "codec.", "panic"} {
		if strings.Contains(msg, bad) {
			t.Errorf("%s: message %q shows Go internals (%q)", what, msg, bad)
		}
	}
}

// TestBuiltinTable calls every function with nil and with a value of each type a payload holds, in every
// argument position: each call gives a value or an error in sluice's words, never a crash.
func TestBuiltinTable(t *testing.T) {
	values := map[string]string{
		"nil": `fullDocument.nope`, "int": `fullDocument.qty`, "float": `fullDocument.ratio`, "string": `fullDocument.customer`,
		"bool": `fullDocument.deleted`, "array": `fullDocument.items`, "object": `fullDocument`, "ObjectID": `documentKey._id`,
		"Decimal": `fullDocument.total`, "date": `fullDocument.placed`, "Timestamp": `clusterTime`,
	}
	for _, name := range functionList() {
		if name == "now" {
			continue
		}
		for what, v := range values {
			var exprs []string
			switch {
			case iterating[name] || name == "sum" || name == "sortBy":
				exprs = []string{fmt.Sprintf("%s(%s, #)", name, v)}
				if name == "reduce" {
					exprs = []string{fmt.Sprintf("%s(%s, #acc, 0)", name, v)}
				}
			default:
				min, max := argRange(name)
				for n := min; n <= max; n++ {
					for pos := range n {
						args := make([]string, n)
						for i := range args {
							args[i] = sampleArg(name, i)
						}
						args[pos] = v
						exprs = append(exprs, fmt.Sprintf("%s(%s)", name, strings.Join(args, ", ")))
					}
				}
			}
			for _, e := range exprs {
				_, err := eval(t, e, insertEvent)
				if err != nil {
					goInternals(t, e+" ("+what+")", err.Error())
				}
			}
		}
	}
}

// argRange returns the argument counts to try for a function (at most 3).
func argRange(name string) (int, int) {
	if w, ok := exprBuiltins[name]; ok {
		return max(w.min, 1), min(max(w.max, w.min, 1), 3)
	}
	f := own[name]
	return max(f.min, 1), min(max(f.max, f.min, 1), 3)
}

// sampleArg is a plausible argument i of function name.
func sampleArg(name string, i int) string {
	switch {
	case name == "timestamp":
		return "1"
	case i == 0:
		return `fullDocument.customer`
	case name == "take" || name == "repeat":
		return "2"
	case name == "date" && i == 1:
		return `"2006-01-02"`
	}
	return `"b"`
}

// TestConditionsAndOptionalSet covers when: and set paths with "?" on the change events the issue used.
func TestConditionsAndOptionalSet(t *testing.T) {
	steps := []Step{
		{Kind: Set, When: Expr{Text: `fullDocument != nil`}, Fields: []Field{
			{Path: "fullDocument.customer_name", Expr: Expr{Text: `fullDocument.customer ?? "unknown"`}},
			{Path: "fullDocument.lag_ms", Expr: Expr{Text: `fullDocument.placed != nil ? wallTime.UnixMilli() - fullDocument.placed.UnixMilli() : nil`}},
		}},
		set("meta.customer?", `fullDocument.customer`, "total_text?", `string(fullDocument.total)`),
		{Kind: Drop, When: Expr{Text: `operationType == "delete"`}, Paths: []Field{{Path: "wallTime"}}},
	}
	prog, err := Compile(steps)
	if err != nil {
		t.Fatal(err)
	}
	out, failed := prog.NewRunner().Run([]record.Record{
		{Payload: []byte(insertEvent), Encoding: record.EncodingJSON},
		{Payload: []byte(deleteEvent), Encoding: record.EncodingJSON},
	})
	if len(failed) > 0 || len(out) != 2 {
		t.Fatalf("out %d, failed %v", len(out), failures(failed))
	}
	checkPatch(t, insertEvent, `{"fullDocument": {"customer_name": "bob", "lag_ms": -4164645000}, "total_text": "99.99"}`, out[0].Payload)
	if c, _ := out[0].Meta.Get("customer"); c != "bob" {
		t.Errorf("meta customer = %q", c)
	}
	// The delete gets no invented document, no nil fields, no metadata from a missing field.
	checkPatch(t, deleteEvent, `{"wallTime": null}`, out[1].Payload)
	if _, ok := out[1].Meta.Get("customer"); ok {
		t.Error("meta customer set from a missing field")
	}
	// A when that is not a condition fails the record, naming the when.
	prog, err = Compile([]Step{{Kind: Set, When: Expr{Text: `fullDocument.customer`}, Fields: []Field{{Path: "x", Expr: Expr{Text: `1`}}}}})
	if err != nil {
		t.Fatal(err)
	}
	_, failed = prog.NewRunner().Run([]record.Record{{Payload: []byte(insertEvent), Encoding: record.EncodingJSON}})
	if len(failed) != 1 || !strings.Contains(failed[0].Error(), `transforms[0].set.when: the condition gave "bob" (string), not true or false`) {
		t.Fatalf("failed = %v", failures(failed))
	}
}

// TestFidelity: reading a field never changes its bytes; only the members steps changed are re-encoded,
// dates keep their text, and new members go at the end of their object in the order the steps name them.
func TestFidelity(t *testing.T) {
	in := `{"b": 2, "a": {"z": 1, "y": {"$date": "2024-01-02T03:04:05.200Z"}, "x": 1.50}, "c": [1, 2]}`
	tests := []struct {
		name  string
		steps []Step
		want  string
	}{
		{"reading only", []Step{filter(`a == nil || a.y > date("2020-01-01") || a.x > 1`)}, in},
		{"reading an object whole and changing a member of it",
			[]Step{filter(`a != nil`), set("a.w", `a.x * 2`)},
			`{"b": 2,"a":{"z": 1,"y": {"$date": "2024-01-02T03:04:05.200Z"},"x": 1.50,"w":3.0},"c": [1, 2]}`},
		{"payload read whole", []Step{filter(`len(payload) > 0`), set("d", `1`)},
			`{"b": 2,"a": {"z": 1, "y": {"$date": "2024-01-02T03:04:05.200Z"}, "x": 1.50},"c": [1, 2],"d":1}`},
		{"new members in step order", []Step{set("n.q", `1`, "n.p", `2`, "m", `a.y`)},
			`{"b": 2,"a": {"z": 1, "y": {"$date": "2024-01-02T03:04:05.200Z"}, "x": 1.50},"c": [1, 2],"n":{"q":1,"p":2},"m":{"$date":"2024-01-02T03:04:05.200Z"}}`},
		{"a step that does not run changes nothing", []Step{{Kind: Set, When: Expr{Text: `b == 3`}, Fields: []Field{{Path: "a.x", Expr: Expr{Text: `0`}}}}}, in},
		{"drop and rename", []Step{drop("a.z"), rename("b", "a.b")},
			`{"a":{"y": {"$date": "2024-01-02T03:04:05.200Z"},"x": 1.50,"b":2},"c": [1, 2]}`},
	}
	for _, tt := range tests {
		prog, err := Compile(tt.steps)
		if err != nil {
			t.Fatal(err)
		}
		out, failed := prog.NewRunner().Run([]record.Record{{Payload: []byte(in), Encoding: record.EncodingJSON}})
		if len(failed) > 0 || len(out) != 1 {
			t.Fatalf("%s: out %d failed %v", tt.name, len(out), failures(failed))
		}
		if string(out[0].Payload) != tt.want {
			t.Errorf("%s:\ngot  %s\nwant %s", tt.name, out[0].Payload, tt.want)
		}
	}
}

func mustOID(s string) codec.ObjectID {
	id, err := codec.ParseObjectID(s)
	if err != nil {
		panic(err)
	}
	return id
}

// TestSample runs steps over sample change events and checks what the report says: a misspelled field
// is missing (with the field the samples have), a filter that drops everything kept none, a when that is
// never true ran on none, and a failing step is reported.
func TestSample(t *testing.T) {
	prog, err := Compile([]Step{
		set("fullDocument.cents", `int(fullDocument.qty * 100)`),
		{Kind: Set, When: Expr{Text: `fullDocument.customer == "nobody"`}, Fields: []Field{{Path: "x", Expr: Expr{Text: `1`}}}},
		filter(`operationTyp == "insert" || fullDocument.cents > 0`),
		filter(`operationTyp == "insert"`),
	})
	if err != nil {
		t.Fatal(err)
	}
	recs := []record.Record{
		{Payload: []byte(insertEvent), Encoding: record.EncodingJSON},
		{Payload: []byte(deleteEvent), Encoding: record.EncodingJSON},
	}
	rep := prog.Sample(recs)
	if rep.Records != 2 || len(rep.Steps) != 4 {
		t.Fatalf("report %+v", rep)
	}
	if len(rep.Missing) != 1 || rep.Missing[0].Path != "operationTyp" || rep.Missing[0].Suggest != "operationType" {
		t.Errorf("missing = %+v, want operationTyp (did you mean operationType)", rep.Missing)
	}
	if c := rep.Steps[1]; c.Reached != 1 || c.Ran != 0 || !c.When {
		t.Errorf("step 1 (when never true) = %+v", c)
	}
	if c := rep.Steps[3]; c.Reached != 1 || c.Kept != 0 {
		t.Errorf("step 3 (drops all) = %+v", c)
	}
	// The delete has no fullDocument: qty * 100 fails on it.
	if len(rep.Failed) != 1 || rep.Failed[0].Step != 0 || !strings.Contains(rep.Failed[0].Error(), "fullDocument.qty is nil") {
		t.Errorf("failed = %v", failures(rep.Failed))
	}
}

func TestExpressionEval(t *testing.T) {
	for _, tc := range []struct {
		expr    string
		a, b    string
		same    bool
		wantErr bool
	}{
		{expr: "payload", a: `{"x":1,"y":[1,2]}`, b: `{"y":[1,2],"x":1.0}`, same: true},
		{expr: "payload", a: `{"x":1}`, b: `{"x":2}`, same: false},
		{expr: "fullDocument", a: `{"operationType":"insert","fullDocument":{"a":1}}`, b: `{"operationType":"update","fullDocument":{"a":1}}`, same: true},
		{expr: "fullDocument.a + 1", a: `{"fullDocument":{"a":1}}`, b: `{"fullDocument":{"a":2}}`, same: false},
		{expr: "fullDocument.a + 1", a: `{}`, wantErr: true},
	} {
		e, _, err := CompileExpression(tc.expr)
		if err != nil {
			t.Fatalf("%s: %v", tc.expr, err)
		}
		ev := e.NewEvaluator()
		va, err := ev.Eval(&record.Record{Payload: []byte(tc.a), Encoding: record.EncodingJSON})
		if tc.wantErr {
			if err == nil {
				t.Fatalf("%s on %s: no error, value %v", tc.expr, tc.a, va)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s on %s: %v", tc.expr, tc.a, err)
		}
		vb, err := ev.Eval(&record.Record{Payload: []byte(tc.b), Encoding: record.EncodingJSON})
		if err != nil {
			t.Fatalf("%s on %s: %v", tc.expr, tc.b, err)
		}
		if got := Equal(va, vb); got != tc.same {
			t.Fatalf("%s: Equal(%v, %v) = %v, want %v", tc.expr, va, vb, got, tc.same)
		}
	}
	if _, col, err := CompileExpression("fullDocument.a +* 2"); err == nil || col == 0 {
		t.Fatalf("a syntax error compiled (col %d, err %v)", col, err)
	}
}
