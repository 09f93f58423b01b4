package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func validateCmd(g *globals) *cobra.Command {
	var print bool
	cmd := &cobra.Command{
		Use:   "validate FILE...",
		Short: "check connector files against the plugins' specs and print each pipeline's guarantee",
		Long: `validate loads each connector file, checks it against the discovered plugins' specs, and prints each
pipeline with its delivery guarantee. Problems are printed as file:line:col: message, and the exit code is 2.
With --print, the resolved configuration is printed, secrets redacted.`,
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
			for _, f := range files {
				for _, p := range f.Pipelines {
					fmt.Fprintf(g.stdout, "%s: %s\n", f.Path, describePipeline(p))
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
	return cmd
}
