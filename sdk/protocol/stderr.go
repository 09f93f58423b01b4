package protocol

import (
	"bytes"
	"regexp"
	"strings"
	"sync"
)

// stderrTail keeps the last StderrLines lines a plugin process wrote to its standard error and recognises
// a panic or fatal error in them. It is fed by two writers: the raw stderr of the process (go-plugin's
// ClientConfig.Stderr, where the Go runtime writes panics and the SDK its log lines) and what the plugin
// wrote to os.Stderr after go-plugin replaced it with a pipe (ClientConfig.SyncStderr). Lines of the two
// are kept in the order they arrive.
type stderrTail struct {
	mu       sync.Mutex
	lines    []string
	panic    panicParser
	reported bool
	// onPanic is called once, outside the lock, when a panic's message and first frame are known (or the
	// process ended before its first frame was seen).
	onPanic func(text string)
}

func newStderrTail(onPanic func(string)) *stderrTail {
	return &stderrTail{onPanic: onPanic}
}

// raw returns the writer for the process's raw stderr.
func (t *stderrTail) raw() *lineWriter {
	return &lineWriter{line: func(l string) { t.add(l, true) }}
}

// forwarded returns the writer for what the plugin wrote to os.Stderr after go-plugin took it over; each
// complete line is also passed to also.
func (t *stderrTail) forwarded(also func(string)) *lineWriter {
	return &lineWriter{line: func(l string) {
		t.add(l, false)
		also(l)
	}}
}

func (t *stderrTail) add(l string, raw bool) {
	t.mu.Lock()
	if len(t.lines) == StderrLines {
		copy(t.lines, t.lines[1:])
		t.lines = t.lines[:StderrLines-1]
	}
	t.lines = append(t.lines, l)
	report := ""
	if raw && t.panic.line(l) && !t.reported {
		t.reported = true
		report = t.panic.text()
	}
	t.mu.Unlock()
	if report != "" && t.onPanic != nil {
		t.onPanic(report)
	}
}

// finish reports a panic whose first frame never came, once the process has ended.
func (t *stderrTail) finish() {
	t.mu.Lock()
	report := ""
	if t.panic.state != panicNone && !t.reported {
		t.reported = true
		report = t.panic.text()
	}
	t.mu.Unlock()
	if report != "" && t.onPanic != nil {
		t.onPanic(report)
	}
}

// snapshot returns the panic text ("" for none) and a copy of the kept lines.
func (t *stderrTail) snapshot() (string, []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := ""
	if t.panic.state != panicNone {
		p = t.panic.text()
	}
	return p, append([]string(nil), t.lines...)
}

// lineWriter splits what is written to it into lines (without the newline; "\r\n" counts as one), cutting
// each at MaxStderrLine bytes, and passes every complete line to line. A last line without a newline is
// never passed on. It is used by one goroutine at a time.
type lineWriter struct {
	line func(string)
	buf  []byte
	cut  bool
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if room := MaxStderrLine - len(w.buf); len(chunk) > room {
			chunk, w.cut = chunk[:max(room, 0)], true
		}
		w.buf = append(w.buf, chunk...)
		if i < 0 {
			break
		}
		l := strings.TrimSuffix(string(w.buf), "\r")
		if w.cut {
			l += "…"
		}
		w.buf, w.cut = w.buf[:0], false
		w.line(l)
		p = p[i+1:]
	}
	return n, nil
}

const (
	panicPrefix = "panic: "
	fatalPrefix = "fatal error: "
)

// runtimeSignal matches the first line the Go runtime writes when a signal ends the program
// ("SIGSEGV: segmentation violation", "SIGQUIT: quit").
var runtimeSignal = regexp.MustCompile(`^SIG[A-Z0-9]+: `)

// panicParser reads the Go runtime's report of a panic or fatal error, line by line:
//
//	panic: misbehave: panic in open
//
//	goroutine 23 [running]:
//	main.(*config).act(0xc000120000, {0x8c1c9f, 0x5}, …)
//		/src/misbehave/main.go:92 +0x3a5
//	…
//
// It keeps the message's first line and the first frame of the first goroutine listed (the one that
// panicked) that is not in the Go runtime.
type panicParser struct {
	state panicState
	msg   string
	fn    string // the function of the frame being read
	frame string // "fn at file:line"
}

type panicState int

const (
	panicNone    panicState = iota
	panicMessage            // the message was seen; waiting for the goroutine header
	panicFrames             // reading the panicking goroutine's frames
	panicDone               // the frame was found, or the goroutine's frames ended without one
)

// line reads one stderr line and reports whether the panic report is now complete.
func (p *panicParser) line(l string) bool {
	switch p.state {
	case panicNone:
		switch {
		case strings.HasPrefix(l, panicPrefix):
			p.msg = strings.TrimPrefix(l, panicPrefix)
			// A panic raised again after recover: "panic: X [recovered]" (Go 1.23+: "[recovered, repanicked]").
			if i := strings.LastIndex(p.msg, " [recovered"); i > 0 && strings.HasSuffix(p.msg, "]") {
				p.msg = p.msg[:i]
			}
		case strings.HasPrefix(l, fatalPrefix), runtimeSignal.MatchString(l):
			p.msg = l
		default:
			return false
		}
		p.state = panicMessage
	case panicMessage:
		if strings.HasPrefix(l, "goroutine ") && strings.HasSuffix(l, ":") {
			p.state = panicFrames
		}
	case panicFrames:
		switch {
		case l == "", strings.HasPrefix(l, "created by "), strings.HasPrefix(l, "goroutine "):
			p.state = panicDone
			return true
		case strings.HasPrefix(l, "\t"):
			if p.fn == "" || inRuntime(p.fn) {
				return false
			}
			loc := strings.TrimPrefix(l, "\t")
			if i := strings.LastIndex(loc, " +0x"); i > 0 {
				loc = loc[:i]
			}
			p.frame = p.fn + " at " + loc
			p.state = panicDone
			return true
		default:
			p.fn = l
			// The arguments are the last parenthesised group; they hold no parentheses themselves.
			if i := strings.LastIndex(l, "("); i > 0 {
				p.fn = l[:i]
			}
		}
	}
	return false
}

// inRuntime reports whether fn is the Go runtime's (a frame users did not write): runtime.gopanic,
// panic(…) as a re-panic shows it, runtime/debug…, internal/runtime/maps…
func inRuntime(fn string) bool {
	return fn == "panic" || strings.HasPrefix(fn, "runtime.") || strings.HasPrefix(fn, "runtime/") ||
		strings.HasPrefix(fn, "internal/")
}

// text is the message with the frame, "msg (fn at file:line)", or the message alone.
func (p *panicParser) text() string {
	if p.frame == "" {
		return p.msg
	}
	return p.msg + " (" + p.frame + ")"
}
