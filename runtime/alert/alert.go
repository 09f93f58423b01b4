// Package alert posts webhook alerts: what happens to pipelines (a failure, a restart, a crashed plugin,
// lost history) and what their snapshots show (a buffer filling up, a source falling behind), as JSON to
// the URLs a connector file lists under alerts:.
//
// Posting never blocks or slows a pipeline. Each target has its own bounded queue (QueueSize alerts) and
// one goroutine that posts from it, retrying with exponential backoff; when the queue is full the oldest
// alert is dropped, counted and logged. A target posts the same event of the same pipeline at most once
// per MinInterval; the next post says how many were suppressed in between.
//
// Nothing secret is logged: a target is named by where it is written and its URL's scheme and host, never
// its path, query, user info or headers.
package alert

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/sdk"
)

// Event names what an alert is about.
type Event string

// The events an alert can subscribe to.
const (
	// PipelineFailed: a pipeline failed for good.
	PipelineFailed = Event(pipeline.EventFailed)
	// PipelineRestarting: a transient failure; the pipeline restarts from stored positions.
	PipelineRestarting = Event(pipeline.EventRestarting)
	// PluginCrashed: a plugin process ended while its stage ran.
	PluginCrashed = Event(pipeline.EventPluginCrashed)
	// BufferHigh: a pipeline's buffer became at least Target.BufferHigh full.
	BufferHigh Event = "buffer_high"
	// LagHigh: a pipeline's source lag (now minus the time of the last event delivered) reached
	// Target.LagHigh.
	LagHigh Event = "lag_high"
	// HistoryLost: a pipeline failed because its source's stored position can no longer be read
	// (sdk.ErrHistoryLost); a PipelineFailed alert is posted too.
	HistoryLost Event = "history_lost"
	// LeaseLost: this instance lost a pipeline's lease (it could not renew it in time, or found it taken)
	// and stopped the pipeline; another instance may run it now (cluster:).
	LeaseLost = Event(pipeline.EventLeaseLost)
	// LeaseTakeover: this instance took a pipeline over from an instance that had not released its lease
	// (it died, froze, or lost Redis); Payload.PreviousInstance names it (cluster:).
	LeaseTakeover = Event(pipeline.EventLeaseTakeover)
)

// Events lists every event, in the order the documentation lists them.
var Events = []Event{PipelineFailed, PipelineRestarting, PluginCrashed, BufferHigh, LagHigh, HistoryLost, LeaseLost, LeaseTakeover}

// Defaults of a target's settings.
const (
	// DefaultMinInterval is the least time between two posts of one event of one pipeline to one target.
	DefaultMinInterval = time.Minute
	// DefaultBufferHigh is the buffer fill, as a fraction of its bound, at which buffer_high fires.
	DefaultBufferHigh = 0.8
	// DefaultLagHigh is the source lag at which lag_high fires.
	DefaultLagHigh = 5 * time.Minute
)

// Delivery limits.
const (
	// QueueSize is how many alerts wait per target; one more drops the oldest.
	QueueSize = 100
	// PostTimeout bounds one POST, response included.
	PostTimeout = 10 * time.Second
	// RetryInitial and RetryMax bound the backoff between attempts to post one alert (doubling, ±50 %
	// jitter); GiveUpAfter is how long one alert is retried before it is logged as lost.
	RetryInitial = time.Second
	RetryMax     = 30 * time.Second
	GiveUpAfter  = 10 * time.Minute
	// FlushTimeout is how long Close, and a target that is no longer configured, keep posting what is
	// queued.
	FlushTimeout = 5 * time.Second
	// CheckInterval is how often Watch checks pipelines' snapshots for buffer_high and lag_high.
	CheckInterval = 5 * time.Second
)

// Target is one entry of a connector file's alerts.
type Target struct {
	// Name identifies the target in logs without its secrets: "p.yaml:12:5 https://hooks.example.com".
	Name string
	// URL is where alerts are posted (http or https).
	URL string
	// Events are the events posted to URL.
	Events []Event
	// MinInterval is the least time between two posts of one event of one pipeline; 0: no limit.
	MinInterval time.Duration
	// Headers are added to every post (secrets allowed: they are never logged).
	Headers map[string]string
	// BufferHigh is the buffer fill (0..1, of the buffer's bound) at which buffer_high fires.
	BufferHigh float64
	// LagHigh is the source lag at which lag_high fires.
	LagHigh time.Duration
}

// Wants reports whether t subscribes to e.
func (t *Target) Wants(e Event) bool {
	for _, x := range t.Events {
		if x == e {
			return true
		}
	}
	return false
}

// Host returns what of a URL may be shown: its scheme and host ("https://hooks.example.com"), never its
// user info, path or query, which may hold secrets.
func Host(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(a URL)"
	}
	return u.Scheme + "://" + u.Host
}

// Payload is the JSON body of an alert.
type Payload struct {
	Pipeline string `json:"pipeline"`
	Event    Event  `json:"event"`
	// Error says what happened, for people: the pipeline's error, or the fill or lag and its threshold.
	Error    string    `json:"error"`
	Time     time.Time `json:"time"`
	Instance string    `json:"instance"`
	// Stage names the stage concerned, when one is: "sink kafka (pid 4242)".
	Stage string `json:"stage,omitempty"`
	// Attempt counts failed attempts in a row and RetryInSeconds is the delay before the next
	// (pipeline_restarting).
	Attempt        int     `json:"attempt,omitempty"`
	RetryInSeconds float64 `json:"retry_in_seconds,omitempty"`
	// BufferFill and BufferHigh: the fill and the threshold (buffer_high).
	BufferFill *float64 `json:"buffer_fill,omitempty"`
	BufferHigh *float64 `json:"buffer_high,omitempty"`
	// LagSeconds and LagHighSeconds: the lag and the threshold (lag_high).
	LagSeconds     *float64 `json:"lag_seconds,omitempty"`
	LagHighSeconds *float64 `json:"lag_high_seconds,omitempty"`
	// Suppressed counts posts of this event of this pipeline that MinInterval held back since the last
	// one.
	Suppressed int `json:"suppressed,omitempty"`
	// PreviousInstance is the instance that held the pipeline's lease before this one took it over, and
	// UnrenewedSeconds how long that lease had gone without a renewal (lease_takeover).
	PreviousInstance string   `json:"previous_instance,omitempty"`
	UnrenewedSeconds *float64 `json:"unrenewed_seconds,omitempty"`
}

// fromEvent turns a pipeline's event into the payloads it is alerted as: the event itself, and
// history_lost after a failure whose error is sdk.ErrHistoryLost.
func fromEvent(e pipeline.Event, instance string) []Payload {
	p := Payload{Pipeline: e.Pipeline, Event: Event(e.Kind), Time: e.Time.UTC(), Instance: instance, Stage: e.Stage,
		Attempt: e.Attempt, RetryInSeconds: e.Wait.Seconds()}
	if e.Err != nil {
		p.Error = e.Err.Error()
	}
	if e.Kind != pipeline.EventRestarting {
		p.Attempt, p.RetryInSeconds = 0, 0
	}
	if e.Kind == pipeline.EventLeaseTakeover {
		secs := e.Wait.Seconds()
		p.PreviousInstance, p.UnrenewedSeconds = e.Previous, &secs
	}
	out := []Payload{p}
	if e.Kind == pipeline.EventFailed && errors.Is(e.Err, sdk.ErrHistoryLost) {
		p.Event = HistoryLost
		out = append(out, p)
	}
	return out
}

// bufferHigh is the payload of a buffer_high alert.
func bufferHigh(st *pipeline.Status, threshold float64, now time.Time, instance string) Payload {
	fill := st.Buffer.Fraction
	return Payload{Pipeline: st.ID, Event: BufferHigh, Time: now.UTC(), Instance: instance,
		Error: fmt.Sprintf("buffer %.0f%% full (%d entries, %d bytes); the alert is at %.0f%%", fill*100,
			st.Buffer.Entries, st.Buffer.Bytes, threshold*100),
		BufferFill: &fill, BufferHigh: &threshold}
}

// lagHigh is the payload of a lag_high alert.
func lagHigh(st *pipeline.Status, lag, threshold time.Duration, now time.Time, instance string) Payload {
	secs, limit := lag.Seconds(), threshold.Seconds()
	return Payload{Pipeline: st.ID, Event: LagHigh, Time: now.UTC(), Instance: instance,
		Error: fmt.Sprintf("source lag %s (last event at %s); the alert is at %s", lag.Round(time.Second),
			st.LastEventTime.UTC().Format(time.RFC3339), threshold),
		LagSeconds: &secs, LagHighSeconds: &limit}
}
