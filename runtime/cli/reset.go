package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/runtime/cluster"
	"github.com/sluicehq/sluice/runtime/state"
)

func resetCmd(g *globals) *cobra.Command {
	var dataDir, file string
	cmd := &cobra.Command{
		Use:   "reset PIPELINE...",
		Short: "forget the positions the host stored for pipelines, so they start over",
		Long: `reset deletes the positions sluice's state store holds for the named pipelines: their next run starts
where the source's settings say (for generate, from seq 0). It does not touch positions that a sink or
buffer stores itself (an exactly-once stage); reset those in the stage's own system. sluice must not be
running with the same data directory.

With --file, reset works on the positions that instances sharing pipelines keep in Redis (the file's
cluster:), and refuses a pipeline that an instance runs.

A pipeline with no stored positions there is an error (exit 2) that lists the pipelines that have some;
then nothing is deleted.`,
		Args: usage(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, ids []string) error {
			if file != "" {
				return resetCluster(cmd.Context(), g, file, ids)
			}
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
				if err := unknownPipelines(ids, known, "data dir "+dataDir); err != nil {
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
			return unknownPipelines(ids, nil, "data dir "+dataDir)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", DefaultDataDir, "the host's data directory")
	cmd.Flags().StringVar(&file, "file", "", "a connector file with cluster:: reset the positions the instances sharing its pipelines keep in Redis")
	return cmd
}

// resetCluster deletes the positions kept in the Redis of file's cluster: for ids.
func resetCluster(ctx context.Context, g *globals, file string, ids []string) error {
	c, err := g.catalog(ctx)
	if err != nil {
		return err
	}
	files, err := load(g.stderr, c, []string{file})
	if err != nil {
		return err
	}
	cl := clusterOf(files)
	if cl == nil {
		return ExitError{ExitInvalid, fmt.Errorf("reset: %s has no cluster:, so its positions are in a data dir: leave out --file (and give --data-dir)", file)}
	}
	client, where, err := redisClient(cl)
	if err != nil {
		return ExitError{ExitInvalid, err}
	}
	defer client.Close()
	store := cluster.NewStore(client, cl.KeyPrefix)
	known, err := store.List(ctx)
	if err != nil {
		return ExitError{ExitFailure, err}
	}
	if err := unknownPipelines(ids, known, fmt.Sprintf("Redis at %s (keys %s:state:*)", where, cl.KeyPrefix)); err != nil {
		return err
	}
	for _, id := range ids {
		if err := store.Delete(ctx, id); err != nil {
			return ExitError{ExitFailure, err}
		}
		fmt.Fprintf(g.stdout, "pipeline %s: stored positions deleted\n", id)
	}
	return nil
}

// unknownPipelines returns an ExitInvalid error naming the ids that have no stored positions in the store
// at where (known lists those that have), or nil when every id has some.
func unknownPipelines(ids, known []string, where string) error {
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
	msg := fmt.Sprintf("reset: no stored positions for %s in %s; nothing was deleted. ", what, where)
	if len(known) > 0 {
		msg += "Pipelines with stored positions there: " + strings.Join(known, ", ")
	} else {
		msg += "No pipeline has stored positions there"
	}
	msg += " (a pipeline whose sink stores its positions, exactly-once, has none here: reset it in the sink's system; another data dir: --data-dir; the positions of instances sharing pipelines: --file)"
	return ExitError{ExitInvalid, fmt.Errorf("%s", msg)}
}
