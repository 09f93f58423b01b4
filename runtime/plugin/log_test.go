package plugin

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestHCLogAdapter(t *testing.T) {
	var buf bytes.Buffer
	host := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})).With("plugin", "generate")
	l := newHCLog(host)
	l.Info("plugin process exited", "plugin", "/bin/generate", "id", 7) // go-plugin's own: demoted to debug
	l.Error("plugin process exited", "plugin", "/bin/generate", "error", "killed")
	l.Named("generate").Warn("disk slow", "ms", 12) // the plugin's own line: kept as is
	out := buf.String()
	for _, tt := range []struct {
		want bool
		text string
	}{
		{false, `level=INFO msg="plugin process exited"`},
		{true, `level=ERROR msg="plugin process exited" plugin=generate path=/bin/generate error=killed`},
		{true, `level=WARN msg="disk slow" plugin=generate ms=12`},
	} {
		if strings.Contains(out, tt.text) != tt.want {
			t.Errorf("output contains %q = %v, want %v:\n%s", tt.text, !tt.want, tt.want, out)
		}
	}
}
