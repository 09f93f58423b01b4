package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/runtime/cluster"
	"github.com/sluicehq/sluice/runtime/config"
	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/runtime/plugin"
	"github.com/sluicehq/sluice/runtime/state"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms"
	"github.com/sluicehq/sluice/transforms/codec"
)

// Defaults of verify's flags.
const (
	defaultVerifySample = 5
	defaultVerifySettle = 10 * time.Second
)

// defaultCompare is what verify compares when the pipeline's verify block sets no compare expression.
const defaultCompare = "payload"

type verifyOpts struct {
	sample          int
	json            bool
	repair          bool
	settle          time.Duration
	dataDir         string
	pipelineStopped bool
}

func verifyCmd(g *globals) *cobra.Command {
	var o verifyOpts
	cmd := &cobra.Command{
		Use:   "verify FILE PIPELINE",
		Short: "compare what a pipeline's source holds now with what its sink holds, key by key; --repair fixes the differences",
		Long: `verify asks the pipeline's source for every record a snapshot started now would emit, runs them through
the pipeline's transform steps (transforms, then sink_transforms) as the pipeline does, asks the sink for
the latest record it holds per key, and compares the two by (destination, key). What is compared is the
pipeline's verify.compare expression, evaluated on each side's record (default: the whole payload).

A key is missing (in the source, not in the sink or deleted there), stale (on both sides, different) or
extra (alive in the sink, not in the source; verify.ignore_deleted: true does not report these). Keys
that differ are checked again after --settle; those that then agree were in flight at the check and are
not errors.

--repair sends the source records of the missing and stale keys, as snapshot records, through the
transforms, and a deletion (a tombstone) for each extra key: into the pipeline's buffer when it has one
(the running pipeline delivers them in order with its live changes), else straight to its sink, which
needs the pipeline stopped (--pipeline-stopped). Then, unless --settle is 0, it waits --settle and verifies
again.

The exit code is 0 when the two ends are consistent (after a repair: when the second verify is), 1 when
they are not, and 2 for a usage or configuration error or a stage that cannot be verified.`,
		Args: usage(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.sample < 0 {
				return ExitError{ExitInvalid, fmt.Errorf("verify: --sample must be 0 or more, got %d", o.sample)}
			}
			if o.settle < 0 {
				return ExitError{ExitInvalid, fmt.Errorf("verify: --settle must be 0 or more, got %s", o.settle)}
			}
			return runVerify(cmd.Context(), g, args[0], args[1], o)
		},
	}
	cmd.Flags().IntVar(&o.sample, "sample", defaultVerifySample, "how many keys of each kind of difference to show")
	cmd.Flags().BoolVar(&o.json, "json", false, "print the report as one JSON object (see the README for its shape)")
	cmd.Flags().BoolVar(&o.repair, "repair", false, "re-send the missing and stale records and delete the extra keys, then verify again")
	cmd.Flags().DurationVar(&o.settle, "settle", defaultVerifySettle, "how long to wait before checking the keys that differ again (and, after --repair, before verifying again); 0: no second check")
	cmd.Flags().StringVar(&o.dataDir, "data-dir", "", "the host's data directory, checked by --repair for a running sluice (default: the file's data_dir, else .sluice)")
	cmd.Flags().BoolVar(&o.pipelineStopped, "pipeline-stopped", false, "with --repair on a pipeline without a buffer: the pipeline is stopped, so its sink may be written directly")
	return cmd
}

// runVerify is the verify command.
func runVerify(ctx context.Context, g *globals, file, id string, o verifyOpts) error {
	c, err := g.catalog(ctx)
	if err != nil {
		return err
	}
	files, err := g.loadFiles(g.stderr, c, []string{file})
	if err != nil {
		return err
	}
	var p *config.Pipeline
	var ids []string
	for _, q := range files[0].Pipelines {
		ids = append(ids, q.ID)
		if q.ID == id {
			p = q
		}
	}
	if p == nil {
		return ExitError{ExitInvalid, fmt.Errorf("verify: %s has no pipeline %q; its pipelines: %s", file, id, strings.Join(ids, ", "))}
	}
	v, err := newVerifier(ctx, g, c, files[0], p)
	if err != nil {
		return err
	}
	defer v.close()

	rep, err := v.check(ctx, o.settle)
	if err != nil {
		return err
	}
	if o.repair && !rep.consistent() {
		done, err := v.repair(ctx, rep, o)
		if err != nil {
			return err
		}
		before := rep.Counts
		if o.settle > 0 {
			if err := sleep(ctx, o.settle); err != nil {
				return ExitError{ExitFailure, err}
			}
			if rep, err = v.check(ctx, o.settle); err != nil {
				return err
			}
		}
		done.Before = &before
		done.Checked = o.settle > 0
		rep.Repair = done
	}
	if o.json {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep.json(o.sample)); err != nil {
			return ExitError{ExitFailure, err}
		}
	} else {
		rep.print(g.stdout, o.sample)
	}
	if rep.consistent() && (rep.Repair == nil || rep.Repair.Checked) {
		return nil
	}
	return ExitError{Code: ExitFailure}
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// verifier holds what one verify needs: the pipeline, its compiled steps and compare expression, and the
// plugin processes of its source and sink (started, never opened).
type verifier struct {
	g      *globals
	c      *plugin.Catalog
	file   *config.File
	p      *config.Pipeline
	log    *slog.Logger
	source *protocol.Conn
	sink   *protocol.Conn
	// buffer is started only when needed (rendering the sink's checkpoint, a repair); nil until then.
	buffer  *protocol.Conn
	conns   []*protocol.Conn
	compare *transforms.Evaluator
	// compareText is the compare expression as written, or defaultCompare.
	compareText string
}

func newVerifier(ctx context.Context, g *globals, c *plugin.Catalog, f *config.File, p *config.Pipeline) (*verifier, error) {
	v := &verifier{g: g, c: c, file: f, p: p, log: g.logger.With("pipeline", p.ID)}
	expr, text := p.Verify.Compare, p.Verify.CompareText
	if expr == nil {
		var err error
		if expr, _, err = transforms.CompileExpression(defaultCompare); err != nil {
			return nil, ExitError{ExitFailure, fmt.Errorf("verify: compiling the default compare: %w", err)}
		}
		text = defaultCompare
	}
	v.compare, v.compareText = expr.NewEvaluator(), text
	var err error
	if v.source, err = v.start(ctx, "source", p.Source); err != nil {
		v.close()
		return nil, err
	}
	if v.sink, err = v.start(ctx, "sink", p.Sink); err != nil {
		v.close()
		return nil, err
	}
	return v, nil
}

// start starts a plugin process for one of the pipeline's stages.
func (v *verifier) start(ctx context.Context, role string, st *config.Stage) (*protocol.Conn, error) {
	conn, err := v.c.Start(ctx, st.Plugin, st.Kind, st.InProcess, v.log.With("plugin", st.Plugin, "stage", role))
	if err != nil {
		return nil, ExitError{ExitFailure, fmt.Errorf("verify: starting %s %s: %w", role, st.Plugin, err)}
	}
	v.conns = append(v.conns, conn)
	return conn, nil
}

func (v *verifier) close() {
	for _, c := range v.conns {
		c.Kill()
	}
	v.conns = nil
}

// stageErr is the error of a Verify call into a stage: a stage that cannot be verified (no Verifier, or
// settings its Verify refuses) is a usage error, anything else a failure.
func stageErr(role, plugin string, err error) error {
	switch {
	case errors.Is(err, protocol.ErrNoVerify):
		return ExitError{ExitInvalid, fmt.Errorf("%s %s cannot be verified: the plugin does not implement Verify (sdk.Verifier)", role, plugin)}
	case errors.Is(err, sdk.ErrInvalidSettings):
		return ExitError{ExitInvalid, fmt.Errorf("%s %s cannot be verified: %v", role, plugin, err)}
	}
	return ExitError{ExitFailure, fmt.Errorf("verify: %s %s: %w", role, plugin, err)}
}

// ident is a key at a destination: "" is the sink's own destination.
type ident struct {
	dest string
	key  string
}

// expected is a source record as the sink should hold it.
type expected struct {
	// orig is the source's record, as it emitted it (for a repair); rec is it after the steps.
	orig, rec record.Record
}

// held is what the sink holds for a key.
type held struct {
	rec     record.Record
	deleted bool
}

// side is one end's answer.
type side struct {
	result protocol.VerifyResult
	// records counts what the stage emitted.
	records int
}

// sourcePass is the source's current state after the steps.
type sourcePass struct {
	side
	exp      map[ident]*expected
	routes   map[string]bool
	filtered int
	failed   int
	// keyless counts the records without a key after the steps.
	keyless int
	// failure is the first step failure, for the report.
	failure string
}

// readSource asks the source for its state (only for keys, when not empty), runs it through the steps,
// and keeps the records whose ident is in only (all when only is nil).
func (v *verifier) readSource(ctx context.Context, keys [][]byte, only map[ident]bool) (*sourcePass, error) {
	sp := &sourcePass{exp: map[ident]*expected{}, routes: map[string]bool{}}
	var runners []*transforms.Runner
	for _, prog := range []*transforms.Program{v.p.Steps, v.p.SinkSteps} {
		if prog != nil {
			runners = append(runners, prog.NewRunner())
		}
	}
	res, err := v.source.Source().Verify(ctx, protocol.VerifyRequest{Pipeline: v.p.ID, Settings: v.p.Source.Settings, Keys: keys},
		func(recs []record.Record) error {
			sp.records += len(recs)
			origs := make([]record.Record, len(recs))
			for i := range recs {
				origs[i] = cloneRecord(recs[i])
				origs[i].Op = record.OpSnapshot
			}
			for i := range origs {
				out, ok, failure := runSteps(runners, origs[i])
				switch {
				case failure != "":
					sp.failed++
					if sp.failure == "" {
						sp.failure = failure
					}
					continue
				case !ok:
					sp.filtered++
					continue
				}
				if len(out.Key) == 0 {
					sp.keyless++
				}
				id := identOf(&out)
				if id.dest != "" {
					sp.routes[id.dest] = true
				}
				if only != nil && !only[id] {
					continue
				}
				sp.exp[id] = &expected{orig: origs[i], rec: out}
			}
			return nil
		})
	if err != nil {
		return nil, stageErr("source", v.p.Source.Plugin, err)
	}
	sp.result = res
	return sp, nil
}

// runSteps runs one record through the runners in turn; ok is false when a filter dropped it, failure
// the step's message when one failed on it.
func runSteps(runners []*transforms.Runner, rec record.Record) (out record.Record, ok bool, failure string) {
	out = rec
	for _, r := range runners {
		recs, failed := r.Run([]record.Record{out})
		if len(failed) > 0 {
			return out, false, failed[0].Error()
		}
		if len(recs) == 0 {
			return out, false, ""
		}
		out = cloneRecord(recs[0]) // the runner reuses its buffers
	}
	return out, true, ""
}

// identOf is where a record goes: its route (record.MetaRoute), and its key.
func identOf(r *record.Record) ident {
	route, _ := r.Meta.Get(record.MetaRoute)
	return ident{dest: route, key: string(r.Key)}
}

func cloneRecord(r record.Record) record.Record {
	r.Position = r.Position.Clone()
	r.Key = bytes.Clone(r.Key)
	r.Payload = bytes.Clone(r.Payload)
	r.Meta = slices.Clone(r.Meta)
	return r
}

// sinkPass is what the sink holds.
type sinkPass struct {
	side
	held    map[ident]*held
	deleted int
}

// readSink asks the sink for the latest record per key (only keys, when not empty) at its destination
// and routes, keeping those whose ident is in only (all when only is nil).
func (v *verifier) readSink(ctx context.Context, routes map[string]bool, keys [][]byte, only map[ident]bool) (*sinkPass, error) {
	sp := &sinkPass{held: map[ident]*held{}}
	var recs []record.Record
	res, err := v.sink.Sink().Verify(ctx, protocol.VerifyRequest{Pipeline: v.p.ID, Settings: v.p.Sink.Settings,
		Routes: slices.Sorted(maps.Keys(routes)), Keys: keys},
		func(batch []record.Record) error {
			sp.records += len(batch)
			for i := range batch {
				recs = append(recs, cloneRecord(batch[i]))
			}
			return nil
		})
	if err != nil {
		return nil, stageErr("sink", v.p.Sink.Plugin, err)
	}
	sp.result = res
	for i := range recs {
		id := identOf(&recs[i])
		if id.dest == res.Destination {
			id.dest = ""
		}
		if only != nil && !only[id] {
			continue
		}
		h := &held{rec: recs[i], deleted: recs[i].Op == record.OpDelete}
		if h.deleted {
			sp.deleted++
		}
		sp.held[id] = h
	}
	return sp, nil
}

// normalize files the source's records routed to the sink's own destination under "".
func (sp *sourcePass) normalize(dest string) {
	if dest == "" {
		return
	}
	for id, e := range sp.exp {
		if id.dest == dest {
			delete(sp.exp, id)
			sp.exp[ident{key: id.key}] = e
		}
	}
}

// Difference classes.
const (
	classMissing  = "missing"
	classStale    = "stale"
	classExtra    = "extra"
	classInFlight = "in_flight"
)

// difference is one key that differs (or differed, for in-flight keys).
type difference struct {
	id    ident
	class string
	hint  string
	// exp is the source's record (missing, stale); nil for an extra key.
	exp *expected
}

// classify compares one ident on both sides; it returns "" when they agree.
func (v *verifier) classify(id ident, e *expected, h *held) (class, hint string) {
	alive := h != nil && !h.deleted
	switch {
	case e == nil && !alive:
		return "", ""
	case e == nil:
		if v.p.Verify.IgnoreDeleted {
			return "", ""
		}
		return classExtra, preview(&h.rec)
	case h == nil:
		return classMissing, "not in the sink"
	case h.deleted:
		return classMissing, "deleted in the sink"
	}
	a, err := v.compare.Eval(&e.rec)
	if err != nil {
		return classStale, fmt.Sprintf("%s fails on the source's record: %v", v.compareText, err)
	}
	// A sink that keeps bytes only (Kafka) cannot say how its payloads are encoded; they are what the
	// pipeline wrote for this key, so they are read as the source's record after the steps is encoded.
	sinkRec := h.rec
	if sinkRec.Encoding == record.EncodingRaw {
		sinkRec.Encoding = e.rec.Encoding
	}
	b, err := v.compare.Eval(&sinkRec)
	if err != nil {
		return classStale, fmt.Sprintf("%s fails on the sink's record: %v", v.compareText, err)
	}
	if transforms.Equal(a, b) {
		return "", ""
	}
	return classStale, diffHint(a, b)
}

// diffHint describes the first difference between the source's value a and the sink's b on one line,
// by the equality compare uses (so 3 and 3.0 do not differ), and how many more there are.
func diffHint(a, b any) string {
	var diffs []string
	diffPaths(&diffs, "", a, b)
	if len(diffs) == 0 {
		return "the values differ"
	}
	line := diffs[0]
	if len(diffs) > 1 {
		line += fmt.Sprintf(" (and %d more)", len(diffs)-1)
	}
	return transforms.Truncate(line, 200)
}

// diffPaths appends "path: source X, sink Y" for each place where a and b differ: objects member by
// member, arrays of the same length element by element.
func diffPaths(out *[]string, path string, a, b any) {
	if transforms.Equal(a, b) {
		return
	}
	join := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	switch x := a.(type) {
	case map[string]any:
		if y, ok := b.(map[string]any); ok {
			keys := slices.Sorted(maps.Keys(x))
			for k := range y {
				if _, ok := x[k]; !ok {
					keys = append(keys, k)
				}
			}
			for _, k := range keys {
				xv, xok := x[k]
				yv, yok := y[k]
				switch {
				case !yok:
					*out = append(*out, fmt.Sprintf("%s: source %s, not in the sink", join(k), showValue(xv)))
				case !xok:
					*out = append(*out, fmt.Sprintf("%s: not in the source, sink %s", join(k), showValue(yv)))
				default:
					diffPaths(out, join(k), xv, yv)
				}
			}
			return
		}
	case []any:
		if y, ok := b.([]any); ok && len(x) == len(y) {
			for i := range x {
				diffPaths(out, fmt.Sprintf("%s[%d]", path, i), x[i], y[i])
			}
			return
		}
	}
	where := path
	if where == "" {
		where = "value"
	}
	*out = append(*out, fmt.Sprintf("%s: source %s, sink %s", where, showValue(a), showValue(b)))
}

// showValue prints a compared value briefly: as relaxed Extended JSON.
func showValue(v any) string {
	b, err := codec.EncodeJSON(nil, map[string]any{"v": v})
	if err != nil {
		return fmt.Sprint(v)
	}
	return transforms.Truncate(string(b[len(`{"v":`):len(b)-1]), 60)
}

// preview is a record's payload for a one-line hint.
func preview(r *record.Record) string {
	if r.Encoding == record.EncodingBSON {
		if doc, err := codec.DecodeBSON(r.Payload); err == nil {
			if b, err := codec.EncodeJSON(nil, doc); err == nil {
				return "sink holds " + transforms.Truncate(string(b), 100)
			}
		}
	}
	if r.Encoding == record.EncodingRaw && !utf8.Valid(r.Payload) {
		return fmt.Sprintf("sink holds %d bytes", len(r.Payload))
	}
	return "sink holds " + transforms.Truncate(string(r.Payload), 100)
}

// check verifies the pipeline once: both ends, then, after settle, the keys that differed again.
func (v *verifier) check(ctx context.Context, settle time.Duration) (*report, error) {
	src, err := v.readSource(ctx, nil, nil)
	if err != nil {
		return nil, err
	}
	if src.keyless > 0 {
		return nil, ExitError{ExitInvalid, fmt.Errorf("verify: %d of the source's records have no key after the steps of pipeline %s: verify compares records by key; give them one with a key step (key: EXPRESSION)", src.keyless, v.p.ID)}
	}
	snk, err := v.readSink(ctx, src.routes, nil, nil)
	if err != nil {
		return nil, err
	}
	src.normalize(snk.result.Destination)
	rep := &report{Pipeline: v.p.ID, Compare: v.compareText, Settle: settle}
	rep.fill(v, src, snk)
	var diffs []difference
	for _, id := range unionIdents(src.exp, snk.held) {
		if class, hint := v.classify(id, src.exp[id], snk.held[id]); class != "" {
			diffs = append(diffs, difference{id: id, class: class, hint: hint, exp: src.exp[id]})
		}
	}
	if len(diffs) > 0 && settle > 0 {
		v.log.Info("verify: keys differ; checking them again after the settle time, in case they were in flight",
			"keys", len(diffs), "settle", settle.String())
		if err := sleep(ctx, settle); err != nil {
			return nil, ExitError{ExitFailure, err}
		}
		if diffs, err = v.recheck(ctx, diffs, src.routes); err != nil {
			return nil, err
		}
	}
	rep.diffs = diffs
	rep.count()
	return rep, nil
}

// recheck asks both ends again about the keys of diffs only, and returns them classified anew: those
// that now agree as in flight.
func (v *verifier) recheck(ctx context.Context, diffs []difference, routes map[string]bool) ([]difference, error) {
	only := map[ident]bool{}
	var srcKeys, sinkKeys [][]byte
	seenSrc, seenSink := map[string]bool{}, map[string]bool{}
	add := func(keys *[][]byte, seen map[string]bool, k []byte) {
		if !seen[string(k)] {
			seen[string(k)] = true
			*keys = append(*keys, k)
		}
	}
	whole := false // a source record without key: the source cannot be asked for it alone
	for _, d := range diffs {
		only[d.id] = true
		add(&sinkKeys, seenSink, []byte(d.id.key))
		if d.exp != nil {
			if len(d.exp.orig.Key) == 0 {
				whole = true
			}
			add(&srcKeys, seenSrc, d.exp.orig.Key)
		} else {
			// An extra key may be a record the source has just created: ask for it under the sink's key.
			add(&srcKeys, seenSrc, []byte(d.id.key))
		}
	}
	if whole {
		srcKeys = nil
	}
	src, err := v.readSource(ctx, srcKeys, nil)
	if err != nil {
		return nil, err
	}
	for r := range src.routes {
		routes[r] = true
	}
	snk, err := v.readSink(ctx, routes, sinkKeys, only)
	if err != nil {
		return nil, err
	}
	src.normalize(snk.result.Destination)
	out := make([]difference, 0, len(diffs))
	for _, d := range diffs {
		e, h := src.exp[d.id], snk.held[d.id]
		class, hint := v.classify(d.id, e, h)
		if class == "" {
			d.class, d.hint = classInFlight, "was "+d.class+": "+d.hint
			out = append(out, d)
			continue
		}
		out = append(out, difference{id: d.id, class: class, hint: hint, exp: e})
	}
	return out, nil
}

// unionIdents returns the idents of both maps, sorted.
func unionIdents(exp map[ident]*expected, h map[ident]*held) []ident {
	set := make(map[ident]bool, len(exp)+len(h))
	for id := range exp {
		set[id] = true
	}
	for id := range h {
		set[id] = true
	}
	ids := slices.Collect(maps.Keys(set))
	slices.SortFunc(ids, func(a, b ident) int {
		if c := strings.Compare(a.dest, b.dest); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	return ids
}

// render renders pos, a position of the stage conn serves (role "source" or "buffer"), as the plugin
// does, else in hex.
func render(ctx context.Context, conn *protocol.Conn, role string, pos record.Position) string {
	if pos == nil {
		return ""
	}
	if conn != nil {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var text string
		var err error
		if role == "buffer" {
			text, err = conn.Buffer().FormatPosition(ctx, pos)
		} else {
			text, err = conn.Source().FormatPosition(ctx, pos)
		}
		if err == nil {
			return text
		}
	}
	return pipeline.FormatPosition(pos)
}

// upstream returns the stage whose positions the sink stores (the buffer, else the source) and its role,
// starting the buffer's plugin if needed.
func (v *verifier) upstream(ctx context.Context) (*protocol.Conn, string) {
	if v.p.Buffer == nil {
		return v.source, "source"
	}
	if v.buffer == nil {
		conn, err := v.start(ctx, "buffer", v.p.Buffer)
		if err != nil {
			v.log.Debug("could not start the buffer to render the sink's checkpoint", "err", err)
			return nil, "buffer"
		}
		v.buffer = conn
	}
	return v.buffer, "buffer"
}

// ---- repair ----

// repairResult says what a repair did.
type repairResult struct {
	Reemitted  int `json:"reemitted"`
	Tombstoned int `json:"tombstoned"`
	// Skipped counts keys the source changed since the check (their change is on its way).
	Skipped int    `json:"skipped"`
	Through string `json:"through"`
	// Before are the counts of the verify that the repair fixed.
	Before *verifyCounts `json:"before"`
	// Checked: a second verify ran after the repair (--settle > 0).
	Checked bool `json:"checked"`
}

// repair sends the source records of rep's missing and stale keys through the steps, and tombstones for
// its extra keys, into the pipeline's buffer or, without one, its sink. The records are read from the
// source again just before they are sent, after the buffer or sink is open: a change the source makes
// after that read reaches the buffer after them.
func (v *verifier) repair(ctx context.Context, rep *report, o verifyOpts) (*repairResult, error) {
	var t *repairTarget
	var err error
	if v.p.Buffer != nil {
		t, err = v.openBuffer(ctx)
	} else {
		t, err = v.openSink(ctx, o)
	}
	if err != nil {
		return nil, err
	}
	defer t.close()
	res := &repairResult{Through: t.through}

	// The source's records of those keys now.
	only := map[ident]bool{}
	var keys [][]byte
	seen := map[string]bool{}
	whole := false
	for _, d := range rep.diffs {
		k := []byte(d.id.key)
		switch d.class {
		case classMissing, classStale:
			if k = d.exp.orig.Key; len(k) == 0 {
				whole = true
			}
		case classExtra:
		default:
			continue
		}
		only[d.id] = true
		if !seen[string(k)] {
			seen[string(k)] = true
			keys = append(keys, k)
		}
	}
	if whole {
		keys = nil
	}
	src, err := v.readSource(ctx, keys, only)
	if err != nil {
		return nil, err
	}
	src.normalize(rep.Sink.Destination)

	var runners []*transforms.Runner
	if v.p.Steps != nil {
		runners = append(runners, v.p.Steps.NewRunner())
	}
	var recs []record.Record
	for _, d := range rep.diffs {
		e := src.exp[d.id]
		switch {
		case d.class == classMissing || d.class == classStale:
			if e == nil {
				res.Skipped++ // the source no longer has it: its deletion is on its way
				continue
			}
			out, ok, failure := runSteps(runners, e.orig)
			if !ok || failure != "" {
				res.Skipped++
				continue
			}
			out.Position = t.pos
			recs = append(recs, out)
			res.Reemitted++
		case d.class == classExtra:
			if e != nil {
				res.Skipped++ // the source has it now: its record is on its way
				continue
			}
			r := record.Record{Position: t.pos, Op: record.OpDelete, Key: []byte(d.id.key), Encoding: record.EncodingJSON}
			if d.id.dest != "" {
				r.Meta = record.Meta{{Key: record.MetaRoute, Value: d.id.dest}}
			}
			recs = append(recs, r)
			res.Tombstoned++
		}
	}
	if err := v.send(t.w, recs, t.pos); err != nil {
		return nil, ExitError{ExitFailure, fmt.Errorf("verify --repair: %s: %w", t.through, err)}
	}
	return res, nil
}

// repairTarget is where a repair writes: an open buffer's append stream or an open sink's write stream.
type repairTarget struct {
	w *protocol.WriteStream
	// pos is the position of the repair's batches and records: nil for a buffer, the sink's checkpoint.
	pos     record.Position
	through string
	close   func()
}

// fence returns the fencing token to open a stage with: the pipeline's lease token when its file shares
// pipelines (cluster:), else 0; and the instance that runs the pipeline now, if any.
func (v *verifier) fence(ctx context.Context) (int64, string, error) {
	cl := v.file.Cluster
	if cl == nil {
		return 0, "", nil
	}
	client, _, err := redisClient(cl)
	if err != nil {
		return 0, "", ExitError{ExitInvalid, err}
	}
	defer client.Close()
	store := cluster.NewStore(client, cl.KeyPrefix)
	h, err := store.Holder(ctx, v.p.ID)
	if err != nil {
		return 0, "", ExitError{ExitFailure, err}
	}
	tok, err := store.Token(ctx, v.p.ID)
	if err != nil {
		return 0, "", ExitError{ExitFailure, err}
	}
	return tok, h.Instance, nil
}

// openBuffer opens the pipeline's buffer, as the pipeline does (with its lease's token under cluster:),
// to append batches without position: the buffer's checkpoint does not move, and the running pipeline
// delivers them after what the buffer held, in order with the changes appended since.
func (v *verifier) openBuffer(ctx context.Context) (*repairTarget, error) {
	through := "buffer " + v.p.Buffer.Plugin
	if v.p.Buffer.InProcess {
		return nil, ExitError{ExitInvalid, fmt.Errorf("verify --repair: the buffer %s of pipeline %s runs in_process, inside the sluice that runs the pipeline: a repair cannot reach it", v.p.Buffer.Plugin, v.p.ID)}
	}
	token, _, err := v.fence(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := v.start(ctx, "buffer", v.p.Buffer)
	if err != nil {
		return nil, err
	}
	buf := conn.Buffer()
	openCtx, cancelOpen := context.WithTimeout(ctx, v.p.OpenTimeout)
	defer cancelOpen()
	if err := buf.Open(openCtx, protocol.OpenRequest{Pipeline: v.p.ID, Settings: v.p.Buffer.Settings,
		MaxBatchRecords: v.p.BatchMaxRecords, MaxBatchBytes: v.p.BatchMaxBytes, Fence: token}); err != nil {
		return nil, ExitError{ExitFailure, fmt.Errorf("verify --repair: %s: opening: %w", through, err)}
	}
	closeBuf := func() { closeStage(ctx, buf.Close) }
	w, err := buf.Append(ctx)
	if err != nil {
		closeBuf()
		return nil, ExitError{ExitFailure, fmt.Errorf("verify --repair: %s: appending: %w", through, err)}
	}
	return &repairTarget{w: w, through: through, close: closeBuf}, nil
}

// openSink opens the pipeline's sink as the pipeline does, to write batches whose position is the sink's
// checkpoint, so that it does not move. The pipeline must be stopped.
func (v *verifier) openSink(ctx context.Context, o verifyOpts) (*repairTarget, error) {
	through := "sink " + v.p.Sink.Plugin
	if !o.pipelineStopped {
		return nil, ExitError{ExitInvalid, fmt.Errorf("verify --repair: pipeline %s has no buffer, so the repair is written to its sink %s directly, which is safe only while the pipeline is stopped; sluice cannot tell for sure that it is (another sluice may run it with another data dir): stop it, then add --pipeline-stopped", v.p.ID, v.p.Sink.Plugin)}
	}
	token, holder, err := v.fence(ctx)
	if err != nil {
		return nil, err
	}
	if holder != "" {
		return nil, ExitError{ExitFailure, fmt.Errorf("verify --repair: pipeline %s is running on instance %s: stop it there first", v.p.ID, holder)}
	}
	release := func() {}
	if v.file.Cluster == nil {
		// A sluice running the file's pipelines holds the data dir's state store: hold it while writing,
		// so that none starts meanwhile.
		dir := dataDirOf(o.dataDir, v.file.DataDir)
		exists, err := state.Exists(dir)
		if err != nil {
			return nil, ExitError{ExitFailure, err}
		}
		if exists {
			store, err := state.Open(dir)
			if err != nil {
				return nil, ExitError{ExitFailure, fmt.Errorf("verify --repair: pipeline %s may be running: %w", v.p.ID, err)}
			}
			release = func() { _ = store.Close() }
		}
	}
	fail := func(doing string, err error) (*repairTarget, error) {
		release()
		return nil, ExitError{ExitFailure, fmt.Errorf("verify --repair: %s: %s: %w", through, doing, err)}
	}
	conn, err := v.start(ctx, "sink", v.p.Sink)
	if err != nil {
		release()
		return nil, err
	}
	sink := conn.Sink()
	openCtx, cancelOpen := context.WithTimeout(ctx, v.p.OpenTimeout)
	defer cancelOpen()
	if err := sink.Open(openCtx, protocol.OpenRequest{Pipeline: v.p.ID, Settings: v.p.Sink.Settings,
		MaxBatchRecords: v.p.BatchMaxRecords, MaxBatchBytes: v.p.BatchMaxBytes, Fence: token}); err != nil {
		return fail("opening", err)
	}
	closeSink := func() {
		closeStage(ctx, sink.Close)
		release()
	}
	var pos record.Position
	if spec := v.p.Sink.Spec.Stage(sdk.KindSink); spec != nil && spec.Capabilities.Atomic(v.p.Sink.Settings) {
		if pos, err = sink.Checkpoint(ctx); err != nil {
			closeSink()
			return nil, ExitError{ExitFailure, fmt.Errorf("verify --repair: %s: reading its checkpoint: %w", through, err)}
		}
	}
	w, err := sink.Write(ctx)
	if err != nil {
		closeSink()
		return nil, ExitError{ExitFailure, fmt.Errorf("verify --repair: %s: writing: %w", through, err)}
	}
	return &repairTarget{w: w, pos: pos, through: through, close: closeSink}, nil
}

// send sends recs on w in batches of the pipeline's size, each with position pos, and waits until the
// stage has acknowledged them all and ended the stream.
func (v *verifier) send(w *protocol.WriteStream, recs []record.Record, pos record.Position) error {
	for len(recs) > 0 {
		n, size := 0, 0
		for n < len(recs) && n < v.p.BatchMaxRecords && (n == 0 || size+record.EncodedSize(&recs[n]) <= v.p.BatchMaxBytes) {
			size += record.EncodedSize(&recs[n])
			n++
		}
		if err := w.Send(protocol.NewBatch(recs[:n], pos)); err != nil {
			return ackErr(w, err)
		}
		recs = recs[n:]
	}
	if err := w.CloseSend(); err != nil {
		return err
	}
	for {
		a, err := w.RecvAck()
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		case len(a.Rejects) > 0:
			return fmt.Errorf("the stage refused a record: %s", a.Rejects[0].Reason)
		}
	}
}

// ackErr is the reason a send failed: the stage's, when it ended the stream.
func ackErr(w *protocol.WriteStream, err error) error {
	if errors.Is(err, protocol.ErrStreamEnded) {
		if _, rerr := w.RecvAck(); rerr != nil && rerr != io.EOF {
			return rerr
		}
	}
	return err
}

// ---- report ----

type verifyCounts struct {
	Missing  int `json:"missing"`
	Stale    int `json:"stale"`
	Extra    int `json:"extra"`
	InFlight int `json:"in_flight"`
}

// report is the result of one verify.
type report struct {
	Pipeline string
	Compare  string
	Settle   time.Duration
	Source   sourceReport
	Sink     sinkReport
	// Behind is how far the sink's latest event time is behind the source's time; nil when unknown.
	Behind *time.Duration
	Counts verifyCounts
	Repair *repairResult

	diffs []difference
}

type sourceReport struct {
	Plugin   string     `json:"plugin"`
	Records  int        `json:"records"`
	Expected int        `json:"expected"`
	Filtered int        `json:"filtered"`
	Failed   int        `json:"failed"`
	Failure  string     `json:"failure,omitempty"`
	Position string     `json:"position,omitempty"`
	Time     *time.Time `json:"time,omitempty"`
}

type sinkReport struct {
	Plugin      string     `json:"plugin"`
	Destination string     `json:"destination,omitempty"`
	Keys        int        `json:"keys"`
	Deleted     int        `json:"deleted"`
	Checkpoint  string     `json:"checkpoint,omitempty"`
	Time        *time.Time `json:"time,omitempty"`
}

func (r *report) fill(v *verifier, src *sourcePass, snk *sinkPass) {
	ctx := context.Background()
	r.Source = sourceReport{Plugin: v.p.Source.Plugin, Records: src.records, Expected: len(src.exp), Filtered: src.filtered,
		Failed: src.failed, Failure: transforms.Truncate(src.failure, 200), Position: render(ctx, v.source, "source", src.result.Position)}
	r.Sink = sinkReport{Plugin: v.p.Sink.Plugin, Destination: snk.result.Destination, Keys: len(snk.held), Deleted: snk.deleted}
	if snk.result.Position != nil {
		conn, role := v.upstream(ctx)
		r.Sink.Checkpoint = render(ctx, conn, role, snk.result.Position)
	}
	if t := src.result.Time; !t.IsZero() {
		t = t.UTC()
		r.Source.Time = &t
	}
	if t := snk.result.Time; !t.IsZero() {
		t = t.UTC()
		r.Sink.Time = &t
	}
	if r.Source.Time != nil && r.Sink.Time != nil {
		d := max(r.Source.Time.Sub(*r.Sink.Time), 0)
		r.Behind = &d
	}
}

func (r *report) count() {
	r.Counts = verifyCounts{}
	for _, d := range r.diffs {
		switch d.class {
		case classMissing:
			r.Counts.Missing++
		case classStale:
			r.Counts.Stale++
		case classExtra:
			r.Counts.Extra++
		case classInFlight:
			r.Counts.InFlight++
		}
	}
}

func (r *report) consistent() bool {
	return r.Counts.Missing == 0 && r.Counts.Stale == 0 && r.Counts.Extra == 0
}

// sampleJSON is one key of a class in the JSON report.
type sampleJSON struct {
	Destination string `json:"destination,omitempty"`
	Key         string `json:"key"`
	KeyBase64   string `json:"key_base64,omitempty"`
	Hint        string `json:"hint"`
}

// reportJSON is the shape of verify --json (documented in the README).
type reportJSON struct {
	Pipeline      string                  `json:"pipeline"`
	Consistent    bool                    `json:"consistent"`
	Compare       string                  `json:"compare"`
	Source        sourceReport            `json:"source"`
	Sink          sinkReport              `json:"sink"`
	BehindSeconds *float64                `json:"behind_seconds"`
	SettleSeconds float64                 `json:"settle_seconds"`
	Counts        verifyCounts            `json:"counts"`
	Samples       map[string][]sampleJSON `json:"samples"`
	Repair        *repairResult           `json:"repair,omitempty"`
}

func (r *report) json(sample int) reportJSON {
	out := reportJSON{Pipeline: r.Pipeline, Consistent: r.consistent(), Compare: r.Compare, Source: r.Source, Sink: r.Sink,
		SettleSeconds: r.Settle.Seconds(), Counts: r.Counts, Repair: r.Repair, Samples: map[string][]sampleJSON{}}
	if r.Behind != nil {
		s := r.Behind.Seconds()
		out.BehindSeconds = &s
	}
	for _, class := range []string{classMissing, classStale, classExtra, classInFlight} {
		list := []sampleJSON{}
		for _, d := range r.diffs {
			if d.class != class || len(list) >= sample {
				continue
			}
			s := sampleJSON{Destination: d.id.dest, Key: d.id.key, Hint: d.hint}
			if !utf8.ValidString(d.id.key) {
				s.Key, s.KeyBase64 = "", base64String(d.id.key)
			}
			list = append(list, s)
		}
		out.Samples[class] = list
	}
	return out
}

func base64String(s string) string {
	b, _ := json.Marshal([]byte(s)) // a quoted base64 string
	return string(b[1 : len(b)-1])
}

// showKey quotes a key for the human report.
func showKey(id ident) string {
	k := strconv.Quote(id.key)
	if id.dest != "" {
		k += " at " + id.dest
	}
	return k
}

func (r *report) print(w io.Writer, sample int) {
	verdict := "consistent"
	if !r.consistent() {
		verdict = "NOT consistent"
	}
	fmt.Fprintf(w, "pipeline %s: %s → %s: %s\n", r.Pipeline, r.Source.Plugin, r.Sink.Plugin, verdict)
	fmt.Fprintf(w, "  source: %d records, %d expected at the sink", r.Source.Records, r.Source.Expected)
	if r.Source.Filtered > 0 {
		fmt.Fprintf(w, ", %d filtered out", r.Source.Filtered)
	}
	if r.Source.Failed > 0 {
		fmt.Fprintf(w, ", %d failed in the steps (%s)", r.Source.Failed, r.Source.Failure)
	}
	if r.Source.Position != "" {
		fmt.Fprintf(w, "; position %s", r.Source.Position)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  sink:   %d keys (%d deleted)", r.Sink.Keys, r.Sink.Deleted)
	if r.Sink.Destination != "" {
		fmt.Fprintf(w, " in %s", r.Sink.Destination)
	}
	if r.Sink.Checkpoint != "" {
		fmt.Fprintf(w, "; checkpoint %s", r.Sink.Checkpoint)
	}
	fmt.Fprintln(w)
	if r.Behind != nil {
		fmt.Fprintf(w, "  behind: %s (source at %s, the sink's latest event at %s)\n", r.Behind.Round(time.Millisecond),
			r.Source.Time.Format(time.RFC3339Nano), r.Sink.Time.Format(time.RFC3339Nano))
	}
	fmt.Fprintf(w, "  compared: %s; missing %d, stale %d, extra %d", r.Compare, r.Counts.Missing, r.Counts.Stale, r.Counts.Extra)
	if r.Settle > 0 {
		fmt.Fprintf(w, ", in flight %d (differed, then agreed %s later)", r.Counts.InFlight, r.Settle)
	}
	fmt.Fprintln(w)
	for _, class := range []string{classMissing, classStale, classExtra, classInFlight} {
		shown := 0
		for _, d := range r.diffs {
			if d.class != class || shown >= sample {
				continue
			}
			if shown == 0 {
				fmt.Fprintf(w, "  %s:\n", strings.ReplaceAll(class, "_", " "))
			}
			fmt.Fprintf(w, "    %s: %s\n", showKey(d.id), d.hint)
			shown++
		}
	}
	if rp := r.Repair; rp != nil {
		fmt.Fprintf(w, "  repair: re-sent %d records and %d deletions through the %s (before it: missing %d, stale %d, extra %d)",
			rp.Reemitted, rp.Tombstoned, rp.Through, rp.Before.Missing, rp.Before.Stale, rp.Before.Extra)
		if rp.Checked {
			fmt.Fprintln(w, "; the counts above are of the verify after it")
		} else {
			fmt.Fprintln(w, "; not verified again (--settle 0)")
		}
	}
}

// closeStage closes a stage the repair opened within pipeline.CloseTimeout, also when ctx has ended (the
// plugin process is killed next anyway).
func closeStage(ctx context.Context, closeFn func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pipeline.CloseTimeout)
	defer cancel()
	_ = closeFn(ctx)
}
