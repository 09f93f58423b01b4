package discard_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/plugins/discard"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/sdk/sdktest"
)

var pluginBinary string

func TestMain(m *testing.M) { sdktest.Main(m, "./cmd/discard", &pluginBinary) }

func TestAcceptance(t *testing.T) {
	sdktest.Sink(t, discard.Plugin(), sdktest.SinkConfig{Binary: pluginBinary})
}

func TestCounts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		batches []int
		want    int64
	}{
		{"none", nil, 0},
		{"empty batch", []int{0}, 0},
		{"several", []int{3, 1024, 0, 7}, 1034},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &discard.Sink{}
			if err := s.Open(context.Background(), sdk.OpenRequest{}); err != nil {
				t.Fatal(err)
			}
			for _, n := range tc.batches {
				if err := s.Write(context.Background(), record.Batch{Records: make([]record.Record, n)}); err != nil {
					t.Fatal(err)
				}
			}
			if got := s.Records(); got != tc.want {
				t.Fatalf("Records() = %d, want %d", got, tc.want)
			}
			if err := s.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCloseLogsCounts runs the binary as the host does and checks that the totals logged at Close reach
// the host's log, with their attributes.
func TestCloseLogsCounts(t *testing.T) {
	var logs sdktest.Output
	c, err := protocol.Launch(protocol.LaunchConfig{
		Path:   pluginBinary,
		Logger: hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Debug}),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snk := c.Sink()
	if err := snk.Open(ctx, protocol.OpenRequest{Pipeline: "p1"}); err != nil {
		t.Fatal(err)
	}
	ws, err := snk.Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := ws.Send(protocol.NewBatch(make([]record.Record, 5), record.Position("p"))); err != nil {
			t.Fatal(err)
		}
	}
	if err := ws.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := ws.Recv(); err != nil {
			break
		}
	}
	if err := snk.Close(ctx); err != nil {
		t.Fatal(err)
	}
	c.Kill() // waits for the plugin's stderr to be drained
	out := logs.String()
	for _, want := range []string{"discard: closed", "records=15"} {
		if !strings.Contains(out, want) {
			t.Errorf("host log lacks %q:\n%s", want, out)
		}
	}
}
