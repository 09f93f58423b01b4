package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/sdk/protocol"
)

// stage is one running plugin instance of an attempt, as messages name it: "sink kafka (pid 4242)".
type stage struct {
	role   string // "source", "buffer", "sink" or "dead-letter sink"
	plugin string
	conn   *protocol.Conn
	// laned is set for the sinks of a pipeline with ordered: false; lane is then the sink's lane.
	laned bool
	lane  int
}

func (s *stage) String() string {
	if s == nil {
		return "stage"
	}
	name := s.role + " " + s.plugin
	if s.laned {
		name += fmt.Sprintf(" lane %d", s.lane)
	}
	if pid := s.conn.Pid(); pid > 0 {
		return fmt.Sprintf("%s (pid %d)", name, pid)
	}
	return name
}

// StageError is a failure of one stage: which stage, what the host was doing with it, and why. When the
// plugin's process died, Exit says how (its status or signal, its panic, its last stderr lines) and the
// error's message says it instead of the broken connection.
type StageError struct {
	// Stage names the stage: "sink kafka (pid 4242)".
	Stage string
	// Role is the stage's role: "source", "buffer", "sink" or "dead-letter sink".
	Role string
	// Doing is what the host was doing: "opening", "writing", "reading"…
	Doing string
	// Exit is how the plugin's process ended, when it did; nil otherwise.
	Exit *protocol.Exit
	Err  error
}

func (e *StageError) Error() string {
	switch {
	case e.Exit != nil && e.Doing == "running":
		return fmt.Sprintf("%s %s", e.Stage, e.Exit)
	case e.Exit != nil:
		return fmt.Sprintf("%s %s (while %s)", e.Stage, e.Exit, e.Doing)
	}
	var ot *OpenTimeoutError
	if errors.As(e.Err, &ot) {
		return fmt.Sprintf("%s %s", e.Stage, ot) // "sink kafka (pid 4242) did not finish Open within open_timeout (2m0s)"
	}
	return fmt.Sprintf("%s: %s: %v", e.Stage, e.Doing, e.Err)
}

func (e *StageError) Unwrap() error { return e.Err }

// OpenTimeoutError is a call that sets a stage up (Open, Checkpoint) cut at open_timeout. Its message is
// what happened, once: the transport's words for the cut (a deadline, a reset stream) add nothing.
type OpenTimeoutError struct {
	// Method is the call: "Open" or "Checkpoint".
	Method string
	// Timeout is open_timeout.
	Timeout time.Duration
	// Err is what the call returned when it was cut.
	Err error
}

func (e *OpenTimeoutError) Error() string {
	return fmt.Sprintf("did not finish %s within open_timeout (%s)", e.Method, e.Timeout)
}

// Unwrap returns what the call returned.
func (e *OpenTimeoutError) Unwrap() error { return e.Err }

// fail attributes err, which a call into s returned while doing, to s. A broken connection is explained
// by the fate of the plugin's process when it died. Cancellation passes through unchanged: its cause is
// reported where it arose.
func (s *stage) fail(doing string, err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	var se *StageError
	if errors.As(err, &se) {
		return err
	}
	e := &StageError{Stage: s.String(), Role: s.roleName(), Doing: doing, Err: err}
	if s != nil && (errors.Is(err, protocol.ErrConnectionLost) || errors.Is(err, protocol.ErrStreamEnded)) {
		e.Exit = s.conn.WaitExit(exitWait)
	}
	return e
}

// exited is the error for a plugin process that ended while its stage ran.
func (s *stage) exited(exit *protocol.Exit) error {
	return &StageError{Stage: s.String(), Role: s.roleName(), Doing: "running", Exit: exit, Err: protocol.ErrConnectionLost}
}

// unresponsive is the error for a plugin process that stopped answering health checks.
func (s *stage) unresponsive(d time.Duration, err error) error {
	return &StageError{Stage: s.String(), Role: s.roleName(), Doing: "checking its health",
		Err: fmt.Errorf("%w for %s (stopped or hung): %w", errUnresponsive, d.Round(time.Second), err)}
}

// roleName is s's role, or "" for no stage.
func (s *stage) roleName() string {
	if s == nil {
		return ""
	}
	return s.role
}
