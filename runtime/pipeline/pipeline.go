// Package pipeline runs one pipeline: it starts the stages' plugins, applies the position rule to decide
// where each stage resumes, moves batches through segments, and restarts the pipeline from stored
// positions when a stage fails.
//
// The position rule (docs/architecture.md): each stage stores the upstream position atomically with the data
// it made durable; on start the host asks the downstream stage for the last upstream position it holds and
// opens the upstream strictly after it. A sink without that ability gets the host's state store instead,
// which makes the pipeline at-least-once.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms"
)

// Batching and flow-control defaults (the connector file's batch_max_records, batch_max_bytes and
// max_in_flight_bytes).
const (
	DefaultBatchMaxRecords = 1024
	// DefaultBatchMaxBytes bounds a batch of large records: with 64 KiB records, 1 MiB batches ran as fast
	// as 4 MiB ones with two of them in flight.
	DefaultBatchMaxBytes = 1 << 20
	// DefaultMaxInFlightBytes bounds what a segment has sent downstream and not had acknowledged, and
	// with it most of the memory the host and the next stage hold. 2 MiB keeps about nine typical batches
	// (1,024 records of a few hundred bytes) in flight. More is faster into Kafka, at a cost in memory: a
	// transactional Kafka sink writes what is in flight as one transaction, and fewer, larger
	// transactions are faster. On the benchmark 8 MiB wrote 1.5 times as many records a second
	// transactionally and 1.2 times idempotently, for about 33 MiB more memory; through the Redis buffer
	// it made no difference (README, Performance).
	DefaultMaxInFlightBytes = 2 << 20
)

// Config is what the pipeline needs to know; the CLI builds it from a connector file.
type Config struct {
	ID     string
	Source Stage
	Buffer *Stage // nil: none
	Sink   Stage
	// BatchMaxRecords and BatchMaxBytes bound the batches sources and buffers send.
	BatchMaxRecords int
	BatchMaxBytes   int
	// MaxInFlightBytes bounds the bytes a segment has sent downstream and not had acknowledged (default
	// DefaultMaxInFlightBytes, or BatchMaxBytes if larger).
	MaxInFlightBytes int
	// Steps, when set, run between the source and the next stage; SinkSteps between the buffer and the
	// sink (only with a buffer).
	Steps, SinkSteps *transforms.Program
	// OnError is what a record a step fails on does: OnErrorStop (the default) fails the pipeline for
	// good; OnErrorDLQ sends the record to DeadLetter.
	OnError string
	// DeadLetter is the dead-letter sink, nil when the pipeline has none. Dead letters are records a step
	// failed on (with OnErrorDLQ), records the source marked (record.MetaError) and records the sink
	// rejected (sdk.RejectError). Each is written, and acknowledged, before the batch it came in is
	// acknowledged upstream, so none is lost; after a crash some may be written twice.
	DeadLetter *Stage
	// Retry is the restart policy after a transient failure (zero fields: the defaults).
	Retry Retry
	// OpenTimeout bounds each stage's Open and Checkpoint (default DefaultOpenTimeout).
	OpenTimeout time.Duration
	// StallTimeout: a stage holding unacknowledged records that acknowledges none for this long is
	// reported and the pipeline restarted (default DefaultStallTimeout).
	StallTimeout time.Duration
	// Events, when set, is told what happens to the pipeline (restarts, failures, crashes). It is called
	// from the pipeline's goroutines and must not block.
	Events func(Event)
	// Meter, when set, is told what moves through the pipeline, per batch, for metrics.
	Meter Meter
	// Lanes, when above 0, makes the pipeline unordered (a connector file's ordered: false): it runs Lanes
	// instances of the sink behind the buffer, each getting the records of the keys that hash to it, in
	// order (see lanes.go). It needs a buffer whose plugin compares its positions and a sink that stores
	// positions atomically. 0: one sink, every record in order.
	Lanes int
	// Lease, when set, is the lease this host holds on the pipeline (several hosts share the pipelines of
	// a connector file with cluster:). The pipeline opens no stage unless the lease is valid, and hands
	// its fencing token to every stage (sdk.OpenRequest.Fence). Whoever keeps the lease aborts the
	// pipeline (Abort) when it is lost.
	Lease Lease
}

// Lease is a lease on a pipeline held by this host.
type Lease interface {
	// Token is the lease's fencing token: greater than the token of every earlier holder.
	Token() int64
	// Valid returns nil while the lease is held and has time left, and an error wrapping ErrLeaseLost
	// once it has not. It never waits.
	Valid() error
}

// ErrLeaseLost is wrapped by the error of a pipeline whose lease was lost (Config.Lease): it stopped, and
// another host may run it now.
var ErrLeaseLost = errors.New("lease lost")

// Stage configures one stage.
type Stage struct {
	Plugin    string
	Settings  map[string]any
	InProcess bool
	// Atomic reports whether the stage stores upstream positions atomically with its data (from the spec).
	Atomic bool
}

// Starter starts plugin instances; *plugin.Catalog is one.
type Starter interface {
	Start(ctx context.Context, name string, kind sdk.Kind, inProcess bool, logger *slog.Logger) (*protocol.Conn, error)
}

// Store keeps positions for stages that cannot; *state.Store is one.
type Store interface {
	Get(pipeline, stage string) (record.Position, error)
	Put(pipeline, stage string, pos record.Position) error
}

// InFlightStore is a Store that also keeps in-flight counts that survive the host being killed;
// *state.Store is one. For a sink that keeps no positions itself the host stores there, before each send,
// how many records it sent beyond the stored position: the next host process reports them as
// redelivered. With a Store that is not an InFlightStore, records redelivered after a host crash are not
// counted.
type InFlightStore interface {
	Store
	LoadInFlight(pipeline, stage string) (int64, error)
	StoreInFlight(pipeline, stage string, n int64) error
}

// Guarantee is the delivery guarantee a pipeline gives across crashes.
type Guarantee string

// The two guarantees.
const (
	ExactlyOnce Guarantee = "exactly-once"
	AtLeastOnce Guarantee = "at-least-once"
	stateSource           = "source"
	stateBuffer           = "buffer"
)

// GuaranteeOf returns what cfg guarantees: exactly-once when the sink (and the buffer, if any) store
// positions atomically with their data, at-least-once otherwise.
func GuaranteeOf(cfg *Config) Guarantee {
	if cfg.Sink.Atomic && (cfg.Buffer == nil || cfg.Buffer.Atomic) {
		return ExactlyOnce
	}
	return AtLeastOnce
}

// State is where a pipeline is in its life.
type State int32

// The states of a pipeline. Completed, Stopped and Failed are final. Standby is never a Pipeline's own:
// a host that shares pipelines with others (cluster:) reports it for a pipeline it does not hold.
const (
	Starting   State = iota // opening its stages
	Running                 // records flow
	Restarting              // waiting to restart after a transient failure
	Completed               // its source is done and everything was delivered
	Stopped                 // drained or stopped on request
	Failed                  // failed for good
	Standby                 // another host holds its lease, or none does yet: this host runs it once it gets the lease
)

func (s State) String() string {
	switch s {
	case Starting:
		return "starting"
	case Running:
		return "running"
	case Restarting:
		return "restarting"
	case Completed:
		return "completed"
	case Stopped:
		return "stopped"
	case Failed:
		return "failed"
	case Standby:
		return "standby"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// Stats are a pipeline's counters. They are safe to read while the pipeline runs.
type Stats struct {
	// Read counts records received from the source, before transform steps.
	Read atomic.Int64
	// Delivered counts records the sink acknowledged.
	Delivered atomic.Int64
	// Restarts counts restarts after a stage failed.
	Restarts atomic.Int64
	// Redelivered counts records that were sent to a sink without atomic positions, not acknowledged
	// before a failure, and so delivered again after the restart (possible duplicates).
	Redelivered atomic.Int64
	// DeadLetters counts records written to the dead-letter sink.
	DeadLetters atomic.Int64
	// acks counts acknowledgements from any stage: progress, for the restart policy.
	acks atomic.Int64
}

// ErrStopped is what Run returns when the pipeline was drained or stopped (ctx cancelled) while it was
// healthy. A pipeline that was failing when it was stopped returns its failure instead.
var ErrStopped = errors.New("stopped")

// Pipeline runs one pipeline. Create it with New; call Run once.
type Pipeline struct {
	cfg     Config
	starter Starter
	store   Store
	log     *slog.Logger
	Stats   Stats

	drainOnce sync.Once
	drain     chan struct{}
	// cancelRun stops Run at once (set while Run runs); aborted is Abort's cause. Both under mu.
	cancelRun context.CancelFunc
	aborted   error

	state     atomic.Int32
	mu        sync.Mutex
	since     time.Time // when state last changed
	started   time.Time // when the stages were first open; zero until then
	lastErr   error     // the last failure, nil after progress
	stages    []StageStatus
	running   []*stage // the plugins of the current attempt, in the order stages lists them
	positions map[string]record.Position
	texts     map[string]positionText // plugins' renderings of positions, by upstream stage (render.go)
	fill      *BufferFill             // the buffer's fill as last reported
	// lastEvent is the latest event time (Unix nanoseconds) of the batches the source's downstream
	// acknowledged last; 0 while none had one.
	lastEvent atomic.Int64
	// leftoverRead is set once the in-flight count a previous host process left behind was read (by the
	// first attempt).
	leftoverRead bool
}

// New returns a pipeline for cfg that starts plugins with starter and keeps host-side positions in store.
func New(cfg Config, starter Starter, store Store, logger *slog.Logger) *Pipeline {
	if cfg.BatchMaxRecords <= 0 {
		cfg.BatchMaxRecords = DefaultBatchMaxRecords
	}
	if cfg.BatchMaxBytes <= 0 {
		cfg.BatchMaxBytes = DefaultBatchMaxBytes
	}
	if cfg.MaxInFlightBytes <= 0 {
		cfg.MaxInFlightBytes = max(DefaultMaxInFlightBytes, cfg.BatchMaxBytes)
	}
	cfg.Retry = cfg.Retry.withDefaults()
	if cfg.OpenTimeout <= 0 {
		cfg.OpenTimeout = DefaultOpenTimeout
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	return &Pipeline{cfg: cfg, starter: starter, store: store, log: logger.With("pipeline", cfg.ID),
		drain: make(chan struct{})}
}

// Drain asks the pipeline to stop gracefully: stop reading, wait for what is in flight to be acknowledged,
// store positions and stop the plugins. Run then returns ErrStopped. Safe to call more than once, from any
// goroutine.
func (p *Pipeline) Drain() { p.drainOnce.Do(func() { close(p.drain) }) }

// State returns where the pipeline is now.
func (p *Pipeline) State() State { return State(p.state.Load()) }

// LastError returns the failure the pipeline is restarting after, or failed with; nil when healthy.
func (p *Pipeline) LastError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

// Started returns when records first flowed, or the zero time if they never did.
func (p *Pipeline) Started() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started
}

func (p *Pipeline) setState(s State) {
	p.mu.Lock()
	if p.State() != s || p.since.IsZero() {
		p.since = time.Now()
	}
	p.state.Store(int32(s))
	p.mu.Unlock()
}

// Run runs the pipeline until its source is done and everything is delivered (nil), it is drained or ctx
// is cancelled (ErrStopped: a hard stop, nothing waits), or it fails for good (the error). A transient
// stage failure restarts the pipeline from stored positions after a backoff (Config.Retry); a permanent
// one (sdk.ErrPermanent, sdk.ErrInvalidSettings, a step failing with on_error: stop…) fails it at once, and
// so do transient failures that go on with no progress for Retry.GiveUpAfter. A pipeline that was failing
// when it was stopped returns its last failure.
func (p *Pipeline) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.mu.Lock()
	p.cancelRun = cancel
	p.mu.Unlock()
	r := newRetrier(p.cfg.Retry)
	finish := func(s State, err error) error {
		if cause := p.abortCause(); cause != nil {
			// Aborted (its lease was lost): stopped, whatever the attempt made of it.
			s, err = Stopped, cause
		}
		if err != nil && r.failing() && (errors.Is(err, ErrStopped)) {
			// Stopped while failing: the failure is the truth.
			err = fmt.Errorf("%w (stopped while restarting)", p.LastError())
			s = Failed
		}
		p.mu.Lock()
		if s == Failed {
			p.lastErr = err
		}
		p.mu.Unlock()
		p.setState(s)
		if s == Failed {
			p.emit(EventFailed, err, r.attempts, 0)
		}
		return err
	}
	for {
		if err := p.leaseValid(); err != nil {
			return finish(Stopped, err)
		}
		p.setState(Starting)
		begun, acks := time.Now(), p.Stats.acks.Load()
		err := p.attempt(ctx)
		now := time.Now()
		// An attempt that made progress, ran long, or was drained cleanly (its stages ran and stopped as
		// asked, so they were healthy) ends the run of failures.
		if p.Stats.acks.Load() > acks || now.Sub(begun) >= healthyRun || errors.Is(err, errDrained) {
			r.progressed()
			p.mu.Lock()
			p.lastErr = nil
			p.mu.Unlock()
		}
		switch {
		case err == nil:
			return finish(Completed, nil)
		case errors.Is(err, ErrLeaseLost):
			return finish(Stopped, err)
		case errors.Is(err, errDrained), ctx.Err() != nil:
			return finish(Stopped, ErrStopped)
		case errors.Is(err, protocol.ErrMessageTooLarge):
			// The same batch would be too large again after a restart.
			return finish(Failed, fmt.Errorf("%w; raise --max-message-bytes (or lower batch_max_bytes)", err))
		case isPermanent(err):
			return finish(Failed, err)
		}
		wait, giveUp := r.failed(err, now)
		if giveUp {
			return finish(Failed, r.gaveUp(err, now))
		}
		p.mu.Lock()
		p.lastErr = err
		p.mu.Unlock()
		p.Stats.Restarts.Add(1)
		if p.cfg.Meter != nil {
			p.cfg.Meter.Restarted(roleOf(err), Cause(err))
		}
		p.setState(Restarting)
		msg := err.Error()
		if r.repeats > 1 {
			msg = fmt.Sprintf("the same error as the previous attempt (%d in a row)", r.repeats)
		}
		p.log.Error("pipeline failed; restarting from stored positions", "attempt", r.attempts,
			"in", wait.Round(time.Millisecond).String(), "err", msg)
		p.emit(EventRestarting, err, r.attempts, wait)
		select {
		case <-time.After(wait):
		case <-p.drain:
			return finish(Stopped, ErrStopped)
		case <-ctx.Done():
			return finish(Stopped, ErrStopped)
		}
	}
}

// Abort stops the pipeline at once and for good, because cause (which should wrap ErrLeaseLost): the
// plugin processes of the current attempt are killed (protocol.Conn.Abort) before anything more is asked
// of them, so that none writes anything more, and Run returns cause. A stage started after Abort is killed
// as it starts. Abort returns once the processes are gone; safe to call more than once, from any
// goroutine.
func (p *Pipeline) Abort(cause error) {
	p.mu.Lock()
	if p.aborted == nil {
		p.aborted = cause
	}
	running, cancel := append([]*stage(nil), p.running...), p.cancelRun
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range running {
		wg.Go(s.conn.Abort)
	}
	if cancel != nil {
		cancel()
	}
	wg.Wait()
}

// abortCause is Abort's cause, nil unless aborted.
func (p *Pipeline) abortCause() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.aborted
}

// leaseValid returns nil when the pipeline has no lease or its lease is valid, else why not.
func (p *Pipeline) leaseValid() error {
	if cause := p.abortCause(); cause != nil {
		return cause
	}
	if p.cfg.Lease == nil {
		return nil
	}
	return p.cfg.Lease.Valid()
}

// fence is the fencing token handed to stages: the lease's, 0 without one.
func (p *Pipeline) fence() int64 {
	if p.cfg.Lease == nil {
		return 0
	}
	return p.cfg.Lease.Token()
}

// permanentError marks failures a restart cannot fix.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func isPermanent(err error) bool {
	var pe permanentError
	return errors.As(err, &pe) || sdk.IsPermanent(err)
}
