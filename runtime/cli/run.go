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

	"github.com/sluicehq/sluice/runtime/alert"
	"github.com/sluicehq/sluice/runtime/cluster"
	"github.com/sluicehq/sluice/runtime/config"
	"github.com/sluicehq/sluice/runtime/metrics"
	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/runtime/plugin"
	"github.com/sluicehq/sluice/runtime/state"
)

// DefaultDataDir is where the host keeps its state store unless a file or --data-dir says otherwise.
const DefaultDataDir = ".sluice"

// dataDirOf is the host's data directory: the --data-dir flag, else the file's data_dir, else DefaultDataDir.
func dataDirOf(flag, fileDataDir string) string {
	switch {
	case flag != "":
		return flag
	case fileDataDir != "":
		return fileDataDir
	}
	return DefaultDataDir
}

// runOptions are run's flags.
type runOptions struct {
	dataDir      string
	drainTimeout time.Duration
	watch        bool
	instance     string
	ops          *opsFlags // the HTTP server and the progress report
}

func runCmd(g *globals) *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run FILE...",
		Short: "run the pipelines in the connector files",
		Long: `run starts every pipeline in the files and runs them until their sources are done or a signal stops
them. SIGINT or SIGTERM drains: reading stops, what is in flight is delivered and acknowledged, positions are
stored and the plugins stop. A second signal stops at once (nothing is lost: unacknowledged records are read
again next time).

SIGHUP (and, with --watch, a change to one of the files) reloads the files: pipelines added start, pipelines
removed drain and stop, pipelines whose configuration changed drain and start again from their stored
positions, the others run on untouched. Files with a problem are rejected as a whole, and nothing changes.`,
		Args: usage(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			// Before anything logs: a live progress line routes the log through itself.
			if err := o.ops.begin(g); err != nil {
				return err
			}
			defer o.ops.stop()
			c, err := g.catalog(ctx)
			if err != nil {
				return err
			}
			files, err := g.loadFiles(g.stderr, c, args)
			if err != nil {
				return err
			}
			var (
				store pipeline.Store
				cr    *clusterRun
			)
			if cl := clusterOf(files); cl != nil {
				// The pipelines are shared with other instances: positions live in Redis, not in a data dir.
				if o.instance == "" {
					o.instance = cl.InstanceID
				}
				if o.instance == "" {
					o.instance = defaultInstanceID()
				}
				if cr, err = joinCluster(ctx, cl, o.instance, g.logger); err != nil {
					return ExitError{ExitFailure, err}
				}
				defer cr.client.Close()
			} else {
				bolt, err := state.Open(dataDirOf(o.dataDir, files[0].DataDir))
				if err != nil {
					return ExitError{ExitFailure, err}
				}
				defer bolt.Close()
				store = bolt
				if o.instance == "" {
					o.instance, _ = os.Hostname()
				}
			}
			return run(ctx, cancel, g, args, files, c, store, cr, o)
		},
	}
	cmd.Flags().StringVar(&o.dataDir, "data-dir", "", "directory for the host's state store (default: the file's data_dir, else .sluice)")
	cmd.Flags().DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Second, "how long a graceful stop waits for in-flight records before stopping hard")
	cmd.Flags().BoolVar(&o.watch, "watch", false, "reload the connector files when they change (as SIGHUP does)")
	cmd.Flags().StringVar(&o.instance, "instance", "", "the name of this sluice process in alerts, the API and, with cluster:, among the instances sharing the pipelines (default: cluster.instance_id, else the host name, and with cluster: the process id too)")
	o.ops = addOpsFlags(cmd)
	return cmd
}

// stopGrace is how long run waits, after stopping pipelines at once, for them to return before it gives
// up on them: every call into a plugin is bounded, so this only fires on a bug, and sluice still exits.
const stopGrace = 15 * time.Second

// instance is one run of a pipeline. A reload that changes a pipeline stops its instance and starts
// another; with cluster:, so does each lease this sluice acquires on it. The summary adds them up.
type instance struct {
	cfg pipeline.Config
	// fp is the fingerprint of the resolved configuration it runs (see fingerprint).
	fp     string
	p      *pipeline.Pipeline
	cancel context.CancelFunc // stops it at once
	// lease is the lease it runs under (cluster:), nil otherwise; unwatch stops the watch that aborts it
	// when the lease is lost.
	lease   *cluster.Lease
	unwatch func() bool
	// Set before Run, read after done is closed (or after the stop grace ran out).
	begun time.Time
	err   error
	ended time.Time
	done  chan struct{}
	// The supervisor's loop alone reads and writes these.
	finished bool // its end was handled
	replaced bool // a reload changed it: the entry's next instance starts when it ends
	removed  bool // a reload removed it
	byReload bool // a reload started it
	handover bool // drained to hand its lease to an instance holding fewer (cluster:)
}

// entry is a pipeline id over the life of the process: the instances that ran it, the last one current.
type entry struct {
	id   string
	runs []*instance
	// next starts when the current instance has ended (a reload changed the pipeline); nil otherwise.
	next *instance
	// file is the file the pipeline is in now; nil after a reload removed it.
	file *config.File
	// pc is the pipeline as the files say now: with cluster:, what runs when the lease is acquired.
	pc *config.Pipeline
	// lease is the lease this sluice holds on the pipeline (cluster:), nil when it holds none; standby
	// is when it last stopped holding one (or was first seen).
	lease   *cluster.Lease
	standby time.Time
}

// current returns the instance that runs (or last ran) the pipeline; nil when none ever did here.
func (e *entry) current() *instance {
	if len(e.runs) == 0 {
		return nil
	}
	return e.runs[len(e.runs)-1]
}

// supervisor runs the set of pipelines, which reloads change while it runs. Its loop (run) owns the set;
// Statuses may be called from any goroutine.
type supervisor struct {
	g            *globals
	catalog      *plugin.Catalog
	store        pipeline.Store // nil with cluster:
	cluster      *clusterRun    // nil: this sluice runs every pipeline of the files itself
	instance     string
	paths        []string
	drainTimeout time.Duration
	alerts       *alert.Notifier
	metrics      *metrics.Registry
	ctx          context.Context // cancelled to stop every pipeline at once
	cancel       context.CancelFunc

	mu      sync.Mutex // guards entries and order, for Statuses
	entries map[string]*entry
	order   []string // ids in the order they were first started

	// Owned by the loop.
	files    []*config.File
	live     int // instances whose end has not been handled
	draining bool
	ended    chan *instance
	quit     chan struct{} // closed when the loop returns
}

func run(ctx context.Context, cancel context.CancelFunc, g *globals, paths []string, files []*config.File, c *plugin.Catalog,
	store pipeline.Store, cr *clusterRun, o runOptions) error {
	ua := "sluice"
	if Version != "" {
		ua += "/" + Version
	}
	s := &supervisor{g: g, catalog: c, store: store, cluster: cr, instance: o.instance, paths: paths, drainTimeout: o.drainTimeout,
		ctx: ctx, cancel: cancel,
		alerts:  alert.New(alert.Options{Instance: o.instance, UserAgent: ua, Logger: g.logger, Redact: g.secrets.String}),
		metrics: metrics.New(metrics.Options{Logger: g.logger}),
		entries: map[string]*entry{}, ended: make(chan *instance), quit: make(chan struct{})}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	s.files = files
	s.alerts.Route(alertRoutes(files))
	for _, f := range files {
		for _, pc := range f.Pipelines {
			s.add(pc, f)
		}
	}
	background, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()
	go s.alerts.Watch(background, s.Statuses)
	var changed chan string
	if o.watch {
		changed = make(chan string)
		go watchFiles(background, paths, watchInterval, changed)
	}

	// The HTTP server (status page, API, /metrics, health) and the progress report read the live set.
	o.ops.instance = o.instance
	var memberDone chan struct{}
	if cr != nil {
		o.ops.instances = cr.member.Instances
		s.metrics.Statuses(s.Statuses)
		s.want()
		memberDone = make(chan struct{})
		go func() {
			defer close(memberDone)
			cr.member.Run(background)
		}()
		go s.countInstances(background)
	}
	o.ops.serve(s.Statuses, s.metrics.Handler())

	s.loop(sigs, changed)
	close(s.quit)
	stopBackground()
	if cr != nil {
		<-memberDone
		s.leave()
	}
	o.ops.stop() // before the summary: the progress line is erased

	failed, total := 0, 0
	s.mu.Lock()
	for _, id := range s.order {
		e := s.entries[id]
		for _, in := range e.runs {
			select {
			case <-in.done:
			default:
				in.err, in.ended = fmt.Errorf("did not stop within %s of being told to stop at once", stopGrace), time.Now()
			}
		}
		total++
		if cur := e.current(); cur != nil && !cur.removed && failure(cur.err) {
			failed++
		}
		fmt.Fprintln(g.stdout, g.secrets.String(s.summary(e)))
	}
	s.mu.Unlock()
	flush, done := context.WithTimeout(context.Background(), alert.FlushTimeout)
	s.alerts.Close(flush)
	done()
	if failed > 0 {
		return ExitError{ExitFailure, fmt.Errorf("%d of %d pipelines failed", failed, total)}
	}
	return nil
}

// Statuses returns a snapshot of every pipeline this process has run, in the order they first started:
// the current instance of each, including pipelines that ended and pipelines a reload removed. With
// cluster:, every pipeline of the files, with who holds its lease; one this sluice does not hold is
// standby. Their errors are redacted: the HTTP API, the status page and the progress report show what it
// returns. Safe to call from any goroutine.
func (s *supervisor) Statuses() []pipeline.Status {
	var holders map[string]cluster.Holder
	if s.cluster != nil {
		holders = s.cluster.member.Holders()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]pipeline.Status, 0, len(s.order))
	for _, id := range s.order {
		st := s.status(s.entries[id], holders)
		st.LastError = s.g.secrets.String(st.LastError)
		out = append(out, st)
	}
	return out
}

// status is the snapshot of e's current instance; with cluster:, a standby one while this sluice does not
// run it, and with who holds its lease (holders, from the cluster). s.mu must be held.
func (s *supervisor) status(e *entry, holders map[string]cluster.Holder) pipeline.Status {
	cur := e.current()
	if s.cluster == nil {
		return cur.p.Status()
	}
	var st pipeline.Status
	switch {
	case cur != nil && (!cur.finished || e.lease != nil && cur.lease == e.lease):
		// Running here, or stopping, or finished (completed, failed) with the lease still held.
		st = cur.p.Status()
	default:
		cfg := pipelineConfig(e.pc)
		st = pipeline.Status{ID: e.id, State: pipeline.Standby, Guarantee: pipeline.GuaranteeOf(&cfg), Since: e.standby}
	}
	h := holders[e.id]
	st.Lease = &pipeline.LeaseStatus{Instance: h.Instance, Since: h.Since, Token: h.Token}
	if e.lease != nil && e.lease.Err() == nil {
		st.Lease = &pipeline.LeaseStatus{Instance: s.instance, Since: e.lease.Since(), Token: e.lease.Token(), Here: true}
	}
	return st
}

// add creates the entry of a pipeline not running yet (or removed by an earlier reload) and starts it;
// with cluster:, it starts once this sluice holds its lease.
func (s *supervisor) add(pc *config.Pipeline, f *config.File) {
	s.mu.Lock()
	e := s.entries[pc.ID]
	if e == nil {
		e = &entry{id: pc.ID, standby: time.Now()}
		s.entries[pc.ID] = e
		s.order = append(s.order, pc.ID)
	}
	e.file, e.pc = f, pc
	s.mu.Unlock()
	if s.cluster != nil {
		s.metrics.LeaseHeld(pc.ID, e.lease != nil)
		return
	}
	in := s.newInstance(pc, nil)
	s.mu.Lock()
	e.runs = append(e.runs, in)
	s.mu.Unlock()
	s.start(in)
}

// newInstance prepares a run of pc, under lease l with cluster: (nil otherwise).
func (s *supervisor) newInstance(pc *config.Pipeline, l *cluster.Lease) *instance {
	cfg := pipelineConfig(pc)
	cfg.Events = s.alerts.Notify
	cfg.Meter = s.metrics.Meter(cfg.ID)
	store := s.store
	if l != nil {
		cfg.Lease = l
		store = s.cluster.store.Fenced(pc.ID, l.Token())
	}
	p := pipeline.New(cfg, s.catalog, store, s.g.logger)
	s.metrics.Track(p) // replaces the instance a reload changed
	return &instance{cfg: cfg, fp: fingerprint(pc), p: p, lease: l, done: make(chan struct{})}
}

// start runs in; the loop hears of its end on s.ended. An instance run under a lease is aborted the moment
// the lease is lost: its plugin processes are killed before they can write anything more.
func (s *supervisor) start(in *instance) {
	ctx, cancel := context.WithCancel(s.ctx)
	in.cancel = cancel
	in.begun = time.Now()
	if l := in.lease; l != nil {
		in.unwatch = context.AfterFunc(l.Context(), func() { in.p.Abort(context.Cause(l.Context())) })
	}
	s.live++
	go func() {
		err := in.p.Run(ctx)
		in.err, in.ended = err, time.Now()
		cancel()
		close(in.done)
		select {
		case s.ended <- in:
		case <-s.quit:
		}
	}()
}

// loop runs until every pipeline has ended: it handles signals, reloads and the end of each instance.
func (s *supervisor) loop(sigs <-chan os.Signal, changed <-chan string) {
	log := s.g.logger
	var drainTimer, graceTimer <-chan time.Time
	hardStop := func() {
		if graceTimer == nil {
			s.cancel()
			drainTimer, graceTimer = nil, time.After(stopGrace)
		}
	}
	var leases <-chan struct{}
	if s.cluster != nil {
		leases = s.cluster.member.Ready()
	}
	// With cluster:, this sluice stands by for pipelines other instances hold until it is told to stop.
	for s.live > 0 || s.cluster != nil && !s.draining {
		select {
		case <-leases:
			s.leaseEvents(s.cluster.member.Take())
		case sig := <-sigs:
			switch {
			case sig == syscall.SIGHUP:
				s.reload("SIGHUP")
			case !s.draining:
				log.Info("stopping: draining pipelines (signal again to stop at once)", "signal", sig.String(),
					"drain_timeout", s.drainTimeout.String())
				s.drainAll()
				drainTimer = time.After(s.drainTimeout)
			default:
				log.Warn("stopping at once")
				hardStop()
			}
		case why := <-changed:
			s.reload(why)
		case in := <-s.ended:
			s.finished(in)
		case <-drainTimer:
			log.Warn("drain timed out; stopping at once", "timeout", s.drainTimeout.String())
			hardStop()
		case <-graceTimer:
			s.mu.Lock()
			for _, id := range s.order {
				for _, in := range s.entries[id].runs {
					if !in.finished {
						log.Error("pipeline did not stop in time; exiting anyway (its plugin processes die with sluice)",
							"pipeline", id, "grace", stopGrace.String())
					}
				}
			}
			s.mu.Unlock()
			return
		}
	}
}

// drainAll drains every pipeline; pipelines waiting to start again after a reload do not. With cluster:,
// no lease is acquired any more.
func (s *supervisor) drainAll() {
	s.draining = true
	if s.cluster != nil {
		s.cluster.member.Leave()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.entries {
		e.next = nil
		if cur := e.current(); cur != nil {
			cur.p.Drain()
		}
	}
}

// failure reports whether err, an instance's end, is a failure: not a success, a stop, or a lost lease.
func failure(err error) bool {
	return err != nil && !errors.Is(err, pipeline.ErrStopped) && !errors.Is(err, pipeline.ErrLeaseLost)
}

// finished handles the end of an instance: it reports a failure (and applies fail_fast), and starts the
// pipeline's next instance when a reload changed it.
func (s *supervisor) finished(in *instance) {
	s.live--
	in.finished = true
	if in.unwatch != nil {
		in.unwatch()
	}
	id := in.cfg.ID
	s.mu.Lock()
	e := s.entries[id] // in is its current instance: the next one starts only now
	s.mu.Unlock()
	log := s.g.logger
	lost := in.lease != nil && in.lease.Err() != nil
	switch {
	case lost:
		log.Warn("pipeline stopped: this instance lost its lease; another instance may run it now", "pipeline", id,
			"summary", counts(in))
	case in.replaced || in.removed:
		what := "pipeline stopped: a reload changed it"
		if in.removed {
			what = "pipeline stopped: a reload removed it"
		}
		log.Info(what, "pipeline", id, "summary", counts(in))
	case in.handover:
		log.Info("pipeline stopped: handed to an instance running fewer pipelines", "pipeline", id, "summary", counts(in))
	case failure(in.err):
		log.Error("pipeline failed", "pipeline", id, "err", in.err)
		if e != nil && e.file != nil && e.file.FailFast && !s.draining {
			log.Warn("fail_fast is set: stopping the other pipelines", "failed", id)
			s.drainAll()
		}
	}
	if in.lease != nil && e != nil && e.lease == in.lease && (lost || in.removed || in.handover || s.draining) {
		// The pipeline no longer runs here under this lease: let another instance have it at once.
		s.releaseLease(e)
	}
	if in.removed {
		s.metrics.Forget(id)
	}
	if e != nil && e.next != nil && e.next.lease != nil && e.next.lease != e.lease {
		s.mu.Lock()
		e.next = nil // its lease is gone: it starts again when this sluice holds the pipeline's lease
		s.mu.Unlock()
	}
	if e != nil && e.next != nil && !s.draining {
		next := e.next
		s.mu.Lock()
		e.next = nil
		e.runs = append(e.runs, next)
		s.mu.Unlock()
		s.start(next)
	}
}

// summary is a pipeline's line in the run summary: done (completed), stopped (by a signal while healthy,
// or removed by a reload; with cluster:, also when its lease went to another instance) or failed (with its
// error, also when it was failing when stopped), then its counts and rates over every instance that ran
// it. With cluster:, a pipeline this sluice never ran is on standby.
func (s *supervisor) summary(e *entry) string {
	if len(e.runs) == 0 {
		return fmt.Sprintf("pipeline %s: standby — not run by this instance (%s)", e.id, s.holderText(e.id))
	}
	first, cur := e.runs[0], e.current()
	from := first.p.Started()
	if from.IsZero() {
		from = first.begun
	}
	var read, delivered, restarts, redelivered, dead int64
	for _, in := range e.runs {
		st := &in.p.Stats
		read += st.Read.Load()
		delivered += st.Delivered.Load()
		restarts += st.Restarts.Load()
		redelivered += st.Redelivered.Load()
		dead += st.DeadLetters.Load()
	}
	took := cur.ended.Sub(from)
	rate := func(n int64) string {
		return fmt.Sprintf("%.0f/s", float64(n)/max(took.Seconds(), 1e-9))
	}
	c := fmt.Sprintf("%d records read (%s), %d delivered (%s) in %s, %s", read, rate(read), delivered, rate(delivered),
		took.Round(time.Millisecond), pipeline.GuaranteeOf(&cur.cfg))
	if restarts > 0 {
		c += fmt.Sprintf(", %d restarts", restarts)
	}
	if redelivered > 0 {
		c += fmt.Sprintf(", %d records redelivered (possible duplicates)", redelivered)
	}
	if dead > 0 {
		c += fmt.Sprintf(", %d dead letters", dead)
	}
	reloads, leases := 0, 0
	for _, in := range e.runs {
		if in.byReload {
			reloads++
		}
		if in.lease != nil && !in.byReload {
			leases++
		}
	}
	switch {
	case reloads == 1:
		c += ", restarted once by reload"
	case reloads > 1:
		c += fmt.Sprintf(", restarted %d times by reload", reloads)
	}
	if leases > 1 {
		c += fmt.Sprintf(", run here under %d leases", leases)
	}
	if path, ok := cur.cfg.Sink.Settings["path"].(string); ok {
		c += " → " + path
	}
	switch {
	case cur.removed:
		return fmt.Sprintf("pipeline %s: stopped (removed by reload) — %s", e.id, c)
	case cur.lease != nil && cur.lease.Err() != nil && e.lease == nil:
		return fmt.Sprintf("pipeline %s: stopped (lease lost; %s) — %s", e.id, s.holderText(e.id), c)
	case cur.handover && e.lease == nil:
		return fmt.Sprintf("pipeline %s: stopped (handed to another instance; %s) — %s", e.id, s.holderText(e.id), c)
	case cur.err == nil:
		return fmt.Sprintf("pipeline %s: done — %s", e.id, c)
	case errors.Is(cur.err, pipeline.ErrStopped), errors.Is(cur.err, pipeline.ErrLeaseLost):
		return fmt.Sprintf("pipeline %s: stopped — %s", e.id, c)
	}
	return fmt.Sprintf("pipeline %s: failed: %v\n  %s", e.id, cur.err, c)
}

// counts is one instance's counts, for the log line of a pipeline a reload stopped.
func counts(in *instance) string {
	from := in.p.Started()
	if from.IsZero() {
		from = in.begun
	}
	st := &in.p.Stats
	s := fmt.Sprintf("%d records read, %d delivered in %s", st.Read.Load(), st.Delivered.Load(), in.ended.Sub(from).Round(time.Millisecond))
	if failure(in.err) {
		s += fmt.Sprintf("; it was failing: %v", in.err)
	}
	return s
}
