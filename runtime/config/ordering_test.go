package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOrderingKeys(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.yaml")
	content := `version: 1
pipelines:
  - id: default
    source: {plugin: generate}
    sink: {plugin: discard}
  - id: ordered
    source: {plugin: generate}
    sink: {plugin: discard}
    ordered: true
  - id: lanes-default
    source: {plugin: generate}
    buffer: {plugin: memory}
    sink: {plugin: queue, settings: {brokers: ["k:9092"]}}
    ordered: false
  - id: lanes-8
    source: {plugin: generate}
    buffer: {plugin: memory}
    sink: {plugin: queue, settings: {brokers: ["k:9092"]}}
    ordered: false
    lanes: 8
`
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := testLoader().Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		ordered bool
		lanes   int
	}{{true, 1}, {true, 1}, {false, DefaultLanes}, {false, 8}}
	for i, w := range want {
		if p := f.Pipelines[i]; p.Ordered != w.ordered || p.Lanes != w.lanes {
			t.Errorf("pipeline %s: ordered %v lanes %d; want %v %d", p.ID, p.Ordered, p.Lanes, w.ordered, w.lanes)
		}
	}
	var out strings.Builder
	if err := f.Print(&out); err != nil {
		t.Fatal(err)
	}
	// Print shows the keys only for unordered pipelines, with the default applied.
	if got := strings.Count(out.String(), "ordered: false"); got != 2 {
		t.Errorf("Print shows ordered: false %d times, want 2:\n%s", got, out.String())
	}
	for _, l := range []string{"lanes: 4\n", "lanes: 8\n"} {
		if !strings.Contains(out.String(), l) {
			t.Errorf("Print does not show %q:\n%s", l, out.String())
		}
	}
	if strings.Contains(out.String(), "ordered: true") {
		t.Errorf("Print shows ordered: true for ordered pipelines:\n%s", out.String())
	}
}
