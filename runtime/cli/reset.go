package cli

import (
	"fmt"

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
running with the same data directory.`,
		Args: usage(cobra.MinimumNArgs(1)),
		RunE: func(_ *cobra.Command, ids []string) error {
			store, err := state.Open(dataDir)
			if err != nil {
				return ExitError{ExitFailure, err}
			}
			defer store.Close()
			for _, id := range ids {
				if err := store.Delete(id); err != nil {
					return ExitError{ExitFailure, err}
				}
				fmt.Fprintf(g.stdout, "pipeline %s: stored positions deleted\n", id)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", DefaultDataDir, "the host's data directory")
	return cmd
}
