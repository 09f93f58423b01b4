package cli

import (
	"errors"
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/runtime/config"
	"github.com/sluicehq/sluice/runtime/plugin"
)

func lockCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "lock FILE...",
		Short: "pin the plugin binaries the connector files run, in sluice.lock beside them",
		Long: `lock writes the SHA-256 of every plugin binary the connector files run (stages without in_process: true
and without a sha256 key of their own) to sluice.lock in each file's directory, keeping the lines of the
other plugins already there. Once a sluice.lock exists, validate, run and test refuse a plugin binary whose
digest differs from its line, and a stage whose plugin has no line. Run lock again after installing a new
plugin binary on purpose, and commit sluice.lock with the connector files.`,
		Args: usage(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.catalog(cmd.Context())
			if err != nil {
				return err
			}
			files, err := loadFiles(g.stderr, c, args, false)
			if err != nil {
				return err
			}
			return lock(g, c, files)
		},
	}
}

// lock writes the pins of files' plugin binaries to the lock file of each file's directory.
func lock(g *globals, c *plugin.Catalog, files []*config.File) error {
	var order []string
	used := map[string][]string{} // lock path → plugin names, in order of use
	for _, f := range files {
		lp := lockPath(f.Path)
		if _, ok := used[lp]; !ok {
			order = append(order, lp)
			used[lp] = nil
		}
		for _, st := range subprocessStages(f) {
			if st.SHA256 == "" && !slices.Contains(used[lp], st.Plugin) {
				used[lp] = append(used[lp], st.Plugin)
			}
		}
	}
	for _, lp := range order {
		names := used[lp]
		if len(names) == 0 {
			fmt.Fprintf(g.stdout, "%s: not written: no stage of the files there runs a plugin binary without a sha256 of its own\n", lp)
			continue
		}
		old, err := config.ReadLock(lp)
		var errs config.Errors
		switch {
		case errors.As(err, &errs):
			for _, e := range errs {
				fmt.Fprintln(g.stderr, e)
			}
			return ExitError{ExitInvalid, fmt.Errorf("%s is not a lock file sluice can update; fix or remove it", lp)}
		case err != nil:
			return ExitError{ExitFailure, err}
		}
		pins := map[string]string{}
		if old != nil {
			for name, p := range old.Pins {
				pins[name] = p.SHA256
			}
		}
		var lines []string
		changed := old == nil
		slices.Sort(names)
		for _, name := range names {
			path, sum, err := c.Digest(name)
			if err != nil {
				return ExitError{ExitFailure, err}
			}
			switch was, ok := pins[name]; {
			case !ok:
				lines = append(lines, fmt.Sprintf("%s: added %s sha256:%s (%s)", lp, name, sum, path))
			case was != sum:
				lines = append(lines, fmt.Sprintf("%s: changed %s sha256:%s (%s), was sha256:%s", lp, name, sum, path, was))
			default:
				lines = append(lines, fmt.Sprintf("%s: unchanged %s sha256:%s (%s)", lp, name, sum, path))
				continue
			}
			pins[name] = sum
			changed = true
		}
		if changed {
			if err := config.WriteLock(lp, pins); err != nil {
				return ExitError{ExitFailure, err}
			}
		}
		for _, l := range lines {
			fmt.Fprintln(g.stdout, l)
		}
	}
	return nil
}
