package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/sdk"
)

func pluginsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "plugins", Short: "list and describe plugins"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "list the plugins sluice can run",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.catalog(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tKINDS\tRUNS\tSUMMARY")
			for _, p := range c.List() {
				var runs []string
				if p.Path != "" {
					runs = append(runs, "subprocess "+p.Path)
				}
				if p.Linked != nil {
					runs = append(runs, "in_process")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Spec.Name, p.Spec.Version, kinds(&p.Spec), strings.Join(runs, ", "), p.Spec.Summary)
			}
			return tw.Flush()
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "describe NAME",
		Short: "print a plugin's stages, capabilities and settings",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.catalog(cmd.Context())
			if err != nil {
				return err
			}
			p, ok := c.Lookup(args[0])
			if !ok {
				var names []string
				for _, p := range c.List() {
					names = append(names, p.Spec.Name)
				}
				return ExitError{ExitInvalid, fmt.Errorf("unknown plugin %q (known: %s)", args[0], strings.Join(names, ", "))}
			}
			describe(g, &p.Spec)
			return nil
		},
	})
	return cmd
}

func kinds(s *sdk.Spec) string {
	var ks []string
	for _, k := range s.Kinds() {
		ks = append(ks, string(k))
	}
	return strings.Join(ks, ",")
}

// describe prints a spec as users read it; `docs/plugins/*.md` are generated from the same text.
func describe(g *globals, s *sdk.Spec) {
	w := g.stdout
	fmt.Fprintf(w, "%s %s — %s\n", s.Name, s.Version, s.Summary)
	if s.Author != "" {
		fmt.Fprintf(w, "author: %s\n", s.Author)
	}
	for _, k := range s.Kinds() {
		st := s.Stage(k)
		fmt.Fprintf(w, "\n%s: %s\n", k, st.Summary)
		if k != sdk.KindSource {
			if st.Capabilities.AtomicPosition {
				fmt.Fprintln(w, "  stores upstream positions atomically with its data (exactly-once capable)")
			} else {
				fmt.Fprintln(w, "  does not store positions itself: the host's state store keeps them (at-least-once)")
			}
		}
		if len(st.Settings) == 0 {
			fmt.Fprintln(w, "  settings: none")
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  SETTING\tTYPE\tDEFAULT\tDESCRIPTION")
		for _, set := range st.Settings {
			def := set.Default
			switch {
			case set.Required:
				def = "(required)"
			case def == "":
				def = "-"
			}
			doc := set.Doc
			if len(set.Enum) > 0 {
				doc += " One of: " + strings.Join(set.Enum, ", ") + "."
			}
			if set.Secret {
				doc += " Secret: never printed."
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", set.Name, set.Type, def, doc)
		}
		tw.Flush()
	}
}
