package plugin

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// checkLines checks which lines the output holds (want true) and which it does not (want false).
func checkLines(t *testing.T, out string, lines []struct {
	want bool
	text string
}) {
	t.Helper()
	for _, tt := range lines {
		if strings.Contains(out, tt.text) != tt.want {
			t.Errorf("output contains %q = %v, want %v:\n%s", tt.text, !tt.want, tt.want, out)
		}
	}
}

func TestHCLogAdapter(t *testing.T) {
	var buf bytes.Buffer
	host := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})).With("plugin", "generate")
	l := newHCLog(host, false)
	l.Info("plugin started", "plugin", "/bin/generate", "pid", 7) // go-plugin's own: demoted to debug
	l.Error("plugin process exited", "plugin", "/bin/generate", "error", "exit status 2")
	l.Warn("plugin failed to exit gracefully")
	l.Warn("plugin did not exit when asked; killing it", "pid", 7) // protocol's own
	named := l.Named("generate")
	named.Warn("disk slow", "ms", 12) // the plugin's own line: kept as is
	// go-plugin decoded the JSON line into a map: any order, and its own timestamp appended.
	named.Info("connected", "timestamp", "2026-11-30T20:21:03.293Z", "user", "app", "host", "db", "attempt", 2)
	named.Error("[ERROR] a raw line the plugin marked as an error")
	// A panic: go-plugin passes each raw line at error level; protocol logs the one line.
	named.Error("panic: boom")
	named.Error("")
	named.Error("goroutine 1 [running]:")
	named.Error("main.main()")
	l.Error("plugin panicked", "panic", "boom (main.main at /src/main.go:3)")
	checkLines(t, buf.String(), []struct {
		want bool
		text string
	}{
		{true, `level=DEBUG msg="plugin started" plugin=generate path=/bin/generate pid=7`},
		{true, `level=DEBUG msg="plugin process exited" plugin=generate path=/bin/generate error="exit status 2"`},
		{true, `level=DEBUG msg="plugin failed to exit gracefully"`},
		{true, `level=WARN msg="plugin did not exit when asked; killing it" plugin=generate pid=7`},
		{true, `level=WARN msg="disk slow" plugin=generate ms=12`},
		{true, `level=INFO msg=connected plugin=generate attempt=2 host=db user=app` + "\n"},
		{true, `level=ERROR msg="[ERROR] a raw line the plugin marked as an error"`},
		{true, `level=DEBUG msg="panic: boom"`},
		{true, `level=DEBUG msg="goroutine 1 [running]:"`},
		{true, `level=DEBUG msg=main.main()`},
		{true, `level=ERROR msg="plugin panicked" plugin=generate panic="boom (main.main at /src/main.go:3)"`},
	})
	if n := strings.Count(buf.String(), "level=ERROR"); n != 2 {
		t.Errorf("%d error lines, want 2 (the plugin's [ERROR] line and the panic):\n%s", n, buf.String())
	}
}

func TestHCLogAdapterQuiet(t *testing.T) {
	var buf bytes.Buffer
	l := newHCLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), true)
	l.Named("x").Error("cannot start", "error", "no config")
	l.Warn("plugin did not exit when asked; killing it")
	if out := buf.String(); strings.Contains(out, "level=ERROR") || strings.Contains(out, "level=WARN") ||
		!strings.Contains(out, `level=DEBUG msg="cannot start" error="no config"`) {
		t.Errorf("a quiet logger logs above debug:\n%s", out)
	}
}

func TestStdoutLog(t *testing.T) {
	var buf bytes.Buffer
	w := &stdoutLog{log: slog.New(slog.NewTextHandler(&buf, nil)).With("plugin", "misbehave"), level: slog.LevelWarn}
	fmt.Fprint(w, "first li")
	fmt.Fprint(w, "ne\r\nsecond\n")
	fmt.Fprint(w, strings.Repeat("y", 3*maxStdoutLine)+"\n")
	fmt.Fprint(w, "never ended")
	out := buf.String()
	checkLines(t, out, []struct {
		want bool
		text string
	}{
		{true, `level=WARN msg="plugin wrote to stdout" plugin=misbehave line="first line"`},
		{true, `level=WARN msg="plugin wrote to stdout" plugin=misbehave line=second`},
		{true, `line=` + strings.Repeat("y", maxStdoutLine) + "…\n"},
		{false, "never ended"},
	})
}
