package pipeline

import (
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Defaults of the restart policy and the watchdogs; the README ("When things go wrong") documents them.
const (
	// DefaultRetryInitial is the delay before the first restart after a transient failure.
	DefaultRetryInitial = 500 * time.Millisecond
	// DefaultRetryMax is the longest delay between restarts, jitter included.
	DefaultRetryMax = 30 * time.Second
	// DefaultGiveUpAfter is how long a pipeline keeps failing with no progress before it fails for good.
	DefaultGiveUpAfter = 5 * time.Minute
	// DefaultOpenTimeout bounds a stage's Open and Checkpoint.
	DefaultOpenTimeout = 2 * time.Minute
	// DefaultStallTimeout is how long a stage may hold unacknowledged records without acknowledging any
	// before it is reported and the pipeline restarted.
	DefaultStallTimeout = 2 * time.Minute
)

// Timings that are not settings.
const (
	// slowCallWarning is how often a slow Open or Checkpoint is reported while it runs.
	slowCallWarning = 10 * time.Second
	// healthyRun: an attempt that ran this long before failing counts as progress (the backoff and the
	// give-up clock start again).
	healthyRun = time.Minute
	// Plugin processes are asked every healthInterval whether they are serving; one that has not answered
	// for healthTimeout is reported as not responding and the pipeline restarts.
	healthInterval = 5 * time.Second
	healthTimeout  = 15 * time.Second
	// CloseTimeout bounds a stage's Close (when an attempt ends, and in sluice verify --repair); the process
	// is killed next anyway.
	CloseTimeout = 5 * time.Second
	// exitWait is how long the host waits for a plugin process whose connection broke to exit, to say why.
	exitWait = 2 * time.Second
)

// Retry is the restart policy after a transient failure: exponential backoff with jitter, capped, and a
// limit on how long failures may go on without progress.
type Retry struct {
	// Initial is the first delay (default DefaultRetryInitial); each next one doubles, ±50% jitter.
	Initial time.Duration
	// Max caps every delay, jitter included (default DefaultRetryMax).
	Max time.Duration
	// GiveUpAfter: when attempts have kept failing for this long with no record acknowledged by any stage,
	// the pipeline fails for good (default DefaultGiveUpAfter). Ignored when Forever is set.
	GiveUpAfter time.Duration
	// Forever: never give up on transient failures.
	Forever bool
}

func (r Retry) withDefaults() Retry {
	if r.Initial <= 0 {
		r.Initial = DefaultRetryInitial
	}
	if r.Max <= 0 {
		r.Max = DefaultRetryMax
	}
	r.Max = max(r.Max, r.Initial)
	if r.GiveUpAfter <= 0 {
		r.GiveUpAfter = DefaultGiveUpAfter
	}
	return r
}

// retrier applies a Retry policy to a run of consecutive failed attempts.
type retrier struct {
	policy Retry
	b      *backoff.ExponentialBackOff

	attempts int       // failed attempts since the last progress
	first    time.Time // when the first of them failed
	lastMsg  string    // the last error's message, to count repeats
	repeats  int       // how many attempts in a row failed with lastMsg
}

func newRetrier(r Retry) *retrier {
	r = r.withDefaults()
	return &retrier{policy: r, b: backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(r.Initial), backoff.WithMaxInterval(r.Max),
		backoff.WithMultiplier(2), backoff.WithRandomizationFactor(0.5), backoff.WithMaxElapsedTime(0))}
}

// progressed forgets the failures so far: the pipeline made progress since.
func (r *retrier) progressed() {
	r.b.Reset()
	r.attempts, r.repeats, r.lastMsg = 0, 0, ""
}

// failing reports whether the last attempt failed and nothing progressed since.
func (r *retrier) failing() bool { return r.attempts > 0 }

// failed records a failed attempt that ended at now and returns the delay before the next one, or giveUp
// when the policy says to stop trying.
func (r *retrier) failed(err error, now time.Time) (wait time.Duration, giveUp bool) {
	if r.attempts == 0 {
		r.first = now
	}
	r.attempts++
	if msg := err.Error(); msg == r.lastMsg {
		r.repeats++
	} else {
		r.lastMsg, r.repeats = msg, 1
	}
	if !r.policy.Forever && now.Sub(r.first) >= r.policy.GiveUpAfter {
		return 0, true
	}
	// The library's jitter may exceed its maximum interval by half: the cap holds after jitter.
	return min(r.b.NextBackOff(), r.policy.Max), false
}

// gaveUp wraps the last error into the message of a pipeline that stopped trying.
func (r *retrier) gaveUp(err error, now time.Time) error {
	return fmt.Errorf("gave up after %d attempts over %s with no record delivered (retry: give_up_after is %s; set retry: forever to keep trying): %w",
		r.attempts, now.Sub(r.first).Round(time.Second), r.policy.GiveUpAfter, err)
}
