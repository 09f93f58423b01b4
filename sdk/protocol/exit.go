package protocol

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"syscall"
)

// Exit says how a plugin process ended.
type Exit struct {
	// Code is the exit status, or -1 when a signal ended the process.
	Code int
	// Signal names the signal that ended the process ("SIGKILL"), or is "".
	Signal string
	// Panic is the message of the panic or fatal error that ended the process, with the first frame of the
	// panicking goroutine outside the Go runtime: `misbehave: panic in open (main.(*config).act at
	// /src/main.go:92)`. A fatal error keeps its prefix (`fatal error: concurrent map writes (…)`), as does
	// a signal the Go runtime reports (`SIGSEGV: segmentation violation (…)`). "" when it did not panic.
	Panic string
	// Stderr holds the last lines (at most StderrLines, each at most MaxStderrLine bytes) the process wrote
	// to its standard error, raw: log lines in JSON as the plugin wrote them.
	Stderr []string
}

// StderrLines is how many of a plugin's last stderr lines an Exit keeps.
const StderrLines = 20

// MaxStderrLine is the longest stderr line an Exit keeps; longer lines are cut and end in "…".
const MaxStderrLine = 1000

// String says in one line how the process ended: `panicked: <message> (<frame>)`, `crashed: fatal error:
// <message> (<frame>)`, `was killed by signal SIGKILL`, or `exited with status 7: <last stderr line>`.
func (e *Exit) String() string {
	switch {
	case e == nil:
		return "is running"
	case e.Panic != "" && (strings.HasPrefix(e.Panic, fatalPrefix) || runtimeSignal.MatchString(e.Panic)):
		return "crashed: " + e.Panic
	case e.Panic != "":
		return "panicked: " + e.Panic
	case e.Signal != "":
		return "was killed by signal " + e.Signal
	}
	s := fmt.Sprintf("exited with status %d", e.Code)
	if l := e.LastLine(); l != "" {
		s += ": " + l
	}
	return s
}

// LastLine returns the last non-empty stderr line in a form for people: a JSON log line is shown as its
// message followed by its attributes (key=value), other lines as they are. It returns "" when the process
// wrote nothing to stderr.
func (e *Exit) LastLine() string {
	if e == nil {
		return ""
	}
	for _, l := range slices.Backward(e.Stderr) {
		if l = strings.TrimSpace(l); l != "" {
			return readable(l)
		}
	}
	return ""
}

// readable turns a JSON log line (hclog's or the SDK's: @message, @level, @timestamp…) into "message
// key=value …"; any other line is returned as it is.
func readable(line string) string {
	if !strings.HasPrefix(line, "{") {
		return line
	}
	var m map[string]any
	if json.Unmarshal([]byte(line), &m) != nil {
		return line
	}
	msg, ok := m["@message"].(string)
	if !ok {
		return line
	}
	var keys []string
	for k := range m {
		if !strings.HasPrefix(k, "@") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		v, _ := json.Marshal(m[k])
		if s, ok := m[k].(string); ok && !strings.ContainsAny(s, " \t\"=") && s != "" {
			v = []byte(s)
		}
		msg += " " + k + "=" + string(v)
	}
	return msg
}

// exitOf builds the Exit of a process that has been waited for, with what stderr captured.
func exitOf(ps *os.ProcessState, t *stderrTail) *Exit {
	e := &Exit{Code: -1}
	if ps != nil {
		e.Code = ps.ExitCode()
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			e.Code = -1
			e.Signal = signalName(ws.Signal())
		}
	}
	e.Panic, e.Stderr = t.snapshot()
	return e
}
