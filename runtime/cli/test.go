package cli

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/runtime/config"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms"
	"github.com/sluicehq/sluice/transforms/codec"
)

func testCmd(g *globals) *cobra.Command {
	var run string
	cmd := &cobra.Command{
		Use:   "test FILE...",
		Short: "run the inline tests of connector files against their pipelines' transform steps",
		Long: `test loads each connector file like validate, then runs every test under its top-level tests key:
the input records go through the named pipeline's transform steps (transforms, then sink_transforms), and
what comes out must equal expect, record by record. No plugin is started and nothing is written.

Each test prints PASS or FAIL; a failure lists every difference as path: want X, got Y. The exit code is 0
when every test passes, 1 when one fails, and 2 when a file is invalid.`,
		Args: usage(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.catalog(cmd.Context())
			if err != nil {
				return err
			}
			files, err := load(g.stderr, c, args)
			if err != nil {
				return err
			}
			total, failed := 0, 0
			for _, f := range files {
				for _, t := range f.TestCases {
					if run != "" && !strings.Contains(t.Name, run) {
						continue
					}
					total++
					if !runTest(g.stdout, f, t) {
						failed++
					}
				}
			}
			switch {
			case total == 0:
				fmt.Fprintln(g.stdout, "no tests found (add a top-level tests: list to the connector file)")
			case failed > 0:
				fmt.Fprintf(g.stdout, "%d of %d tests failed\n", failed, total)
				return ExitError{Code: ExitFailure}
			default:
				fmt.Fprintf(g.stdout, "all %d tests passed\n", total)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&run, "run", "", "run only the tests whose name contains this text")
	return cmd
}

// runTest runs one test and prints its result; it reports whether it passed.
func runTest(w io.Writer, f *config.File, t *config.Test) bool {
	var p *config.Pipeline
	for _, c := range f.Pipelines {
		if c.ID == t.Pipeline {
			p = c
		}
	}
	var problems []string
	recs := make([]record.Record, 0, len(t.Input))
	for i, in := range t.Input {
		r, err := testRecord(in)
		if err != nil {
			problems = append(problems, fmt.Sprintf("input %d (line %d): %v", i+1, in.Pos.Line, err))
			continue
		}
		recs = append(recs, r)
	}
	for _, prog := range []*transforms.Program{p.Steps, p.SinkSteps} {
		if prog == nil || len(problems) > 0 {
			continue
		}
		out, failed := prog.NewRunner().Run(recs)
		for _, fl := range failed {
			problems = append(problems, fmt.Sprintf("input with payload %s failed: %s", fl.Record.Payload, fl.Error()))
		}
		recs = out
	}
	if len(problems) == 0 {
		problems = compareRecords(t.Expect, recs)
	}
	if len(problems) == 0 {
		fmt.Fprintf(w, "PASS  %s: %s\n", f.Path, t.Name)
		return true
	}
	fmt.Fprintf(w, "FAIL  %s: %s (pipeline %s)\n", t.Pos, t.Name, t.Pipeline)
	for _, pr := range problems {
		fmt.Fprintf(w, "      %s\n", pr)
	}
	return false
}

// testRecord builds the record a test's input describes: the payload as relaxed Extended JSON (so that
// {$oid: …} and friends become typed values when decoded), key, op and metadata.
func testRecord(in config.TestRecord) (record.Record, error) {
	r := record.Record{Op: record.OpInsert, Encoding: record.EncodingJSON}
	if in.Payload != nil {
		// Extended JSON keeps a float written 1.0 a float, where encoding/json would write 1.
		b, err := codec.EncodeJSON(nil, in.Payload)
		if err != nil {
			return r, err
		}
		r.Payload = b
	}
	if in.Key != nil {
		r.Key = []byte(*in.Key)
	}
	if in.Op != "" {
		op, ok := record.ParseOp(in.Op)
		if !ok {
			return r, fmt.Errorf("unknown op %q", in.Op)
		}
		r.Op = op
	}
	for _, k := range slices.Sorted(maps.Keys(in.Meta)) {
		r.Meta = r.Meta.Set(k, in.Meta[k])
	}
	return r, nil
}

// compareRecords lists the differences between the expected records and what the steps produced.
func compareRecords(want []config.TestRecord, got []record.Record) []string {
	var out []string
	if len(want) != len(got) {
		out = append(out, fmt.Sprintf("want %d records, got %d", len(want), len(got)))
	}
	for i := range max(len(want), len(got)) {
		switch {
		case i >= len(want):
			out = append(out, fmt.Sprintf("record %d: unexpected: %s", i+1, showRecord(got[i])))
			continue
		case i >= len(got):
			b, _ := codec.EncodeJSON(nil, want[i].Payload)
			out = append(out, fmt.Sprintf("record %d: missing: %s", i+1, b))
			continue
		}
		for _, d := range diffRecord(want[i], got[i]) {
			out = append(out, fmt.Sprintf("record %d: %s", i+1, d))
		}
	}
	return out
}

func diffRecord(want config.TestRecord, got record.Record) []string {
	var out []string
	wantDoc, err := testPayload(want.Payload)
	if err != nil {
		return []string{"expected payload: " + err.Error()}
	}
	gotDoc, err := decodePayload(got)
	if err != nil {
		return []string{"payload: " + err.Error()}
	}
	for _, d := range transforms.Diff(wantDoc, gotDoc) {
		out = append(out, d)
	}
	if want.Key != nil && *want.Key != string(got.Key) {
		out = append(out, fmt.Sprintf("key: want %q, got %q", *want.Key, got.Key))
	}
	if want.Op != "" && want.Op != got.Op.String() {
		out = append(out, fmt.Sprintf("op: want %s, got %s", want.Op, got.Op))
	}
	for _, k := range slices.Sorted(maps.Keys(want.Meta)) {
		v, ok := got.Meta.Get(k)
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("meta.%s: missing, want %q", k, want.Meta[k]))
		case v != want.Meta[k]:
			out = append(out, fmt.Sprintf("meta.%s: want %q, got %q", k, want.Meta[k], v))
		}
	}
	return out
}

func testPayload(p map[string]any) (map[string]any, error) {
	if p == nil {
		return nil, nil
	}
	b, err := codec.EncodeJSON(nil, p)
	if err != nil {
		return nil, err
	}
	return codec.DecodeJSON(b)
}

func decodePayload(r record.Record) (map[string]any, error) {
	switch {
	case len(r.Payload) == 0:
		return nil, nil
	case r.Encoding == record.EncodingBSON:
		return codec.DecodeBSON(r.Payload)
	}
	return codec.DecodeJSON(r.Payload)
}

func showRecord(r record.Record) string {
	s := string(r.Payload)
	if r.Encoding == record.EncodingBSON {
		if doc, err := codec.DecodeBSON(r.Payload); err == nil {
			if b, err := codec.EncodeJSON(nil, doc); err == nil {
				s = string(b)
			}
		}
	}
	if len(r.Key) > 0 {
		s += fmt.Sprintf(" (key %q)", r.Key)
	}
	return s
}
