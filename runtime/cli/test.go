package cli

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

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

A test's inputs are written under input, or read from input_file (JSON Lines, one payload per line: a
MongoDB replay_file is one); with source: mongodb they get the key, op and metadata the MongoDB source
gives those events. An expected record is compared only on what it gives (payload, key, op, meta).

Each test prints PASS or FAIL; a failure lists every difference as path: want X, got Y. The exit code is 0
when every test passes, 1 when one fails, and 2 when a file is invalid.`,
		Args: usage(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.catalog(cmd.Context())
			if err != nil {
				return err
			}
			files, err := g.loadFiles(g.stderr, c, args)
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
		r, err := testRecord(in, t.Source)
		if err != nil {
			problems = append(problems, fmt.Sprintf("input %d (%s): %v", i+1, in.Pos, err))
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
// {$oid: …} and friends become typed values when decoded), key, op and metadata — first those the test's
// source would give, then those the input writes.
func testRecord(in config.TestRecord, source string) (record.Record, error) {
	r := record.Record{Op: record.OpInsert, Encoding: record.EncodingJSON}
	switch {
	case in.PayloadJSON != nil:
		r.Payload = in.PayloadJSON
	case in.Payload != nil:
		// Extended JSON keeps a float written 1.0 a float, where encoding/json would write 1.
		b, err := codec.EncodeJSON(nil, in.Payload)
		if err != nil {
			return r, err
		}
		r.Payload = b
	}
	if source != "" && len(r.Payload) > 0 {
		doc, err := codec.DecodeJSON(r.Payload)
		if err != nil {
			return r, err
		}
		if err := sources[source](doc, &r); err != nil {
			return r, fmt.Errorf("as a %s record: %w", source, err)
		}
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

// sources give a test input the key, op and metadata a source plugin gives the record of that payload
// (config.TestSources lists them).
var sources = map[string]func(doc map[string]any, r *record.Record) error{
	"mongodb": mongodbRecord,
}

// mongodbRecord is what the MongoDB source makes of a change event (plugins/mongodb, event.go): the key is
// documentKey._id (else fullDocument._id, fullDocumentBeforeChange._id, the whole documentKey) as
// canonical Extended JSON; the op is the operationType; metadata mongodb.db, mongodb.coll,
// mongodb.operation, mongodb.cluster_time, mongodb.wall_time, mongodb.txn_number, mongodb.lsid.
// TestTestSourceMongoDB checks it against the plugin reading the same events from a replay file.
func mongodbRecord(doc map[string]any, r *record.Record) error {
	get := func(m map[string]any, path ...string) (any, bool) {
		var cur any = m
		for _, p := range path {
			o, ok := cur.(map[string]any)
			if !ok {
				return nil, false
			}
			if cur, ok = o[p]; !ok {
				return nil, false
			}
		}
		return cur, true
	}
	canonical := func(v any) ([]byte, error) {
		b, err := codec.EncodeCanonicalJSON(nil, map[string]any{"v": v})
		if err != nil {
			return nil, err
		}
		return b[len(`{"v":`) : len(b)-1], nil
	}
	r.Key = nil
	for _, path := range [][]string{{"documentKey", "_id"}, {"fullDocument", "_id"}, {"fullDocumentBeforeChange", "_id"}} {
		if id, ok := get(doc, path...); ok {
			k, err := canonical(id)
			if err != nil {
				return err
			}
			r.Key = k
			break
		}
	}
	if r.Key == nil {
		if dk, ok := doc["documentKey"].(map[string]any); ok {
			k, err := codec.EncodeCanonicalJSON(nil, dk)
			if err != nil {
				return err
			}
			r.Key = k
		}
	}
	opType, _ := doc["operationType"].(string)
	switch opType {
	case "insert", "update", "replace", "delete", "snapshot":
		r.Op, _ = record.ParseOp(opType)
	default:
		r.Op = record.OpOther
	}
	if db, ok := get(doc, "ns", "db"); ok {
		if s, ok := db.(string); ok && s != "" {
			r.Meta = r.Meta.Set("mongodb.db", s)
		}
	}
	if coll, ok := get(doc, "ns", "coll"); ok {
		if s, ok := coll.(string); ok && s != "" {
			r.Meta = r.Meta.Set("mongodb.coll", s)
		}
	}
	r.Meta = r.Meta.Set("mongodb.operation", opType)
	if ts, ok := doc["clusterTime"].(codec.Timestamp); ok {
		r.Meta = r.Meta.Set("mongodb.cluster_time", strconv.FormatUint(uint64(ts.T), 10)+"."+strconv.FormatUint(uint64(ts.I), 10))
	}
	if wt, ok := doc["wallTime"].(time.Time); ok {
		r.Meta = r.Meta.Set("mongodb.wall_time", wt.UTC().Format(time.RFC3339Nano))
	}
	if n, ok := doc["txnNumber"].(int); ok {
		r.Meta = r.Meta.Set("mongodb.txn_number", strconv.Itoa(n))
	}
	if lsid, ok := doc["lsid"].(map[string]any); ok {
		b, err := codec.EncodeCanonicalJSON(nil, lsid)
		if err != nil {
			return err
		}
		r.Meta = r.Meta.Set("mongodb.lsid", string(b))
	}
	return nil
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
			out = append(out, fmt.Sprintf("record %d: missing: %s", i+1, showWant(want[i])))
			continue
		}
		for _, d := range diffRecord(want[i], got[i]) {
			out = append(out, fmt.Sprintf("record %d: %s", i+1, d))
		}
	}
	return out
}

// showWant prints an expected record: its payload, or what it gives of key, op and meta.
func showWant(w config.TestRecord) string {
	if w.HasPayload {
		b, _ := codec.EncodeJSON(nil, w.Payload)
		return string(b)
	}
	var parts []string
	if w.Key != nil {
		parts = append(parts, fmt.Sprintf("key %q", *w.Key))
	}
	if w.Op != "" {
		parts = append(parts, "op "+w.Op)
	}
	for _, k := range slices.Sorted(maps.Keys(w.Meta)) {
		parts = append(parts, fmt.Sprintf("meta.%s %q", k, w.Meta[k]))
	}
	return "a record with " + strings.Join(parts, ", ")
}

// diffRecord compares what an expected record gives (its payload, key, op, metadata) with a record.
func diffRecord(want config.TestRecord, got record.Record) []string {
	var out []string
	if want.HasPayload {
		wantDoc, err := testPayload(want.Payload)
		if err != nil {
			return []string{"expected payload: " + err.Error()}
		}
		gotDoc, err := decodePayload(got)
		if err != nil {
			return []string{"payload: " + err.Error()}
		}
		out = append(out, transforms.Diff(wantDoc, gotDoc)...)
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
