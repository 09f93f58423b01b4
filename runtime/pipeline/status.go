package pipeline

import (
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/sdk/record"
)

// Status is a snapshot of a pipeline for operators: the HTTP API, `sluice status`, the progress line.
type Status struct {
	ID        string
	State     State
	Guarantee Guarantee
	// Lanes is the number of sink lanes of a pipeline with ordered: false; 0 for an ordered pipeline.
	Lanes int
	// Since is when the pipeline entered State.
	Since time.Time
	// Started is when the pipeline's stages were first open (zero until then).
	Started time.Time
	// LastError is the failure it is restarting after or failed with; empty when healthy.
	LastError string
	// Counters, as in Stats.
	Read, Delivered, Restarts, Redelivered, DeadLetters int64
	// Stages are the plugin instances of the current attempt, source first; empty between attempts.
	Stages []StageStatus
	// Positions holds, per upstream stage ("source", "buffer"), the last position acknowledged
	// downstream in this process's run; absent until one is.
	Positions map[string]record.Position
	// PositionTexts holds, per upstream stage whose plugin renders its positions (sdk.PositionFormatter),
	// the plugin's rendering of that stage's last acknowledged position as of at most about a second ago:
	// the host asks at most once a second while the position changes, and once more when the stage ends.
	PositionTexts map[string]string
	// LastEventTime is the source's time of the last record acknowledged downstream (for MongoDB, the
	// event's cluster time; heartbeats count); zero while none is known. Source lag is now minus it.
	LastEventTime time.Time
	// Buffer is the buffer's fill as its plugin last reported it; nil without a buffer or a report.
	Buffer *BufferFill
	// Snapshot is the source's initial copy while it runs, as the source last reported it; nil when the
	// source copies nothing or does not report it.
	Snapshot *SnapshotProgress
	// Lease is who holds the pipeline's lease when several hosts share pipelines (cluster:); nil
	// otherwise. The host that reports the status fills it in.
	Lease *LeaseStatus
}

// LeaseStatus says which host holds a pipeline's lease, and so runs it.
type LeaseStatus struct {
	// Instance is the holder's instance id; empty when no host holds the lease.
	Instance string
	// Since is when the holder acquired the lease; Token is the lease's fencing token (both zero when no
	// host holds it).
	Since time.Time
	Token int64
	// Here reports that the host reporting the status is the holder.
	Here bool
}

// SnapshotProgress is how far a source's initial copy (a snapshot) has got.
type SnapshotProgress struct {
	// Copied counts the documents copied so far; Estimated is the source's estimate of the total (0 when
	// it has none).
	Copied, Estimated int64
}

// BufferFill is how full a pipeline's buffer is.
type BufferFill struct {
	Entries, Bytes int64
	// Fraction is the fill against the buffer's bound (0..1); 0 when the buffer is unbounded.
	Fraction float64
}

// StageStatus is one running plugin instance.
type StageStatus struct {
	// Role is "source", "buffer", "sink" or "dead-letter sink".
	Role   string
	Plugin string
	// Pid is the plugin's process id; 0 in-process.
	Pid int
	// Lane is the sink's lane in a pipeline with ordered: false; nil for every other stage.
	Lane *int
}

// Status returns a snapshot of the pipeline. Safe to call at any time, from any goroutine.
func (p *Pipeline) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := Status{ID: p.cfg.ID, State: p.State(), Guarantee: GuaranteeOf(&p.cfg), Lanes: p.cfg.Lanes, Since: p.since, Started: p.started,
		Read: p.Stats.Read.Load(), Delivered: p.Stats.Delivered.Load(), Restarts: p.Stats.Restarts.Load(),
		Redelivered: p.Stats.Redelivered.Load(), DeadLetters: p.Stats.DeadLetters.Load(),
		Positions: make(map[string]record.Position, len(p.positions))}
	if p.lastErr != nil {
		st.LastError = p.lastErr.Error()
	}
	// Source first, as records flow; the attempt starts them downstream first.
	for i := len(p.stages) - 1; i >= 0; i-- {
		st.Stages = append(st.Stages, p.stages[i])
	}
	for k, v := range p.positions {
		st.Positions[k] = v
	}
	for k, t := range p.texts {
		if st.PositionTexts == nil {
			st.PositionTexts = make(map[string]string, len(p.texts))
		}
		st.PositionTexts[k] = t.text
	}
	if ns := p.lastEvent.Load(); ns != 0 {
		st.LastEventTime = time.Unix(0, ns)
	}
	if p.fill != nil {
		fill := *p.fill
		st.Buffer = &fill
	}
	return st
}

// EventKind names what happened to a pipeline, for alerts.
type EventKind string

// The events a pipeline reports through Config.Events.
const (
	// EventRestarting: a transient failure; the pipeline restarts after Event.Wait.
	EventRestarting EventKind = "pipeline_restarting"
	// EventFailed: the pipeline failed for good.
	EventFailed EventKind = "pipeline_failed"
	// EventPluginCrashed: a plugin process ended while its stage ran (Event.Stage names it). A restart
	// or failure event follows.
	EventPluginCrashed EventKind = "plugin_crashed"
	// EventLeaseLost: this host lost the pipeline's lease (it could not renew it in time, or found it
	// taken) and stopped the pipeline at once; another host may run it now.
	EventLeaseLost EventKind = "lease_lost"
	// EventLeaseTakeover: this host took over the pipeline from a holder that had not released its lease
	// (it died, froze, or lost Redis): Event.Previous names it, Event.Wait is how long its lease had gone
	// unrenewed.
	EventLeaseTakeover EventKind = "lease_takeover"
)

// Event is something that happened to a pipeline.
type Event struct {
	Pipeline string
	Kind     EventKind
	Time     time.Time
	// Err is the failure, or what happened (always set).
	Err error
	// Stage names the stage concerned, when one is: "sink kafka (pid 4242)".
	Stage string
	// Cause says what kind of failure Err is: one of the Cause constants (CauseCrash, CauseStall, …).
	Cause string
	// Attempt counts the failed attempts in a row; Wait is the delay before the next (restarting only).
	Attempt int
	Wait    time.Duration
	// Previous is the instance that held the pipeline's lease before (lease_takeover only).
	Previous string
}

// emit reports e through Config.Events, when set.
func (p *Pipeline) emit(kind EventKind, err error, attempt int, wait time.Duration) {
	if p.cfg.Events == nil {
		return
	}
	e := Event{Pipeline: p.cfg.ID, Kind: kind, Time: time.Now(), Err: err, Cause: Cause(err), Attempt: attempt, Wait: wait}
	var se *StageError
	if errors.As(err, &se) {
		e.Stage = se.Stage
		if se.Exit != nil && kind != EventPluginCrashed {
			crash := e
			crash.Kind = EventPluginCrashed
			p.cfg.Events(crash)
		}
	}
	p.cfg.Events(e)
}

// setPosition records pos as the last position of upstream stage name acknowledged downstream.
func (p *Pipeline) setPosition(name string, pos record.Position) {
	pos = pos.Clone()
	p.mu.Lock()
	if p.positions == nil {
		p.positions = map[string]record.Position{}
	}
	p.positions[name] = pos
	p.mu.Unlock()
}

// FormatPosition renders a position for people: hex, or "none".
func FormatPosition(pos record.Position) string {
	if pos == nil {
		return "none"
	}
	return fmt.Sprintf("%x", []byte(pos))
}
