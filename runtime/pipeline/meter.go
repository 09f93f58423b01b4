package pipeline

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/sdk/protocol"
)

// Meter is told what moves through a pipeline, for metrics (package runtime/metrics implements it with
// Prometheus). Set Config.Meter to use one; nil measures nothing. Its methods are called from the
// pipeline's goroutines, at most a few times per batch (never per record) and for rare events; they must
// be cheap and must not block.
type Meter interface {
	// Stage returns the meter of one stage role ("source", "buffer", "sink"), asked once per attempt.
	Stage(role string) StageMeter
	// Filtered counts records that the filter steps of steps ("transforms" or "sink_transforms") dropped.
	Filtered(steps string, records int)
	// DeadLettered counts records written to the dead-letter sink, by where they failed: "source",
	// "transforms", "sink_transforms" or "sink".
	DeadLettered(origin string, records int)
	// Redelivered counts records sent to a sink without atomic positions and not acknowledged before a
	// failure: they are delivered again after the restart.
	Redelivered(records int)
	// Restarted counts a restart after a transient failure: the role of the stage at fault ("" when none
	// is) and the cause (one of the Cause constants).
	Restarted(stage, cause string)
	// Latency observes the end-to-end latency of a batch the sink acknowledged: from the latest event time
	// among its records to the acknowledgement. Batches without an event time are not observed.
	Latency(d time.Duration)
}

// LaneMeter is a Meter that also counts what each lane's sink wrote, in a pipeline with ordered: false.
type LaneMeter interface {
	// LaneWritten counts records the sink of lane lane acknowledged as durable.
	LaneWritten(lane, records int)
}

// StageMeter measures one stage of a pipeline.
type StageMeter interface {
	// Read counts a batch the host received from the stage (a source or buffer), before transform steps:
	// its records and the bytes of their wire encoding.
	Read(records, bytes int)
	// Written counts batches the stage (a buffer or sink) acknowledged as durable: records (without the
	// ones a sink rejected) and bytes.
	Written(records, bytes int)
}

// Causes of a restart, as Cause names them.
const (
	// CauseCrash: a plugin process ended (exited, was killed, panicked).
	CauseCrash = "crash"
	// CauseStall: a stage held records without acknowledging any for stall_timeout.
	CauseStall = "stall"
	// CauseUnresponsive: a plugin process stopped answering health checks.
	CauseUnresponsive = "unresponsive"
	// CauseOpenTimeout: a stage's Open or Checkpoint did not answer within open_timeout.
	CauseOpenTimeout = "open_timeout"
	// CauseError: a stage, or the host, reported a transient error.
	CauseError = "error"
)

var (
	errStalled      = errors.New("stalled")
	errUnresponsive = errors.New("the plugin process has not answered")
)

// Cause names what a failure was, for metrics and alerts: CauseCrash, CauseStall, CauseUnresponsive,
// CauseOpenTimeout, or CauseError for anything else.
func Cause(err error) string {
	var se *StageError
	switch {
	case errors.As(err, &se) && se.Exit != nil:
		return CauseCrash
	case errors.Is(err, errStalled):
		return CauseStall
	case errors.Is(err, errUnresponsive):
		return CauseUnresponsive
	case errors.As(err, new(*OpenTimeoutError)):
		return CauseOpenTimeout
	}
	return CauseError
}

// roleOf returns the role of the stage err names ("sink"…), or "" when it names none.
func roleOf(err error) string {
	var se *StageError
	if errors.As(err, &se) {
		return se.Role
	}
	return ""
}

// originOf maps a dead letter's sluice.error.stage ("transforms[2].set", "sink") to where it failed.
func originOf(stage string) string {
	if i := strings.IndexByte(stage, '['); i >= 0 {
		return stage[:i]
	}
	return stage
}

// StageMetrics is what one running stage's plugin reported (see CollectMetrics).
type StageMetrics struct {
	// Role is the stage's role ("source", "buffer", "sink", "dead-letter sink") and Plugin its plugin.
	Role, Plugin string
	// Text holds the plugin's own metrics in the Prometheus text format (0.0.4), with the plugin's names;
	// empty when it reports none.
	Text []byte
	// Err is why the plugin did not answer (it timed out, or failed); Text is then empty.
	Err error
}

// fillInterval is how often a running pipeline asks its buffer how full it is, for Status.Buffer.
const fillInterval = 5 * time.Second

// CollectMetrics asks the plugin of every running stage for its metrics, all at once, each within
// timeout, and returns what each answered (nothing between attempts). A buffer's answer also updates
// Status.Buffer. It returns within timeout whatever the plugins do.
func (p *Pipeline) CollectMetrics(ctx context.Context, timeout time.Duration) []StageMetrics {
	p.mu.Lock()
	running := append([]*stage(nil), p.running...)
	p.mu.Unlock()
	out := make([]StageMetrics, len(running))
	var wg sync.WaitGroup
	for i, s := range running {
		wg.Go(func() {
			m, err := p.stageMetrics(ctx, s, timeout)
			out[i] = StageMetrics{Role: s.role, Plugin: s.plugin, Text: m.Text, Err: err}
		})
	}
	wg.Wait()
	// Source first, as records flow; the attempt starts them downstream first.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// stageMetrics asks s's plugin for its metrics within timeout, and keeps a buffer's fill.
func (p *Pipeline) stageMetrics(ctx context.Context, s *stage, timeout time.Duration) (protocol.Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m, err := s.conn.Metrics(ctx)
	if err != nil {
		return protocol.Metrics{}, err
	}
	if m.Fill != nil && s.role == "buffer" {
		p.mu.Lock()
		p.fill = &BufferFill{Entries: m.Fill.Entries, Bytes: m.Fill.Bytes, Fraction: m.Fill.Fraction}
		p.mu.Unlock()
	}
	return m, nil
}

// watchFill asks the buffer for its fill every fillInterval while the attempt runs, so that Status.Buffer
// is current without anyone scraping metrics.
func (p *Pipeline) watchFill(ctx context.Context, s *stage) {
	t := time.NewTicker(fillInterval)
	defer t.Stop()
	for {
		if _, err := p.stageMetrics(ctx, s, fillInterval); err != nil && ctx.Err() == nil {
			p.log.Debug("asking the buffer for its fill failed", "stage", s.String(), "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
