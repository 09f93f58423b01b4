package sdk

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLoggerLine checks the line format the host forwards: hclog's keys, and durations as text ("1.5s"),
// never as a number of nanoseconds.
func TestLoggerLine(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	saved := stderr
	stderr = f
	defer func() { stderr = saved }()
	Logger().Warn("retrying", "wait", 1500*time.Millisecond, "attempt", 3)
	data, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	if err := json.Unmarshal(data, &line); err != nil {
		t.Fatalf("not a JSON line: %q", data)
	}
	if line["@message"] != "retrying" || line["@level"] != "warn" || line["wait"] != "1.5s" || line["attempt"] != 3.0 {
		t.Fatalf("line %s", data)
	}
	if _, err := time.Parse("2006-01-02T15:04:05.000000Z07:00", line["@timestamp"].(string)); err != nil {
		t.Fatalf("@timestamp: %v", err)
	}
}
