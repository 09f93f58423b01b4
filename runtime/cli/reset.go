package cli

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/runtime/state"
)

func resetCmd(g *globals) *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "reset PIPELINE...",
		Short: "forget the positions the host stored for pipelines, so they start over",
		Long: `reset deletes the positions sluice's state store holds for the named pipelines: their next run starts
where the source's settings say (for generate, from seq 0). It does not touch positions that a sink or
buffer stores itself (an exactly-once stage); reset those in the stage's own system. sluice must not be
running with the same data directory.

A pipeline with no stored positions in the data directory is an error (exit 2) that lists the pipelines
that have some; then nothing is deleted.`,
		Args: usage(cobra.MinimumNArgs(1)),
		RunE: func(_ *cobra.Command, ids []string) error {
			exists, err := state.Exists(dataDir)
			if err != nil {
				return ExitError{ExitFailure, err}
			}
			var known []string
			if exists {
				// Only an existing store is opened: reset never creates a data directory.
				store, err := state.Open(dataDir)
				if err != nil {
					return ExitError{ExitFailure, err}
				}
				defer store.Close()
				if known, err = store.List(); err != nil {
					return ExitError{ExitFailure, err}
				}
				if err := unknownPipelines(ids, known, dataDir); err != nil {
					return err
				}
				for _, id := range ids {
					if err := store.Delete(id); err != nil {
						return ExitError{ExitFailure, err}
					}
					fmt.Fprintf(g.stdout, "pipeline %s: stored positions deleted\n", id)
				}
				return nil
			}
			return unknownPipelines(ids, nil, dataDir)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", DefaultDataDir, "the host's data directory")
	return cmd
}

// unknownPipelines returns an ExitInvalid error naming the ids that have no stored positions (known
// lists those that have), or nil when every id has some.
func unknownPipelines(ids, known []string, dataDir string) error {
	var missing []string
	for _, id := range ids {
		if !slices.Contains(known, id) && !slices.Contains(missing, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	what := "pipeline " + missing[0]
	if len(missing) > 1 {
		what = "pipelines " + strings.Join(missing, ", ")
	}
	msg := fmt.Sprintf("reset: no stored positions for %s in data dir %s; nothing was deleted. ", what, dataDir)
	if len(known) > 0 {
		msg += "Pipelines with stored positions there: " + strings.Join(known, ", ")
	} else {
		msg += "No pipeline has stored positions there"
	}
	msg += " (a pipeline whose sink stores its positions, exactly-once, has none here: reset it in the sink's system; another data dir: --data-dir)"
	return ExitError{ExitInvalid, fmt.Errorf("%s", msg)}
}
