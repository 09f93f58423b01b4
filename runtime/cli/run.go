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
	// begun is when Run was called; the summary's duration counts from the pipeline's start instead when
	// it started.
	begun, ended time.Time
	done         chan struct{}
}

// stopGrace is how long run waits, after stopping pipelines at once, for them to return before it gives
// up on them: every call into a plugin is bounded, so this only fires on a bug, and sluice still exits.
const stopGrace = 15 * time.Second

func run(ctx context.Context, cancel context.CancelFunc, g *globals, files []*config.File, starter pipeline.Starter,
	store pipeline.Store, drainTimeout time.Duration) error {
	var all []*running
	for _, f := range files {
		for _, pc := range f.Pipelines {
			cfg := pipelineConfig(pc)
			all = append(all, &running{file: f, cfg: cfg, p: pipeline.New(cfg, starter, store, g.logger), done: make(chan struct{})})
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
	hardStop := make(chan struct{}) // closed when the pipelines are told to stop at once
	go func() {
		select {
		case s := <-sigs:
			g.logger.Info("stopping: draining pipelines (signal again to stop at once)", "signal", s.String(),
				"drain_timeout", drainTimeout.String())
			drainAll()
		case <-ctx.Done():
			return
		}
		select {
		case <-sigs:
			g.logger.Warn("stopping at once")
		case <-time.After(drainTimeout):
			g.logger.Warn("drain timed out; stopping at once", "timeout", drainTimeout.String())
		case <-ctx.Done():
			return
		}
		close(hardStop)
		cancel()
	}()

	allDone := make(chan struct{})
	var wg sync.WaitGroup
	for _, r := range all {
		wg.Go(func() {
			defer close(r.done)
			r.begun = time.Now()
			r.err = r.p.Run(ctx)
			r.ended = time.Now()
			if r.err != nil && !errors.Is(r.err, pipeline.ErrStopped) {
				g.logger.Error("pipeline failed", "pipeline", r.cfg.ID, "err", r.err)
				if r.file.FailFast {
					g.logger.Warn("fail_fast is set: stopping the other pipelines", "failed", r.cfg.ID)
					drainAll()
				}
			}
		})
	}
	go func() {
		wg.Wait()
		close(allDone)
	}()
	select {
	case <-allDone:
	case <-hardStop:
		select {
		case <-allDone:
		case <-time.After(stopGrace):
			for _, r := range all {
				select {
				case <-r.done:
				default:
					g.logger.Error("pipeline did not stop in time; exiting anyway (its plugin processes die with sluice)",
						"pipeline", r.cfg.ID, "grace", stopGrace.String())
				}
			}
		}
	}

	failed := 0
	for _, r := range all {
		select {
		case <-r.done:
		default:
			r.err, r.ended = fmt.Errorf("did not stop within %s of being told to stop at once", stopGrace), time.Now()
		}
		if r.err != nil && !errors.Is(r.err, pipeline.ErrStopped) {
			failed++
		}
		fmt.Fprintln(g.stdout, summary(r))
	}
	if failed > 0 {
		return ExitError{ExitFailure, fmt.Errorf("%d of %d pipelines failed", failed, len(all))}
	}
	return nil
}

// summary is a pipeline's line in the run summary: done (completed), stopped (by a signal, while healthy)
// or failed (with its error, also when it was failing when stopped), then its counts and rates.
func summary(r *running) string {
	st := &r.p.Stats
	from := r.p.Started()
	if from.IsZero() {
		from = r.begun
	}
	took := r.ended.Sub(from)
	rate := func(n int64) string {
		return fmt.Sprintf("%.0f/s", float64(n)/max(took.Seconds(), 1e-9))
	}
	read, delivered := st.Read.Load(), st.Delivered.Load()
	counts := fmt.Sprintf("%d records read (%s), %d delivered (%s) in %s, %s", read, rate(read), delivered, rate(delivered),
		took.Round(time.Millisecond), pipeline.GuaranteeOf(&r.cfg))
	if v := st.Restarts.Load(); v > 0 {
		counts += fmt.Sprintf(", %d restarts", v)
	}
	if v := st.Redelivered.Load(); v > 0 {
		counts += fmt.Sprintf(", %d records redelivered (possible duplicates)", v)
	}
	if v := st.DeadLetters.Load(); v > 0 {
		counts += fmt.Sprintf(", %d dead letters", v)
	}
	if path, ok := r.cfg.Sink.Settings["path"].(string); ok {
		counts += " → " + path
	}
	switch {
	case r.err == nil:
		return fmt.Sprintf("pipeline %s: done — %s", r.cfg.ID, counts)
	case errors.Is(r.err, pipeline.ErrStopped):
		return fmt.Sprintf("pipeline %s: stopped — %s", r.cfg.ID, counts)
	}
	return fmt.Sprintf("pipeline %s: failed: %v\n  %s", r.cfg.ID, r.err, counts)
}
