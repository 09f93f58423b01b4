package transforms

import (
	"slices"
	"strings"

	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms/codec"
)

// Sample runs a program over sample records (`sluice validate --sample`) and reports what a user would
// want to know before running it for real: the paths the steps read that no sample has (a misspelled
// field makes a filter drop everything), the filters that drop every sample and the conditions that are
// never true, and the records a step fails on.

// SampleReport is what a program did with sample records.
type SampleReport struct {
	// Records is the number of sample records.
	Records int
	// Steps holds, for each step, how many records reached it, how many it ran on (its when was true, or
	// it has none) and, for a filter, how many it kept.
	Steps []StepCount
	// Missing are the payload paths the steps read that no sample record has, nor any step writes.
	Missing []MissingPath
	// Failed are the records a step failed on.
	Failed []Failure
}

// StepCount counts the records one step saw.
type StepCount struct {
	Kind Kind
	// When is true when the step has a when condition.
	When bool
	// Reached, Ran and Kept count the records that reached the step, that it ran on, and (filters) that
	// it kept.
	Reached, Ran, Kept int
}

// MissingPath is a payload path read by the steps and present in no sample record.
type MissingPath struct {
	Path string
	// Suggest is the closest field the samples have where the path's last name is expected, or "".
	Suggest string
}

// Sample runs p over recs (which it does not change) and reports on it.
func (p *Program) Sample(recs []record.Record) *SampleReport {
	rep := &SampleReport{Records: len(recs), Steps: make([]StepCount, len(p.steps))}
	for i, st := range p.steps {
		rep.Steps[i] = StepCount{Kind: st.kind, When: st.when != nil}
	}
	r := p.NewRunner()
	r.counts = rep.Steps
	_, failed := r.Run(recs)
	rep.Failed = slices.Clone(failed)
	rep.Missing = p.missing(recs)
	return rep
}

// missing lists the paths p reads that are in none of recs' payloads and that no step writes.
func (p *Program) missing(recs []record.Record) []MissingPath {
	var docs []map[string]any
	for _, rec := range recs {
		var doc map[string]any
		var err error
		switch rec.Encoding {
		case record.EncodingJSON:
			doc, err = codec.DecodeJSON(rec.Payload)
		case record.EncodingBSON:
			doc, err = codec.DecodeBSON(rec.Payload)
		default:
			continue
		}
		if err == nil && doc != nil {
			docs = append(docs, doc)
		}
	}
	if len(docs) == 0 {
		return nil
	}
	written := p.writtenPaths()
	var out []MissingPath
	for _, path := range p.tree.Paths() {
		if slices.ContainsFunc(written, func(w []string) bool { return overlaps(w, path) }) {
			continue
		}
		present := false
		var siblings []string
		for _, doc := range docs {
			if hasPath(doc, path) {
				present = true
				break
			}
			if parent, ok := getPath(doc, path[:len(path)-1]); ok {
				if m, ok := parent.(map[string]any); ok {
					for k := range m {
						if !slices.Contains(siblings, k) {
							siblings = append(siblings, k)
						}
					}
				}
			}
		}
		if present {
			continue
		}
		mp := MissingPath{Path: strings.Join(path, ".")}
		last := path[len(path)-1]
		if s := didYouMean(last, siblings); s != "" {
			mp.Suggest = strings.Join(append(slices.Clone(path[:len(path)-1]), strings.TrimSuffix(strings.TrimPrefix(s, "; did you mean "), "?")), ".")
		}
		out = append(out, mp)
	}
	return out
}

// writtenPaths are the payload paths the steps write.
func (p *Program) writtenPaths() [][]string {
	var out [][]string
	for _, st := range p.steps {
		if st.kind == Drop {
			continue
		}
		for _, f := range st.fields {
			t := f.path
			if st.kind == Rename {
				t = f.to
			}
			if t.area == areaPayload {
				out = append(out, t.path)
			}
		}
	}
	return out
}

// overlaps reports whether one path is a prefix of the other.
func overlaps(a, b []string) bool {
	n := min(len(a), len(b))
	return slices.Equal(a[:n], b[:n])
}

func hasPath(doc map[string]any, path []string) bool {
	_, ok := getPath(doc, path)
	return ok
}
