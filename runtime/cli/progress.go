package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/sluicehq/sluice/runtime/api"
	"github.com/sluicehq/sluice/runtime/pipeline"
)

// The progress report of `sluice run` (--progress).
const (
	// progressAuto is a live line per pipeline on a terminal, log lines elsewhere.
	progressAuto = "auto"
	// progressLine redraws a line per pipeline on stderr.
	progressLine = "line"
	// progressLog logs a line per pipeline every --progress-every.
	progressLog = "log"
	progressOff = "off"
)

// DefaultProgressEvery is how often `sluice run` logs each pipeline's progress when it draws no live line.
const DefaultProgressEvery = 30 * time.Second

// liveRefresh is how often the live progress lines are redrawn.
const liveRefresh = 500 * time.Millisecond

// httpOff is the --http value that serves nothing.
const httpOff = "off"

// opsFlags are run's flags for watching it: the HTTP server (--http) and the progress report (--progress,
// --progress-every). run.go calls addOpsFlags when it builds the command, begin first thing when the
// command runs, serve once the pipelines exist, and stop when they have all returned.
type opsFlags struct {
	cmd           *cobra.Command
	http          string
	progress      string
	progressEvery time.Duration

	g    *globals
	ln   net.Listener // nil: no server
	mode string       // progressLine, progressLog or progressOff, after begin
	live *liveWriter  // progressLine: stderr, which the logs share
	// instance names this sluice in /api/pipelines; instances, when set, lists the live instances
	// sharing the pipelines (cluster:). run sets them before serve.
	instance  string
	instances func() []string

	once sync.Once
	halt func() // stops what serve started
}

// addOpsFlags adds --http, --progress and --progress-every to cmd.
func addOpsFlags(cmd *cobra.Command) *opsFlags {
	o := &opsFlags{cmd: cmd}
	f := cmd.Flags()
	f.StringVar(&o.http, "http", api.DefaultAddr,
		"serve the status page, /api/pipelines, /metrics, /healthz and /readyz on HOST:PORT (port 0: any free port), or off")
	f.StringVar(&o.progress, "progress", progressAuto,
		"progress report on stderr: line (a live line per pipeline), log (a log line per pipeline every --progress-every), off, or auto (line on a terminal, log otherwise and when $CI is set)")
	f.DurationVar(&o.progressEvery, "progress-every", DefaultProgressEvery, "how often --progress log reports")
	return o
}

// begin checks the flags, takes the HTTP address and, for a live progress line, routes g's log output
// through it, so that log lines print above the progress lines instead of through them. Call it before
// anything logs. The address is taken now, so that run stops before any pipeline starts when --http names
// one in use (exit 2); the default address in use is only a warning: two sluice on one machine both run,
// the second without a server. Call stop when done, also on errors.
func (o *opsFlags) begin(g *globals) error {
	o.g = g
	switch o.progress {
	case progressAuto:
		o.mode = progressLog
		if isTerminal(g.stderr) && os.Getenv("CI") == "" && os.Getenv("TERM") != "dumb" {
			o.mode = progressLine
		}
	case progressLine, progressLog, progressOff:
		o.mode = o.progress
	default:
		return ExitError{ExitInvalid, fmt.Errorf("--progress: want auto, line, log or off, got %q", o.progress)}
	}
	if o.progressEvery <= 0 {
		return ExitError{ExitInvalid, fmt.Errorf("--progress-every: want a duration above 0, got %s", o.progressEvery)}
	}
	if o.http != httpOff {
		if _, _, err := net.SplitHostPort(o.http); err != nil {
			return ExitError{ExitInvalid, fmt.Errorf("--http: want HOST:PORT (such as %s) or off, got %q", api.DefaultAddr, o.http)}
		}
		ln, err := net.Listen("tcp", o.http)
		switch {
		case err == nil:
			o.ln = ln
		case !o.cmd.Flags().Changed("http"):
			g.logger.Warn("not serving the status page and HTTP API: the default address is taken (by another sluice?); choose one with --http HOST:PORT, or --http off",
				"addr", o.http, "err", err)
		case errors.Is(err, syscall.EADDRINUSE):
			return ExitError{ExitInvalid, fmt.Errorf("--http %s: the address is in use (by another sluice?): choose another port (0 picks a free one), or --http off", o.http)}
		default:
			return ExitError{ExitInvalid, fmt.Errorf("--http %s: %w", o.http, err)}
		}
	}
	if o.mode == progressLine {
		o.live = &liveWriter{out: g.stderr, width: termWidth(g.stderr)}
		l, err := newLogger(o.live, g.logLevel, g.logFormat, g.secrets)
		if err != nil {
			return ExitError{ExitInvalid, err}
		}
		g.stderr, g.logger = o.live, l
	}
	return nil
}

// serve starts the HTTP server (metrics serves /metrics; nil: none) and the progress report, over the
// pipelines that pipelines returns at each moment.
func (o *opsFlags) serve(pipelines func() []pipeline.Status, metrics http.Handler) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if o.ln != nil {
		srv := api.New(api.Options{Pipelines: pipelines, Metrics: metrics, Logger: o.g.logger, Instance: o.instance,
			Instances: o.instances})
		ln := o.ln
		o.g.logger.Info("serving the status page and HTTP API", "url", "http://"+ln.Addr().String()+"/")
		wg.Go(func() {
			if err := srv.Serve(ctx, ln); err != nil {
				o.g.logger.Error("the HTTP server stopped", "err", err)
			}
		})
	}
	switch o.mode {
	case progressLine:
		wg.Go(func() { o.report(ctx, pipelines, liveRefresh, o.draw) })
	case progressLog:
		wg.Go(func() { o.report(ctx, pipelines, o.progressEvery, o.log) })
	}
	o.halt = func() {
		cancel()
		wg.Wait()
		if o.live != nil {
			o.live.set(nil)
		}
	}
}

// stop stops the server and the progress report and erases the progress lines; before serve, it releases
// the address. Safe to call more than once.
func (o *opsFlags) stop() {
	o.once.Do(func() {
		switch {
		case o.halt != nil:
			o.halt()
		case o.ln != nil:
			o.ln.Close()
		}
	})
}

// report calls show with the pipelines' views every interval until ctx is done. Rates are measured from
// one report to the next (at most api.RateWindow back).
func (o *opsFlags) report(ctx context.Context, pipelines func() []pipeline.Status, every time.Duration, show func([]api.Pipeline)) {
	var s api.Sampler
	s.Observe(time.Now(), pipelines())
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			show(s.Observe(time.Now(), pipelines()))
		}
	}
}

// log logs a progress line for each pipeline that has not finished (run reports finished ones itself).
// Values that are not known are left out.
func (o *opsFlags) log(ps []api.Pipeline) {
	for _, p := range ps {
		if p.State != pipeline.Running.String() && p.State != pipeline.Starting.String() && p.State != pipeline.Restarting.String() {
			continue
		}
		attrs := []any{"pipeline", p.ID, "state", p.State, "read", p.Read, "delivered", p.Delivered}
		if p.DeliveredPerSecond != nil {
			attrs = append(attrs, "delivered_per_second", math.Round(*p.DeliveredPerSecond*10)/10)
		}
		if p.LagSeconds != nil {
			attrs = append(attrs, "lag", fmtLag(p.LagSeconds))
		}
		if b := p.Buffer; b != nil {
			attrs = append(attrs, "buffer_entries", b.Entries, "buffer_bytes", b.Bytes)
			if b.Fraction != nil {
				attrs = append(attrs, "buffer_fill", math.Round(*b.Fraction*1000)/1000)
			}
		}
		if s := p.Snapshot; s != nil {
			attrs = append(attrs, "snapshot_copied", s.Copied)
			if s.Estimated != nil {
				attrs = append(attrs, "snapshot_estimated", *s.Estimated)
			}
		}
		if p.Restarts > 0 {
			attrs = append(attrs, "restarts", p.Restarts)
		}
		if p.LastError != nil {
			attrs = append(attrs, "last_error", *p.LastError)
		}
		o.g.logger.Info("progress", attrs...)
	}
}

func (o *opsFlags) draw(ps []api.Pipeline) { o.live.set(progressLines(ps)) }

// progressLines renders one line per pipeline, ids aligned:
//
//	orders  running     1.5k/s  34,474 delivered  lag 1.2s  buffer 12% (1,024 entries)
//	audit   failed: sink file: opening: …
func progressLines(ps []api.Pipeline) []string {
	width := 0
	for _, p := range ps {
		width = max(width, utf8.RuneCountInString(p.ID))
	}
	lines := make([]string, len(ps))
	for i, p := range ps {
		var b strings.Builder
		fmt.Fprintf(&b, "%-*s  ", width, p.ID)
		switch {
		case p.State == pipeline.Failed.String() && p.LastError != nil:
			fmt.Fprintf(&b, "failed: %s", *p.LastError)
		case p.State == pipeline.Restarting.String():
			fmt.Fprintf(&b, "restarting (%s restart%s so far)", fmtCount(p.Restarts), plural(int(p.Restarts)))
			if p.LastError != nil {
				fmt.Fprintf(&b, ": %s", *p.LastError)
			}
		case p.State == pipeline.Standby.String() && holder(p.Lease) == unknown:
			fmt.Fprintf(&b, "%-10s  no instance holds it", p.State)
		case p.State == pipeline.Standby.String():
			fmt.Fprintf(&b, "%-10s  on %s", p.State, holder(p.Lease))
		case p.State == pipeline.Completed.String() || p.State == pipeline.Stopped.String() || p.State == pipeline.Failed.String():
			// Finished: a rate would only be the last seconds' average fading out.
			fmt.Fprintf(&b, "%-10s  %s delivered", p.State, fmtCount(p.Delivered))
		default:
			fmt.Fprintf(&b, "%-10s  %7s  %s delivered  lag %s", p.State, fmtRate(p.DeliveredPerSecond), fmtCount(p.Delivered), fmtLag(p.LagSeconds))
			if p.Buffer != nil {
				fmt.Fprintf(&b, "  buffer %s", fmtBuffer(p.Buffer, false))
			}
			if p.Snapshot != nil {
				fmt.Fprintf(&b, "  snapshot %s", fmtSnapshot(p.Snapshot))
			}
		}
		lines[i] = b.String()
	}
	return lines
}

// liveWriter keeps a block of lines at the bottom of a terminal: everything written to it (log lines)
// prints above the block, which is redrawn below.
type liveWriter struct {
	mu    sync.Mutex
	out   io.Writer
	width func() int // the terminal's columns; 0: unknown
	block []string   // the lines on screen
}

// Write prints p above the block.
func (w *liveWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b bytes.Buffer
	w.erase(&b)
	b.Write(p)
	if len(p) > 0 && p[len(p)-1] != '\n' {
		b.WriteByte('\n')
	}
	w.paint(&b, w.block)
	if _, err := w.out.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// set replaces the block with lines (none: erase it).
func (w *liveWriter) set(lines []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b bytes.Buffer
	w.erase(&b)
	w.paint(&b, lines)
	_, _ = w.out.Write(b.Bytes())
}

// erase moves to the start of the block and clears to the end of the screen.
func (w *liveWriter) erase(b *bytes.Buffer) {
	if len(w.block) == 0 {
		return
	}
	b.WriteByte('\r')
	if n := len(w.block) - 1; n > 0 {
		fmt.Fprintf(b, "\x1b[%dA", n)
	}
	b.WriteString("\x1b[J")
}

// paint draws lines, each cut to the terminal's width so that none wraps, leaving the cursor at the end
// of the last.
func (w *liveWriter) paint(b *bytes.Buffer, lines []string) {
	cols := 0
	if w.width != nil {
		cols = w.width()
	}
	w.block = w.block[:0]
	for i, l := range lines {
		if cols > 1 && utf8.RuneCountInString(l) > cols-1 {
			l = string([]rune(l)[:cols-2]) + "…"
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(l)
		w.block = append(w.block, l)
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// termWidth returns a func that reports w's columns (0 when w is not a terminal).
func termWidth(w io.Writer) func() int {
	f, ok := w.(*os.File)
	if !ok {
		return func() int { return 0 }
	}
	return func() int {
		cols, _, err := term.GetSize(int(f.Fd()))
		if err != nil {
			return 0
		}
		return cols
	}
}
