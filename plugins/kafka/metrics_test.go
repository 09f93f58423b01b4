package kafka

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
)

// TestMetrics: the sink times each transaction's commit and counts the bytes it wrote.
func TestMetrics(t *testing.T) {
	b := fakeBackend(t)
	topic := newTopic(t, b.brokers, 1)
	m := sdk.NewMetrics()
	s := &Sink{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.Open(ctx, sdk.OpenRequest{Pipeline: "metrics", Settings: sdk.Settings(settingsFor(b, topic, nil)), Metrics: m}); err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	checkpoint(t, s)
	want := 0
	for _, first := range []int{0, 5} {
		batch := makeBatch(first, 5)
		for i := range batch.Records {
			batch.Records[i].Meta = nil // no headers
			want += len(batch.Records[i].Key) + len(batch.Records[i].Payload)
		}
		if err := s.Write(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	text, _, err := m.Text()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"transaction_commit_seconds_count 2\n", "produced_bytes_total " + strconv.Itoa(want) + "\n"} {
		if !strings.Contains(string(text), line) {
			t.Errorf("metrics lack %q:\n%s", line, text)
		}
	}
}
