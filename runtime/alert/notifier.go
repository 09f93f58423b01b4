package alert

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/sluicehq/sluice/runtime/pipeline"
)

// Options configure a Notifier. Zero fields take the defaults.
type Options struct {
	// Instance names this sluice process in every payload (default: the host name).
	Instance string
	// UserAgent is sent with every post unless a target sets its own.
	UserAgent string
	Logger    *slog.Logger
	// Client posts the alerts (default: one with PostTimeout).
	Client *http.Client
	// RetryInitial, RetryMax and GiveUpAfter override the package's retry constants (for tests).
	RetryInitial, RetryMax, GiveUpAfter time.Duration
	// Redact, when set, is applied to the error of every event before it is posted: it hides the secret
	// values a plugin's error may quote (a password in a connection error).
	Redact func(string) string
}

// Notifier routes pipelines' events to their targets. Create it with New; it is safe for concurrent use.
type Notifier struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	mu      sync.Mutex
	senders map[string]*sender   // by targetKey
	routes  map[string][]*sender // by pipeline id
	closed  bool
	// live holds every sender whose goroutine runs, retiring ones included.
	live map[*sender]struct{}
	wg   sync.WaitGroup // every sender's goroutine
}

// New returns a Notifier with no routes.
func New(o Options) *Notifier {
	if o.Client == nil {
		o.Client = &http.Client{Timeout: PostTimeout}
	}
	if o.RetryInitial <= 0 {
		o.RetryInitial = RetryInitial
	}
	if o.RetryMax <= 0 {
		o.RetryMax = RetryMax
	}
	if o.GiveUpAfter <= 0 {
		o.GiveUpAfter = GiveUpAfter
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Notifier{opts: o, log: log, now: time.Now, senders: map[string]*sender{}, routes: map[string][]*sender{},
		live: map[*sender]struct{}{}}
}

// targetKey identifies a target by everything but its name: a target that is still configured the same
// after a reload keeps its queue and its rate limits.
func targetKey(t *Target) string {
	events := slices.Clone(t.Events)
	slices.Sort(events)
	b, _ := json.Marshal(struct {
		URL        string
		Events     []Event
		Min        time.Duration
		Headers    map[string]string
		BufferHigh float64
		LagHigh    time.Duration
	}{t.URL, events, t.MinInterval, t.Headers, t.BufferHigh, t.LagHigh})
	return string(b)
}

// Route sets the targets each pipeline's alerts go to, replacing the previous routes. Targets configured
// as before keep their queues and rate limits; a target no longer configured posts what it holds for at
// most FlushTimeout, then stops. After Close, Route does nothing.
func (n *Notifier) Route(routes map[string][]Target) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	used := map[string]*sender{}
	n.routes = make(map[string][]*sender, len(routes))
	for id, targets := range routes {
		for i := range targets {
			t := targets[i]
			k := targetKey(&t)
			s := used[k]
			if s == nil {
				if s = n.senders[k]; s == nil {
					s = newSender(n, t)
					n.live[s] = struct{}{}
					n.wg.Add(1)
					go func() {
						defer n.wg.Done()
						s.run()
						n.mu.Lock()
						delete(n.live, s)
						n.mu.Unlock()
					}()
				}
				s.rename(t.Name)
				used[k] = s
			}
			if !slices.Contains(n.routes[id], s) {
				n.routes[id] = append(n.routes[id], s)
			}
		}
	}
	for k, s := range n.senders {
		if used[k] == nil {
			s.retire(FlushTimeout)
		}
	}
	n.senders = used
}

// Notify posts e to the targets of its pipeline that subscribe to it (and history_lost for a failure
// whose error is sdk.ErrHistoryLost). It never blocks: use it as pipeline.Config.Events.
func (n *Notifier) Notify(e pipeline.Event) {
	for _, p := range fromEvent(e, n.opts.Instance) {
		if n.opts.Redact != nil {
			p.Error = n.opts.Redact(p.Error)
		}
		for _, s := range n.targets(p.Pipeline) {
			if s.t.Wants(p.Event) {
				s.offer(p, n.now())
			}
		}
	}
}

// targets returns the senders pipeline id's alerts go to.
func (n *Notifier) targets(id string) []*sender {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.routes[id]
}

// Check compares snapshots taken at now with the thresholds of their pipelines' targets: buffer_high
// fires when a buffer's fill reaches BufferHigh, lag_high when now minus the last event's time reaches
// LagHigh, each once on the way up; it fires again only after the value has been below its threshold.
// Only pipelines that are starting, running or restarting are checked (a pipeline that ended is below
// every threshold).
func (n *Notifier) Check(now time.Time, sts []pipeline.Status) {
	for i := range sts {
		st := &sts[i]
		live := st.State == pipeline.Starting || st.State == pipeline.Running || st.State == pipeline.Restarting
		for _, s := range n.targets(st.ID) {
			if s.t.Wants(BufferHigh) {
				high := live && st.Buffer != nil && st.Buffer.Fraction >= s.t.BufferHigh
				s.level(st.ID, BufferHigh, high, now, func() Payload { return bufferHigh(st, s.t.BufferHigh, now, n.opts.Instance) })
			}
			if s.t.Wants(LagHigh) {
				lag := now.Sub(st.LastEventTime)
				high := live && !st.LastEventTime.IsZero() && lag >= s.t.LagHigh
				s.level(st.ID, LagHigh, high, now, func() Payload { return lagHigh(st, lag, s.t.LagHigh, now, n.opts.Instance) })
			}
		}
	}
}

// Watch calls Check with statuses() every CheckInterval until ctx is done.
func (n *Notifier) Watch(ctx context.Context, statuses func() []pipeline.Status) {
	t := time.NewTicker(CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n.Check(now, statuses())
		}
	}
}

// Close stops taking alerts and posts what is queued until ctx is done; what is still queued then is
// logged as not delivered. It returns when every target has stopped.
func (n *Notifier) Close(ctx context.Context) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	all := make([]*sender, 0, len(n.live))
	for s := range n.live {
		all = append(all, s)
	}
	n.routes, n.senders = map[string][]*sender{}, map[string]*sender{}
	n.mu.Unlock()
	for _, s := range all {
		s.retire(0)
	}
	done := make(chan struct{})
	go func() {
		n.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	for _, s := range all {
		s.cancel()
	}
	<-done
}
