package config

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms"
)

const verifyHead = "version: 1\npipelines:\n  - id: p\n    source: {plugin: generate}\n    sink: {plugin: discard}\n"

func TestVerifyBlock(t *testing.T) {
	f, err := load(t, "v.yaml", verifyHead+"    verify:\n      compare: 'payload.fullDocument'\n      ignore_deleted: true\n")
	if err != nil {
		t.Fatal(err)
	}
	v := f.Pipelines[0].Verify
	if v.Compare == nil || v.CompareText != "payload.fullDocument" || !v.IgnoreDeleted || v.Pos.Line != 7 {
		t.Fatalf("verify = %+v", v)
	}
	// The compiled expression reads what the steps' expressions read.
	got, err := v.Compare.NewEvaluator().Eval(&record.Record{Payload: []byte(`{"operationType":"insert","fullDocument":{"a":1}}`), Encoding: record.EncodingJSON})
	if err != nil || !transforms.Equal(got, map[string]any{"a": 1}) {
		t.Fatalf("compare on a change event = %v, %v", got, err)
	}
	var out bytes.Buffer
	if err := f.Print(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "verify:\n      compare: payload.fullDocument\n      ignore_deleted: true\n") {
		t.Fatalf("Print does not show the verify block:\n%s", out.String())
	}

	// Without the block: whole payloads, extras reported, nothing printed.
	f, err = load(t, "v.yaml", verifyHead)
	if err != nil {
		t.Fatal(err)
	}
	if v := f.Pipelines[0].Verify; v.Compare != nil || v.IgnoreDeleted {
		t.Fatalf("default verify = %+v", v)
	}
	out.Reset()
	_ = f.Print(&out)
	if strings.Contains(out.String(), "verify") {
		t.Fatalf("Print shows a verify block the file does not have:\n%s", out.String())
	}
}

func TestVerifyBlockErrors(t *testing.T) {
	for _, tc := range []struct {
		name, block string
		want        []string
	}{
		{"not an object", "    verify: payload\n", []string{`v.yaml:6:13: verify: want an object { compare: EXPRESSION, ignore_deleted: BOOL }, got string "payload"`}},
		{"unknown key", "    verify: { compare: payload, ignore_deleted: true, ignore_deletes: false }\n",
			[]string{`v.yaml:6:55: unknown key "ignore_deletes" in verify (did you mean "ignore_deleted"?)`}},
		{"syntax error, with its column", "    verify:\n      compare: 'fullDocument.a +* 2'\n",
			[]string{`v.yaml:7:33: verify.compare: unexpected token Operator("*") (column 17 of the expression)`}},
		{"unknown function", "    verify:\n      compare: uper(fullDocument.name)\n",
			[]string{"v.yaml:7:16: verify.compare: ", "did you mean upper?", "(column 1 of the expression)"}},
		{"not a string", "    verify:\n      compare: [a]\n", []string{"v.yaml:7:16: verify.compare: want an expression (a string), got"}},
		{"ignore_deleted not a bool", "    verify:\n      ignore_deleted: yes please\n", []string{"v.yaml:7:23: verify.ignore_deleted: want bool"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, "v.yaml", verifyHead+tc.block)
			var errs Errors
			if !errors.As(err, &errs) || len(errs) != 1 {
				t.Fatalf("want one problem, got %v", err)
			}
			msg := errs[0].Error()
			msg = msg[strings.Index(msg, "v.yaml"):]
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Fatalf("%q does not contain %q", msg, w)
				}
			}
		})
	}
}
