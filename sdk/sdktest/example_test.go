package sdktest_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/sdk/sdktest"
)

// notes is the tiny sink's destination: lines of text per notebook, kept in memory.
var notes = struct {
	sync.Mutex
	books map[string][]string
}{books: map[string][]string{}}

// notesPlugin serves a sink that appends "op key payload" lines to the notebook named by its settings.
func notesPlugin() sdk.Plugin {
	return sdk.Plugin{
		Spec: sdk.Spec{Name: "notes", Version: "0.1.0", Summary: "writes records as lines of a notebook",
			Sink: &sdk.Stage{Summary: "appends one line per record", Settings: []sdk.Setting{
				{Name: "book", Type: sdk.TypeString, Required: true, Doc: "The notebook to write to."},
			}}},
		NewSink: func() sdk.Sink { return &notesSink{} },
	}
}

type notesSink struct {
	sdk.UnimplementedSink
	book string
}

func (s *notesSink) Open(_ context.Context, req sdk.OpenRequest) error {
	var cfg struct {
		Book string `setting:"book"`
	}
	if err := req.Settings.Decode(&cfg); err != nil {
		return err
	}
	s.book = cfg.Book
	return nil
}

func (s *notesSink) Write(_ context.Context, b record.Batch) error {
	notes.Lock()
	defer notes.Unlock()
	for _, r := range b.Records {
		if r.Op != record.OpHeartbeat {
			notes.books[s.book] = append(notes.books[s.book], fmt.Sprintf("%s %s %s", r.Op, r.Key, r.Payload))
		}
	}
	return nil
}

// testNotesSink is what a plugin's test does: run the suite with settings naming a fresh destination per
// check, and verify that the destination holds what was written. (TestExampleSink runs it.)
func testNotesSink(t *testing.T) {
	sdktest.Sink(t, notesPlugin(), sdktest.SinkConfig{
		Settings: func(t *testing.T) map[string]any { return map[string]any{"book": t.Name()} },
		Verify: func(t *testing.T, settings map[string]any, written []record.Record) {
			notes.Lock()
			got := slices.Clone(notes.books[settings["book"].(string)])
			notes.Unlock()
			if len(got) != len(written) {
				t.Fatalf("the notebook has %d lines, want %d", len(got), len(written))
			}
			for i, r := range written {
				if want := fmt.Sprintf("%s %s %s", r.Op, r.Key, r.Payload); got[i] != want {
					t.Fatalf("line %d: %q, want %q", i, got[i], want)
				}
			}
		},
	})
}

// A sink run through the suite: notesPlugin is a whole sink, testNotesSink the test that checks it over
// the plugin protocol. The suite writes records made by DefaultRecord; here the first three go straight
// to the sink.
func Example_sink() {
	s := notesPlugin().NewSink()
	ctx := context.Background()
	if err := s.Open(ctx, sdk.OpenRequest{Settings: sdk.Settings{"book": "example"}}); err != nil {
		panic(err)
	}
	recs := []record.Record{sdktest.DefaultRecord(0), sdktest.DefaultRecord(1), sdktest.DefaultRecord(2)}
	if err := s.Write(ctx, record.Batch{Records: recs}); err != nil {
		panic(err)
	}
	notes.Lock()
	defer notes.Unlock()
	for _, line := range notes.books["example"] {
		fmt.Println(line)
	}
	// Output:
	// insert key-0 {"i":0,"text":"record 0"}
	// update key-1 {"i":1,"text":"record 1"}
	// replace key-2 {"i":2,"text":"record 2"}
}
