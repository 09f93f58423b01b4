package kafka

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/sdk/sdktest"
)

// TestTail runs the kafka-tail command against what the sink wrote: it prints the committed messages
// and exits after -n of them.
func TestTail(t *testing.T) {
	bin, remove, err := sdktest.Build("./tools/kafka-tail")
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	b := fakeBackend(t)
	topic := newTopic(t, b.brokers, 1)
	s := openSink(t, "tail", settingsFor(b, topic, map[string]any{"headers": []any{"*"}}), false)
	batch := makeBatch(0, 3)
	batch.Records[2].Meta = batch.Records[2].Meta.Set(record.MetaRoute, topic)
	if err := s.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-brokers", strings.Join(b.brokers, ","), "-topics", topic, "-n", "3", "-idle", "20s").CombinedOutput()
	if err != nil {
		t.Fatalf("kafka-tail: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := topic + `/0@0 key="key-0" headers=[sdktest.i=0] {"i":0,"text":"record 0"}`
	if len(lines) != 3 || lines[0] != want {
		t.Fatalf("kafka-tail printed:\n%s\nwant 3 lines, the first:\n%s", out, want)
	}
}
