package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// key is what a target rate-limits and tracks thresholds by.
type key struct {
	pipeline string
	event    Event
}

// sender posts one target's alerts from its queue, one at a time.
type sender struct {
	n *Notifier
	t Target // read-only after newSender, but for Name (see name)

	// ctx ends posting at once: a flush's deadline passed.
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{} // something was queued
	stop   chan struct{} // closed by retire: post what is queued, then end
	once   sync.Once

	mu         sync.Mutex
	name       string
	queue      []Payload
	stopped    bool
	dropped    int64
	abandoned  int // alerts given up because ctx ended
	last       map[key]time.Time
	suppressed map[key]int
	high       map[key]bool
}

func newSender(n *Notifier, t Target) *sender {
	ctx, cancel := context.WithCancel(context.Background())
	return &sender{n: n, t: t, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1), stop: make(chan struct{}),
		name: t.Name, last: map[key]time.Time{}, suppressed: map[key]int{}, high: map[key]bool{}}
}

func (s *sender) rename(name string) {
	s.mu.Lock()
	s.name = name
	s.mu.Unlock()
}

func (s *sender) label() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.name
}

// offer queues p unless MinInterval holds it back, dropping the oldest queued alert when the queue is
// full. It never blocks.
func (s *sender) offer(p Payload, now time.Time) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	k := key{p.Pipeline, p.Event}
	if last, ok := s.last[k]; ok && s.t.MinInterval > 0 && now.Sub(last) < s.t.MinInterval {
		s.suppressed[k]++
		s.mu.Unlock()
		return
	}
	s.last[k] = now
	p.Suppressed = s.suppressed[k]
	delete(s.suppressed, k)
	var dropped *Payload
	if len(s.queue) >= QueueSize {
		d := s.queue[0]
		dropped = &d
		s.queue = s.queue[1:]
		s.dropped++
	}
	s.queue = append(s.queue, p)
	total, name := s.dropped, s.name
	s.mu.Unlock()
	if dropped != nil {
		s.n.log.Warn("alert queue full; dropped the oldest alert", "alert", name, "pipeline", dropped.Pipeline,
			"event", string(dropped.Event), "dropped", total, "queue", QueueSize)
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// level tracks a threshold event of a pipeline: it offers mk() when high becomes true.
func (s *sender) level(pipeline string, e Event, high bool, now time.Time, mk func() Payload) {
	k := key{pipeline, e}
	s.mu.Lock()
	was := s.high[k]
	if high {
		s.high[k] = true
	} else {
		delete(s.high, k)
	}
	s.mu.Unlock()
	if high && !was {
		s.offer(mk(), now)
	}
}

// retire stops the sender taking alerts; it posts what it holds, for at most flush when flush > 0 (else
// until cancel), then ends.
func (s *sender) retire(flush time.Duration) {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.once.Do(func() { close(s.stop) })
	if flush > 0 {
		time.AfterFunc(flush, s.cancel)
	}
}

// next takes the oldest queued alert.
func (s *sender) next() (Payload, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return Payload{}, false
	}
	p := s.queue[0]
	s.queue = s.queue[1:]
	return p, true
}

func (s *sender) run() {
	defer s.cancel()
	for {
		if s.ctx.Err() != nil {
			s.mu.Lock()
			n := s.abandoned + len(s.queue)
			s.queue = nil
			s.mu.Unlock()
			if n > 0 {
				s.n.log.Warn("alerts not delivered: sluice stopped waiting for the receiver", "alert", s.label(), "alerts", n)
			}
			return
		}
		if p, ok := s.next(); ok {
			s.post(p)
			continue
		}
		select {
		case <-s.stop:
			if p, ok := s.next(); ok {
				s.post(p)
				continue
			}
			return
		case <-s.wake:
		case <-s.ctx.Done():
		}
	}
}

// post delivers p, retrying with backoff for up to GiveUpAfter.
func (s *sender) post(p Payload) {
	body, err := json.Marshal(p)
	if err != nil {
		s.n.log.Error("alert not delivered: cannot encode it", "alert", s.label(), "pipeline", p.Pipeline, "event", string(p.Event), "err", err)
		return
	}
	o := &s.n.opts
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(o.RetryInitial), backoff.WithMultiplier(2), backoff.WithMaxInterval(o.RetryMax),
		backoff.WithMaxElapsedTime(o.GiveUpAfter))
	attempts := 0
	err = backoff.RetryNotify(func() error {
		attempts++
		return s.postOnce(body)
	}, backoff.WithContext(b, s.ctx), func(err error, wait time.Duration) {
		args := []any{"alert", s.label(), "pipeline", p.Pipeline, "event", string(p.Event), "attempt", attempts,
			"in", wait.Round(time.Millisecond).String(), "err", err}
		if attempts == 1 {
			s.n.log.Warn("alert not delivered; retrying", append(args, "give_up_after", o.GiveUpAfter.String())...)
		} else {
			s.n.log.Debug("alert not delivered; retrying", args...)
		}
	})
	switch {
	case err == nil:
		if attempts > 1 {
			s.n.log.Info("alert delivered", "alert", s.label(), "pipeline", p.Pipeline, "event", string(p.Event), "attempts", attempts)
		}
	case s.ctx.Err() != nil:
		s.mu.Lock()
		s.abandoned++
		s.mu.Unlock()
	default:
		s.n.log.Error("alert lost: the receiver did not accept it", "alert", s.label(), "pipeline", p.Pipeline,
			"event", string(p.Event), "attempts", attempts, "err", err)
	}
}

// postOnce makes one POST. A status that retrying cannot change is a backoff.Permanent error. Errors
// never contain the URL.
func (s *sender) postOnce(body []byte) error {
	ctx, cancel := context.WithTimeout(s.ctx, PostTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.t.URL, bytes.NewReader(body))
	if err != nil {
		return backoff.Permanent(errors.New("the URL is not valid"))
	}
	req.Header.Set("Content-Type", "application/json")
	if ua := s.n.opts.UserAgent; ua != "" {
		req.Header.Set("User-Agent", ua)
	}
	for k, v := range s.t.Headers {
		req.Header.Set(k, v)
	}
	resp, err := s.n.opts.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the rest is the URL, which may hold a secret
		}
		return err
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return nil
	}
	err = fmt.Errorf("HTTP %s", resp.Status)
	if t := strings.Join(strings.Fields(strings.ToValidUTF8(string(text), "?")), " "); t != "" {
		err = fmt.Errorf("HTTP %s: %s", resp.Status, t)
	}
	if code == http.StatusRequestTimeout || code == http.StatusTooEarly || code == http.StatusTooManyRequests || code >= 500 {
		return err
	}
	return backoff.Permanent(err)
}
