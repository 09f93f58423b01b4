package api

import (
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/sdk/record"
)

// List is the body of GET /api/pipelines.
type List struct {
	// Time is when the snapshot was taken.
	Time time.Time `json:"time"`
	// Instance names the sluice that answers (run --instance, or cluster.instance_id).
	Instance string `json:"instance"`
	// Instances are the live instances sharing the pipelines (cluster:), sorted; null without cluster:.
	Instances []string `json:"instances"`
	// RateWindowSeconds is the span rates are measured over (RateWindow).
	RateWindowSeconds float64    `json:"rate_window_seconds"`
	Pipelines         []Pipeline `json:"pipelines"`
}

// Pipeline is one pipeline as the API shows it. Values that are not known are null.
type Pipeline struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	Guarantee string `json:"guarantee"`
	// Lanes is the number of sink lanes of a pipeline with ordered: false; null for an ordered pipeline.
	Lanes *int `json:"lanes"`
	// Since is when the pipeline entered State; Started when its stages were first open.
	Since   *time.Time `json:"since"`
	Started *time.Time `json:"started"`
	// LastError is the failure the pipeline is restarting after or failed with.
	LastError *string `json:"last_error"`
	// Stages are the plugin instances of the current attempt, source first; empty between attempts.
	Stages []Stage `json:"stages"`
	// Positions holds, per upstream stage ("source", "buffer"), the last position acknowledged downstream,
	// as the stage's plugin renders it when it does (pipeline.Status.PositionTexts), else by RenderPosition.
	Positions   map[string]string `json:"positions"`
	Read        int64             `json:"read"`
	Delivered   int64             `json:"delivered"`
	Restarts    int64             `json:"restarts"`
	Redelivered int64             `json:"redelivered"`
	DeadLetters int64             `json:"dead_letters"`
	// ReadPerSecond and DeliveredPerSecond are rates over the last RateWindow.
	ReadPerSecond      *float64 `json:"read_per_second"`
	DeliveredPerSecond *float64 `json:"delivered_per_second"`
	// LagSeconds is how far behind the source's last acknowledged event is (while the pipeline is not
	// finished and the source reports event times).
	LagSeconds    *float64   `json:"lag_seconds"`
	LastEventTime *time.Time `json:"last_event_time"`
	Buffer        *Buffer    `json:"buffer"`
	Snapshot      *Snapshot  `json:"snapshot"`
	// Lease is who holds the pipeline's lease, and so runs it (cluster:); null without cluster:.
	Lease *Lease `json:"lease"`
}

// Lease says which instance holds a pipeline's lease.
type Lease struct {
	// Instance is the holder; null when no instance holds the lease.
	Instance *string `json:"instance"`
	// Since is when the holder acquired the lease, Token its fencing token; null when none holds it.
	Since *time.Time `json:"since"`
	Token *int64     `json:"token"`
	// Here is true when the instance answering holds it.
	Here bool `json:"here"`
}

// Stage is one running plugin instance.
type Stage struct {
	// Role is "source", "buffer", "sink" or "dead-letter sink".
	Role   string `json:"role"`
	Plugin string `json:"plugin"`
	// Pid is the plugin's process id; null when it runs inside sluice.
	Pid *int `json:"pid"`
	// Lane is the sink's lane in a pipeline with ordered: false; absent for every other stage.
	Lane *int `json:"lane,omitempty"`
}

// Buffer is a buffer's fill.
type Buffer struct {
	Entries int64 `json:"entries"`
	Bytes   int64 `json:"bytes"`
	// Fraction is the fill against the buffer's bound (0..1); null when the buffer is unbounded.
	Fraction *float64 `json:"fraction"`
}

// Snapshot is how far a source's initial copy has got.
type Snapshot struct {
	Copied int64 `json:"copied"`
	// Estimated is the source's estimate of the documents to copy; null when it has none.
	Estimated *int64 `json:"estimated"`
}

// RateWindow is the span over which rates are measured.
const RateWindow = 5 * time.Second

// minRateSpan is the shortest span a rate is computed over: shorter ones are noise.
const minRateSpan = 200 * time.Millisecond

// sampleGap is the least time between two kept samples of one pipeline.
const sampleGap = 250 * time.Millisecond

// Sampler turns successive pipeline snapshots into views with rates. It keeps a few seconds of counters
// per pipeline. Safe for concurrent use; the zero value is ready.
type Sampler struct {
	mu   sync.Mutex
	hist map[string][]sample
}

type sample struct {
	t               time.Time
	read, delivered int64
}

// Observe returns the views of sts at now, with rates measured against earlier observations, and keeps
// sts for later ones. Pipelines missing from sts are forgotten. A pipeline whose counters went down (it
// was replaced by a new instance with the same id) starts its rates over.
func (s *Sampler) Observe(now time.Time, sts []pipeline.Status) []Pipeline {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.hist
	s.hist = make(map[string][]sample, len(sts))
	seen := map[string]int{}
	out := make([]Pipeline, len(sts))
	for i, st := range sts {
		// Two instances with one id (one draining while its replacement starts) are kept apart.
		key := st.ID
		if n := seen[st.ID]; n > 0 {
			key += "\x00" + strconv.Itoa(n)
		}
		seen[st.ID]++
		h := old[key]
		if n := len(h); n > 0 && (st.Read < h[n-1].read || st.Delivered < h[n-1].delivered) {
			h = nil
		}
		for len(h) > 1 && !h[1].t.After(now.Add(-RateWindow)) {
			h = h[1:]
		}
		out[i] = view(now, st)
		if len(h) > 0 {
			if span := now.Sub(h[0].t); span >= minRateSpan {
				out[i].ReadPerSecond = rate(st.Read-h[0].read, span)
				out[i].DeliveredPerSecond = rate(st.Delivered-h[0].delivered, span)
			}
		}
		if len(h) == 0 || now.Sub(h[len(h)-1].t) >= sampleGap {
			h = append(h, sample{t: now, read: st.Read, delivered: st.Delivered})
		}
		s.hist[key] = h
	}
	return out
}

func rate(n int64, span time.Duration) *float64 {
	r := float64(n) / span.Seconds()
	return &r
}

// view is st without rates.
func view(now time.Time, st pipeline.Status) Pipeline {
	v := Pipeline{ID: st.ID, State: st.State.String(), Guarantee: string(st.Guarantee),
		Since: timeOrNil(st.Since), Started: timeOrNil(st.Started), Stages: make([]Stage, 0, len(st.Stages)),
		Positions: make(map[string]string, len(st.Positions)), Read: st.Read, Delivered: st.Delivered,
		Restarts: st.Restarts, Redelivered: st.Redelivered, DeadLetters: st.DeadLetters,
		LastEventTime: timeOrNil(st.LastEventTime)}
	if st.LastError != "" {
		v.LastError = &st.LastError
	}
	if st.Lanes > 0 {
		v.Lanes = &st.Lanes
	}
	for _, sg := range st.Stages {
		s := Stage{Role: sg.Role, Plugin: sg.Plugin, Lane: sg.Lane}
		if sg.Pid != 0 {
			s.Pid = &sg.Pid
		}
		v.Stages = append(v.Stages, s)
	}
	for k, p := range st.Positions {
		if text, ok := st.PositionTexts[k]; ok {
			v.Positions[k] = text
			continue
		}
		v.Positions[k] = RenderPosition(p)
	}
	if !st.LastEventTime.IsZero() && !finished(st.State) {
		lag := max(now.Sub(st.LastEventTime), 0).Seconds()
		v.LagSeconds = &lag
	}
	if b := st.Buffer; b != nil {
		v.Buffer = &Buffer{Entries: b.Entries, Bytes: b.Bytes}
		if b.Fraction > 0 {
			f := b.Fraction
			v.Buffer.Fraction = &f
		}
	}
	if l := st.Lease; l != nil {
		v.Lease = &Lease{Here: l.Here, Since: timeOrNil(l.Since)}
		if l.Instance != "" {
			inst, tok := l.Instance, l.Token
			v.Lease.Instance, v.Lease.Token = &inst, &tok
		}
	}
	if sn := st.Snapshot; sn != nil {
		v.Snapshot = &Snapshot{Copied: sn.Copied}
		if sn.Estimated > 0 {
			e := sn.Estimated
			v.Snapshot.Estimated = &e
		}
	}
	return v
}

// finished reports whether a pipeline in state s has finished: completed, stopped or failed.
func finished(s pipeline.State) bool {
	return s == pipeline.Completed || s == pipeline.Stopped || s == pipeline.Failed
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// RenderPosition renders a position for people: as text when it is printable UTF-8 (a Redis stream ID:
// "1700000000000-0"), otherwise as 0x and hex (a generate sequence number: 0x00000000000003e7).
func RenderPosition(pos record.Position) string {
	if len(pos) == 0 {
		return pipeline.FormatPosition(pos)
	}
	if utf8.Valid(pos) {
		printable := true
		for _, r := range string(pos) {
			if !unicode.IsPrint(r) {
				printable = false
				break
			}
		}
		if printable {
			return string(pos)
		}
	}
	return "0x" + pipeline.FormatPosition(pos)
}
