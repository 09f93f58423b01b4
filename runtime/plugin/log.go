package plugin

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter lets go-plugin, which logs through hclog, write to the host's slog logger: plugin log
// lines arrive with their level and attributes and are tagged with the plugin's name.
//
// go-plugin logs its own lifecycle (starting, exited) through the unnamed logger and the plugin's stderr
// lines through a named one. Its own info lines are demoted to debug (a plugin start is not news at info
// level), and so are its "plugin process exited" and "plugin failed to exit gracefully" lines: the host
// reports how a plugin ended where it matters (protocol.Conn.Exit), and protocol.Conn.Kill warns itself
// when it has to kill a plugin. Its "plugin" attribute, a path, is renamed so it does not clash with the
// host's plugin name.
//
// When a plugin panics, go-plugin passes every raw line of the panic and its stack at error level;
// protocol logs one error line "plugin panicked" with the message and first frame instead, so the raw
// lines are demoted to debug from the first "panic: " or "fatal error: " line on, as go-plugin itself
// decides what belongs to a panic.
type hclogAdapter struct {
	l       *slog.Logger
	name    string
	named   bool // carries the plugin's own lines
	quiet   bool // everything at debug level (discovery probes)
	inPanic *atomic.Bool
	args    []any
}

// newHCLog returns the hclog logger for one plugin process. quiet demotes every line to debug.
func newHCLog(l *slog.Logger, quiet bool) hclog.Logger {
	return &hclogAdapter{l: l, quiet: quiet, inPanic: new(atomic.Bool)}
}

func toSlog(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	lv := toSlog(level)
	if a.named {
		// A raw stderr line (go-plugin passes no attributes with those) that starts or continues a panic.
		if len(args) == 0 && lv == slog.LevelError &&
			(a.inPanic.Load() || strings.HasPrefix(msg, "panic: ") || strings.HasPrefix(msg, "fatal error: ")) {
			a.inPanic.Store(true)
			lv = slog.LevelDebug
		}
		args = orderPluginArgs(args)
	} else {
		switch {
		case lv == slog.LevelInfo, msg == "plugin process exited", msg == "plugin failed to exit gracefully":
			lv = slog.LevelDebug
		}
		for i := 0; i+1 < len(args); i += 2 {
			if args[i] == "plugin" {
				args[i] = "path"
			}
		}
	}
	if a.quiet {
		lv = slog.LevelDebug
	}
	a.l.Log(context.Background(), lv, msg, args...)
}

// orderPluginArgs puts the attributes of a plugin's JSON log line in a stable order. go-plugin decodes
// the line into a map, so the plugin's own order is lost and would otherwise change from line to line;
// sorted by key, the same line always reads the same. go-plugin's "timestamp" (the plugin's clock, a
// few microseconds before the host's own time on the same line) is dropped.
func orderPluginArgs(args []any) []any {
	type kv struct {
		k string
		v any
	}
	pairs := make([]kv, 0, len(args)/2)
	for i := 0; i+1 < len(args); i += 2 {
		k, _ := args[i].(string)
		if k == "timestamp" {
			continue
		}
		pairs = append(pairs, kv{k, args[i+1]})
	}
	sort.SliceStable(pairs, func(i, j int) bool { return pairs[i].k < pairs[j].k })
	out := make([]any, 0, 2*len(pairs))
	for _, p := range pairs {
		out = append(out, p.k, p.v)
	}
	return out
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }
func (a *hclogAdapter) enabled(l slog.Level) bool {
	return a.l.Enabled(context.Background(), l)
}
func (a *hclogAdapter) IsTrace() bool        { return a.enabled(slog.LevelDebug) }
func (a *hclogAdapter) IsDebug() bool        { return a.enabled(slog.LevelDebug) }
func (a *hclogAdapter) IsInfo() bool         { return a.enabled(slog.LevelInfo) }
func (a *hclogAdapter) IsWarn() bool         { return a.enabled(slog.LevelWarn) }
func (a *hclogAdapter) IsError() bool        { return a.enabled(slog.LevelError) }
func (a *hclogAdapter) ImpliedArgs() []any   { return a.args }
func (a *hclogAdapter) Name() string         { return a.name }
func (a *hclogAdapter) SetLevel(hclog.Level) {}
func (a *hclogAdapter) GetLevel() hclog.Level {
	switch {
	case a.enabled(slog.LevelDebug):
		return hclog.Debug
	case a.enabled(slog.LevelInfo):
		return hclog.Info
	case a.enabled(slog.LevelWarn):
		return hclog.Warn
	}
	return hclog.Error
}
func (a *hclogAdapter) With(args ...any) hclog.Logger {
	b := *a
	b.l = a.l.With(args...)
	b.args = append(append([]any(nil), a.args...), args...)
	return &b
}

// Named is called by go-plugin with the plugin binary's file name; the host already tagged the logger
// with the plugin's spec name, so the file name is only kept as Name.
func (a *hclogAdapter) Named(name string) hclog.Logger {
	b := *a
	b.name, b.named = name, true
	return &b
}
func (a *hclogAdapter) ResetNamed(name string) hclog.Logger { return a.Named(name) }
func (a *hclogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(a.l.Handler(), slog.LevelInfo)
}
func (a *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return a.StandardLogger(nil).Writer()
}

// maxStdoutLine is the longest stdout line of a plugin that is logged; longer ones are cut and end in "…".
const maxStdoutLine = 1000

// stdoutLog logs each line a plugin prints on its stdout ("plugin wrote to stdout", with the line) at
// level: the stdout of a plugin whose output is not meant for the host's stdout never reaches it.
type stdoutLog struct {
	log   *slog.Logger
	level slog.Level
	mu    sync.Mutex
	buf   []byte
	cut   bool
}

func (w *stdoutLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		line, rest, complete := bytes.Cut(p, []byte{'\n'})
		if room := maxStdoutLine - len(w.buf); len(line) > room {
			line, w.cut = line[:max(room, 0)], true
		}
		w.buf = append(w.buf, line...)
		if !complete {
			break
		}
		l := strings.TrimSuffix(string(w.buf), "\r")
		if w.cut {
			l += "…"
		}
		w.buf, w.cut = w.buf[:0], false
		w.log.Log(context.Background(), w.level, "plugin wrote to stdout", "line", l)
		p = rest
	}
	return n, nil
}
