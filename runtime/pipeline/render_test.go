package pipeline

import (
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/sdk/sdktest"
)

// seqFormatter renders 8-byte sequence positions as "<what> <n>".
type seqFormatter string

func (f seqFormatter) FormatPosition(pos record.Position) (string, error) {
	if len(pos) != 8 {
		return "", fmt.Errorf("not a sequence number: %x", []byte(pos))
	}
	return fmt.Sprintf("%s %d", f, seqOf(pos)), nil
}

type formattingSource struct {
	*countSource
	seqFormatter
}

type formattingBuffer struct {
	*memBuffer
	seqFormatter
}

// TestPositionsRenderedByPlugins: stages that render their positions have them rendered in the status (the
// final positions once the pipeline completed) and where the pipeline resumes in the log; stages that
// do not keep the host's rendering.
func TestPositionsRenderedByPlugins(t *testing.T) {
	for _, formatting := range []bool{true, false} {
		t.Run(fmt.Sprint("formatting=", formatting), func(t *testing.T) {
			f := newFixture(1000)
			if err := f.store.Put("p", "source", pos(99)); err != nil {
				t.Fatal(err)
			}
			starter := &fakeStarter{plugins: map[string]func() sdk.Plugin{"t": func() sdk.Plugin {
				p := sdk.Plugin{Spec: spec("t", false),
					NewSource: func() sdk.Source { return f.src() },
					NewBuffer: func() sdk.Buffer { return &memBuffer{w: f.bw} },
					NewSink:   func() sdk.Sink { return &worldSink{w: f.w} }}
				if formatting {
					p.NewSource = func() sdk.Source { return formattingSource{f.src(), "record"} }
					p.NewBuffer = func() sdk.Buffer { return formattingBuffer{&memBuffer{w: f.bw}, "entry"} }
				}
				return p
			}}}
			cfg := config(false, true)
			cfg.Buffer.Atomic = false // the host stores where the source resumes
			cfg.Retry = Retry{Initial: time.Millisecond, Max: 10 * time.Millisecond}
			var logs sdktest.Output
			p := New(cfg, starter, f.store, slog.New(slog.NewTextHandler(&logs, nil)))
			run(t, p)
			st := p.Status()
			if seqOf(st.Positions["source"]) != 999 || seqOf(st.Positions["buffer"]) != 899 {
				t.Fatalf("positions %x, want source 999 and buffer 899", st.Positions)
			}
			want := map[string]string{"source": "record 999", "buffer": "entry 899"}
			if !formatting {
				want = nil
			}
			if !maps.Equal(st.PositionTexts, want) {
				t.Errorf("PositionTexts = %v, want %v", st.PositionTexts, want)
			}
			after := "source_after=0000000000000063"
			if formatting {
				after = `source_after="record 99"`
			}
			if !strings.Contains(logs.String(), after) {
				t.Errorf("the log does not say %s:\n%s", after, logs.String())
			}
		})
	}
}
