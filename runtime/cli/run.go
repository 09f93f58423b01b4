package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/runtime/config"
	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/runtime/state"
)

// DefaultDataDir is where the host keeps its state store unless a file or --data-dir says otherwise.
const DefaultDataDir = ".sluice"

func runCmd(g *globals) *cobra.Command {
	var dataDir string
	var drainTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "run FILE...",
		Short: "run the pipelines in the connector files",
		Long: `run starts every pipeline in the files and runs them until their sources are done or a signal stops
them. SIGINT or SIGTERM drains: reading stops, what is in flight is delivered and acknowledged, positions are
stored and the plugins stop. A second signal stops at once (nothing is lost: unacknowledged records are read
again next time).`,
		Args: usage(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			c, err := g.catalog(ctx)
			if err != nil {
				return err
			}
			files, err := load(g.stderr, c, args)
			if err != nil {
				return err
			}
			dir := dataDir
			if dir == "" {
				dir = files[0].DataDir
			}
			if dir == "" {
				dir = DefaultDataDir
			}
			store, err := state.Open(dir)
			if err != nil {
				return ExitError{ExitFailure, err}
			}
			defer store.Close()
			return run(ctx, cancel, g, files, c, store, drainTimeout)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "directory for the host's state store (default: the file's data_dir, else .sluice)")
	cmd.Flags().DurationVar(&drainTimeout, "drain-timeout", 30*time.Second, "how long a graceful stop waits for in-flight records before stopping hard")
	return cmd
}

type running struct {
	file *config.File
	cfg  pipeline.Config
	p    *pipeline.Pipeline
	err  error
	took time.Duration
}

func run(ctx context.Context, cancel context.CancelFunc, g *globals, files []*config.File, starter pipeline.Starter,
	store pipeline.Store, drainTimeout time.Duration) error {
	var all []*running
	for _, f := range files {
		for _, pc := range f.Pipelines {
			cfg := pipelineConfig(pc)
			all = append(all, &running{file: f, cfg: cfg, p: pipeline.New(cfg, starter, store, g.logger)})
		}
	}
	drainAll := func() {
		for _, r := range all {
			r.p.Drain()
		}
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case s := <-sigs:
			g.logger.Info("stopping: draining pipelines (signal again to stop at once)", "signal", s.String())
			drainAll()
		case <-ctx.Done():
			return
		}
		select {
		case <-sigs:
			g.logger.Warn("stopping at once")
		case <-time.After(drainTimeout):
			g.logger.Warn("drain timed out; stopping at once", "timeout", drainTimeout)
		case <-ctx.Done():
		}
		cancel()
	}()

	var wg sync.WaitGroup
	for _, r := range all {
		wg.Go(func() {
			start := time.Now()
			r.err = r.p.Run(ctx)
			r.took = time.Since(start)
			if r.err != nil && !errors.Is(r.err, context.Canceled) {
				g.logger.Error("pipeline stopped", "pipeline", r.cfg.ID, "err", r.err)
				if r.file.FailFast {
					g.logger.Warn("fail_fast is set: stopping the other pipelines", "failed", r.cfg.ID)
					drainAll()
				}
			}
		})
	}
	wg.Wait()

	failed := 0
	for _, r := range all {
		st := &r.p.Stats
		n := st.Delivered.Load()
		rate := float64(n) / max(r.took.Seconds(), 1e-9)
		status := "done"
		switch {
		case errors.Is(r.err, context.Canceled):
			status = "stopped"
		case r.err != nil:
			status = "FAILED"
			failed++
		}
		fmt.Fprintf(g.stdout, "pipeline %s: %s — %d records delivered in %s (%.0f records/s), %s",
			r.cfg.ID, status, n, r.took.Round(time.Millisecond), rate, pipeline.GuaranteeOf(&r.cfg))
		if v := st.Restarts.Load(); v > 0 {
			fmt.Fprintf(g.stdout, ", %d restarts", v)
		}
		if v := st.Redelivered.Load(); v > 0 {
			fmt.Fprintf(g.stdout, ", %d records redelivered (possible duplicates)", v)
		}
		if v := st.DeadLetters.Load(); v > 0 {
			fmt.Fprintf(g.stdout, ", %d dead letters", v)
		}
		if path, ok := r.cfg.Sink.Settings["path"].(string); ok {
			fmt.Fprintf(g.stdout, " → %s", path)
		}
		fmt.Fprintln(g.stdout)
	}
	if failed > 0 {
		return ExitError{ExitFailure, fmt.Errorf("%d of %d pipelines failed", failed, len(all))}
	}
	return nil
}
