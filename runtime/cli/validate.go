package cli

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/runtime/config"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms"
	"github.com/sluicehq/sluice/transforms/codec"
)

func validateCmd(g *globals) *cobra.Command {
	var print bool
	var sample string
	cmd := &cobra.Command{
		Use:   "validate FILE...",
		Short: "check connector files against the plugins' specs and print each pipeline's guarantee",
		Long: `validate loads each connector file, checks it against the discovered plugins' specs, and prints each
pipeline with its delivery guarantee. Problems are printed as file:line:col: message, and the exit code is 2.
With --print, the resolved configuration is printed, secrets redacted.

With --sample FILE (JSON Lines, one payload per line: a MongoDB replay_file is one), every pipeline's
transform steps run on the sample records, and warnings name the fields the steps read that no sample
has (with the closest field it does have), the filters that drop every sample, the when conditions that
are never true and the steps that fail on a sample. Warnings do not change the exit code.`,
		Args: usage(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.catalog(cmd.Context())
			if err != nil {
				return err
			}
			var samples [][]byte
			if sample != "" {
				if samples, err = readSample(sample); err != nil {
					return ExitError{Code: ExitInvalid, Err: err}
				}
			}
			files, err := g.loadFiles(g.stderr, c, args)
			if err != nil {
				return err
			}
			for _, f := range files {
				for _, p := range f.Pipelines {
					fmt.Fprintf(g.stdout, "%s: %s\n", f.Path, describePipeline(p))
					if sample != "" {
						checkSample(g.stderr, p, sample, samples)
					}
				}
				if print {
					if err := f.Print(g.stdout); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&print, "print", false, "print the resolved configuration (secrets redacted)")
	cmd.Flags().StringVar(&sample, "sample", "", "run the transform steps on the payloads of this JSON Lines file and warn about what looks wrong")
	return cmd
}

// maxSample bounds the sample file.
const maxSample = 64 << 20

// readSample reads a JSON Lines file of payloads.
func readSample(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--sample: %w", err)
	}
	if len(data) > maxSample {
		return nil, fmt.Errorf("--sample: %s is %d bytes; the limit is %d", path, len(data), maxSample)
	}
	var out [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxSample)
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		if _, err := codec.DecodeJSON(text); err != nil {
			return nil, fmt.Errorf("--sample: %s:%d: %v", path, line, err)
		}
		out = append(out, bytes.Clone(text))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--sample: %s has no records", path)
	}
	return out, nil
}

// checkSample runs a pipeline's steps on the samples and prints warnings as file:line:col: warning: ….
func checkSample(w io.Writer, p *config.Pipeline, name string, samples [][]byte) {
	recs := make([]record.Record, 0, len(samples))
	for _, s := range samples {
		r := record.Record{Op: record.OpInsert, Payload: s, Encoding: record.EncodingJSON}
		if fill, ok := sources[p.Source.Plugin]; ok {
			if doc, err := codec.DecodeJSON(s); err == nil {
				_ = fill(doc, &r) // a sample the source could not read still runs through the steps
			}
		}
		recs = append(recs, r)
	}
	for _, list := range []struct {
		name  string
		prog  *transforms.Program
		steps []config.Raw
	}{{"transforms", p.Steps, p.Transforms}, {"sink_transforms", p.SinkSteps, p.SinkTransforms}} {
		if list.prog == nil {
			continue
		}
		rep := list.prog.Sample(recs)
		at := func(i int) config.Pos {
			if i >= 0 && i < len(list.steps) {
				return list.steps[i].Pos
			}
			return p.Pos
		}
		for _, m := range rep.Missing {
			hint := ""
			if m.Suggest != "" {
				hint = fmt.Sprintf(" (did you mean %s?)", m.Suggest)
			}
			fmt.Fprintf(w, "%s: warning: %s: the steps read %s, which none of the %d records of %s has%s\n", p.Pos, list.name, m.Path, rep.Records, name, hint)
		}
		for i, c := range rep.Steps {
			switch {
			case c.Reached == 0:
			case c.When && c.Ran == 0:
				fmt.Fprintf(w, "%s: warning: %s[%d].%s: its when is true for none of the %d sample records that reach it\n", at(i), list.name, i, c.Kind, c.Reached)
			case c.Kind == transforms.Filter && c.Ran > 0 && c.Kept == 0:
				fmt.Fprintf(w, "%s: warning: %s[%d].filter drops all %d sample records that reach it\n", at(i), list.name, i, c.Ran)
			}
		}
		for _, f := range rep.Failed {
			where := p.Pos
			if f.Step >= 0 {
				where = at(f.Step)
			}
			msg := f.Error()
			if f.Step >= 0 {
				msg = list.name + msg[len("transforms"):]
			}
			fmt.Fprintf(w, "%s: warning: sample record %d fails: %s\n", where, sampleIndex(recs, f.Record)+1, msg)
		}
		out, _ := list.prog.NewRunner().Run(recs)
		recs = append([]record.Record(nil), out...)
	}
}

// sampleIndex finds a record among the samples by its payload.
func sampleIndex(recs []record.Record, r record.Record) int {
	for i := range recs {
		if len(recs[i].Payload) > 0 && len(r.Payload) > 0 && &recs[i].Payload[0] == &r.Payload[0] {
			return i
		}
	}
	return -1
}
