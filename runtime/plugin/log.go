package plugin

import (
	"context"
	"io"
	"log"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter lets go-plugin, which logs through hclog, write to the host's slog logger: plugin log
// lines arrive with their level and attributes and are tagged with the plugin's name.
//
// go-plugin logs its own lifecycle (starting, exited) through the unnamed logger and the plugin's stderr
// lines through a named one. Its own info lines are demoted to debug (a plugin start is not news at info
// level), and its "plugin" attribute, a path, is renamed so it does not clash with the host's plugin name.
type hclogAdapter struct {
	l     *slog.Logger
	name  string
	named bool // carries the plugin's own lines
	args  []any
}

func newHCLog(l *slog.Logger) hclog.Logger { return &hclogAdapter{l: l} }

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
	if !a.named {
		if lv == slog.LevelInfo {
			lv = slog.LevelDebug
		}
		for i := 0; i+1 < len(args); i += 2 {
			if args[i] == "plugin" {
				args[i] = "path"
			}
		}
	}
	a.l.Log(context.Background(), lv, msg, args...)
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
	return &hclogAdapter{l: a.l.With(args...), name: a.name, named: a.named, args: append(append([]any(nil), a.args...), args...)}
}

// Named is called by go-plugin with the plugin binary's file name; the host already tagged the logger
// with the plugin's spec name, so the file name is only kept as Name.
func (a *hclogAdapter) Named(name string) hclog.Logger {
	return &hclogAdapter{l: a.l, name: name, named: true, args: a.args}
}
func (a *hclogAdapter) ResetNamed(name string) hclog.Logger { return a.Named(name) }
func (a *hclogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(a.l.Handler(), slog.LevelInfo)
}
func (a *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return a.StandardLogger(nil).Writer()
}
