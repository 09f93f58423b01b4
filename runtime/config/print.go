package config

import (
	"fmt"
	"io"

	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/runtime/pipeline"
)

// The shapes Print writes, in the order keys are documented.
type (
	printFile struct {
		Version   int             `yaml:"version"`
		FailFast  bool            `yaml:"fail_fast"`
		DataDir   string          `yaml:"data_dir,omitempty"`
		Cluster   *printCluster   `yaml:"cluster,omitempty"`
		Alerts    []printAlert    `yaml:"alerts,omitempty"`
		Pipelines []printPipeline `yaml:"pipelines"`
		Tests     []any           `yaml:"tests,omitempty"`
	}
	printPipeline struct {
		ID               string       `yaml:"id"`
		Source           *printStage  `yaml:"source"`
		Transforms       []any        `yaml:"transforms,omitempty"`
		Buffer           *printStage  `yaml:"buffer,omitempty"`
		SinkTransforms   []any        `yaml:"sink_transforms,omitempty"`
		Sink             *printStage  `yaml:"sink"`
		OnError          string       `yaml:"on_error"`
		DeadLetter       *printStage  `yaml:"dlq,omitempty"`
		BatchMaxRecords  int          `yaml:"batch_max_records"`
		BatchMaxBytes    int          `yaml:"batch_max_bytes"`
		MaxInFlightBytes int          `yaml:"max_in_flight_bytes"`
		Retry            any          `yaml:"retry"`
		OpenTimeout      string       `yaml:"open_timeout"`
		StallTimeout     string       `yaml:"stall_timeout"`
		Ordered          *bool        `yaml:"ordered,omitempty"`
		Lanes            int          `yaml:"lanes,omitempty"`
		Verify           *printVerify `yaml:"verify,omitempty"`
	}
	printVerify struct {
		Compare       string `yaml:"compare,omitempty"`
		IgnoreDeleted bool   `yaml:"ignore_deleted"`
	}
	printRetry struct {
		Initial     string `yaml:"initial"`
		Max         string `yaml:"max"`
		GiveUpAfter string `yaml:"give_up_after"`
	}
	printStage struct {
		Plugin    string         `yaml:"plugin"`
		SHA256    string         `yaml:"sha256,omitempty"`
		InProcess bool           `yaml:"in_process,omitempty"`
		Settings  map[string]any `yaml:"settings,omitempty"`
	}
)

// Print writes the resolved file as YAML, for `sluice validate --print`: every key with its default
// applied, settings sorted by name, and the value of every secret setting and of every setting value that
// came from a ${env:…} or ${file:…} reference replaced by "<redacted>"; so are alerts' header values, and
// their URLs when they hold a reference. It shows the file as Load
// resolved it (changes made to Stage.Settings afterwards are not printed). A header comment names f.Path.
// Print does not modify f; concurrent calls are safe. An error is w's.
func (f *File) Print(w io.Writer) error {
	out := printFile{Version: f.Version, FailFast: f.FailFast, DataDir: f.DataDir, Cluster: printedCluster(f.Cluster),
		Alerts: printedAlerts(f.Alerts),
		Tests:  rawValues(f.Tests)}
	for _, p := range f.Pipelines {
		out.Pipelines = append(out.Pipelines, printPipeline{
			ID:               p.ID,
			Source:           printed(p.Source),
			Transforms:       rawValues(p.Transforms),
			Buffer:           printed(p.Buffer),
			SinkTransforms:   rawValues(p.SinkTransforms),
			Sink:             printed(p.Sink),
			OnError:          p.OnError,
			DeadLetter:       printed(p.DeadLetter),
			BatchMaxRecords:  p.BatchMaxRecords,
			BatchMaxBytes:    p.BatchMaxBytes,
			MaxInFlightBytes: p.MaxInFlightBytes,
			Retry:            printedRetry(p.Retry),
			OpenTimeout:      p.OpenTimeout.String(),
			StallTimeout:     p.StallTimeout.String(),
			Verify:           printedVerify(p.Verify),
		})
		if !p.Ordered {
			last := &out.Pipelines[len(out.Pipelines)-1]
			last.Ordered, last.Lanes = new(bool), p.Lanes
		}
	}
	if _, err := fmt.Fprintf(w, "# %s (resolved; secrets redacted)\n", f.Path); err != nil {
		return fmt.Errorf("config: print %s: %w", f.Path, err)
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(out); err != nil {
		return fmt.Errorf("config: print %s: %w", f.Path, err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("config: print %s: %w", f.Path, err)
	}
	return nil
}

func printed(s *Stage) *printStage {
	if s == nil {
		return nil
	}
	settings := s.printed
	if settings == nil {
		// A Stage built by hand, not by Load: nothing is known to be safe to show.
		settings = make(map[string]any, len(s.Settings))
		for k := range s.Settings {
			settings[k] = redacted
		}
	}
	return &printStage{Plugin: s.Plugin, SHA256: s.SHA256, InProcess: s.InProcess, Settings: settings}
}

func rawValues(rs []Raw) []any {
	if len(rs) == 0 {
		return nil
	}
	vs := make([]any, len(rs))
	for i, r := range rs {
		vs[i] = r.Value
	}
	return vs
}

func printedRetry(r pipeline.Retry) any {
	if r.Forever {
		return "forever"
	}
	return printRetry{Initial: r.Initial.String(), Max: r.Max.String(), GiveUpAfter: r.GiveUpAfter.String()}
}

// printedVerify is a pipeline's verify block, nil when the file does not write one.
func printedVerify(v Verify) *printVerify {
	if v.Pos.Line == 0 {
		return nil
	}
	return &printVerify{Compare: v.CompareText, IgnoreDeleted: v.IgnoreDeleted}
}
