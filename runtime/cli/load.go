package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/sluicehq/sluice/runtime/config"
	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/runtime/plugin"
)

// load reads and validates every file, reporting all problems of all files at once (each as
// file:line:col: message on stderr), and checks the plugin binaries against their pins (see pin). A
// problem makes the result an ExitError with ExitInvalid.
func load(w io.Writer, c *plugin.Catalog, paths []string) ([]*config.File, error) {
	return loadFiles(w, c, paths, true)
}

// loadFiles is load; withLocks false leaves the sluice.lock files unread (plugins lock writes them).
func loadFiles(w io.Writer, c *plugin.Catalog, paths []string, withLocks bool) ([]*config.File, error) {
	var files []*config.File
	var problems config.Errors
	var other []error
	ids := map[string]config.Pos{}
	loader := &config.Loader{Specs: c.Spec, UnknownPluginHint: c.Searched()}
	linked := map[string]bool{}
	var linkedNames []string
	for _, p := range c.List() {
		loader.Plugins = append(loader.Plugins, p.Spec.Name)
		if p.Linked != nil {
			linked[p.Spec.Name] = true
			linkedNames = append(linkedNames, p.Spec.Name)
		}
	}
	for _, path := range paths {
		f, err := loader.Load(path)
		var errs config.Errors
		switch {
		case errors.As(err, &errs):
			problems = append(problems, errs...)
			continue
		case err != nil:
			other = append(other, err)
			continue
		}
		for _, p := range f.Pipelines {
			if first, dup := ids[p.ID]; dup {
				problems = append(problems, &config.Error{Pos: p.Pos,
					Msg: fmt.Sprintf("pipeline id %q is already used at %s; ids must be unique across files", p.ID, first)})
			}
			ids[p.ID] = p.Pos
			for _, st := range []*config.Stage{p.Source, p.Buffer, p.Sink, p.DeadLetter} {
				if st == nil {
					continue
				}
				if st.InProcess && !linked[st.Plugin] {
					problems = append(problems, &config.Error{Pos: st.Pos, Msg: fmt.Sprintf(
						"plugin %q is not linked into this sluice binary, so in_process cannot be true for it; plugins that can run in-process: %s",
						st.Plugin, strings.Join(linkedNames, ", "))})
				}
				// A plugin linked into the host is known without a binary, but runs as a subprocess unless
				// in_process: run would fail to start it.
				if pl, ok := c.Lookup(st.Plugin); ok && !st.InProcess && pl.Path == "" {
					problems = append(problems, &config.Error{Pos: st.Pos, Msg: fmt.Sprintf(
						"plugin %q has no binary (%s); build it (make plugins), or set in_process: true to run the copy linked into this sluice binary",
						st.Plugin, c.Searched())})
				}
			}
		}
		files = append(files, f)
	}
	pinProblems, pinErrs := pin(c, files, withLocks)
	problems, other = append(problems, pinProblems...), append(other, pinErrs...)
	// cluster: belongs to the process: files that set it must agree.
	var first *config.File
	for _, f := range files {
		switch {
		case f.Cluster == nil:
		case first == nil:
			first = f
		case !f.Cluster.Same(first.Cluster):
			problems = append(problems, &config.Error{Pos: f.Cluster.Pos, Msg: fmt.Sprintf(
				"cluster differs from the one at %s; the files a sluice runs share one cluster: write the same settings in each, or in one file only",
				first.Cluster.Pos)})
		}
	}
	for _, e := range problems {
		fmt.Fprintln(w, e)
	}
	for _, e := range other {
		fmt.Fprintln(w, e)
	}
	if n := len(problems) + len(other); n > 0 {
		return nil, ExitError{Code: ExitInvalid, Err: fmt.Errorf("%d problem%s found", n, plural(n))}
	}
	return files, nil
}

// loadFiles is load, and adds the secret values of the files to g.secrets, so that nothing sluice prints
// from now on shows them.
func (g *globals) loadFiles(w io.Writer, c *plugin.Catalog, paths []string) ([]*config.File, error) {
	files, err := load(w, c, paths)
	for _, f := range files {
		g.secrets.Add(f.Secrets()...)
	}
	return files, err
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// pipelineConfig turns a validated pipeline into what the runtime runs.
func pipelineConfig(p *config.Pipeline) pipeline.Config {
	stage := func(s *config.Stage) pipeline.Stage {
		st := s.Spec.Stage(s.Kind)
		return pipeline.Stage{Plugin: s.Plugin, Settings: s.Settings, InProcess: s.InProcess,
			Atomic: st != nil && st.Capabilities.Atomic(s.Settings)}
	}
	cfg := pipeline.Config{
		ID: p.ID, Source: stage(p.Source), Sink: stage(p.Sink),
		BatchMaxRecords: p.BatchMaxRecords, BatchMaxBytes: p.BatchMaxBytes, MaxInFlightBytes: p.MaxInFlightBytes,
		Steps: p.Steps, SinkSteps: p.SinkSteps, OnError: p.OnError,
		Retry: p.Retry, OpenTimeout: p.OpenTimeout, StallTimeout: p.StallTimeout,
	}
	if !p.Ordered {
		cfg.Lanes = p.Lanes
	}
	if p.DeadLetter != nil {
		d := stage(p.DeadLetter)
		cfg.DeadLetter = &d
	}
	if p.Buffer != nil {
		b := stage(p.Buffer)
		cfg.Buffer = &b
	}
	return cfg
}

// describePipeline is the one-line summary validate prints: stages and guarantee.
func describePipeline(p *config.Pipeline) string {
	parts := []string{p.Source.Plugin}
	if p.Steps != nil {
		parts = append(parts, fmt.Sprintf("%d step%s", p.Steps.Len(), plural(p.Steps.Len())))
	}
	if p.Buffer != nil {
		parts = append(parts, p.Buffer.Plugin)
	}
	if p.SinkSteps != nil {
		parts = append(parts, fmt.Sprintf("%d step%s", p.SinkSteps.Len(), plural(p.SinkSteps.Len())))
	}
	parts = append(parts, p.Sink.Plugin)
	cfg := pipelineConfig(p)
	s := fmt.Sprintf("pipeline %s: %s (%s", p.ID, strings.Join(parts, " → "), pipeline.GuaranteeOf(&cfg))
	if !p.Ordered {
		s += fmt.Sprintf("; ordered: false, %d lanes", p.Lanes)
	}
	if p.DeadLetter != nil {
		s += fmt.Sprintf("; dead letters → %s, on_error: %s", p.DeadLetter.Plugin, p.OnError)
	}
	return s + ")"
}
