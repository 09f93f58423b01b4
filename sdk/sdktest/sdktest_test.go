package sdktest_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/sdk/sdktest"
)

// The suite is tested against small reference plugins: correct ones must pass, and each broken variant
// must fail with the message that names its fault.

func pos8(n uint64) record.Position { return binary.BigEndian.AppendUint64(nil, n) }

// bugs switch on one fault in the reference plugins.
type bugs struct {
	ignoreAfter     bool // source and buffer: resume from the start
	dupPositions    bool // source: two records share a position
	endEarly        bool // source: the data ends before the records the config promises
	leak            bool // source: Open starts a goroutine that never ends
	random          bool // source: payloads differ between reads
	recordPosition  bool // sink: stores the last record's position, not the batch's
	volatile        bool // sink: the checkpoint dies with the instance
	writeHeartbeats bool // sink: writes heartbeat records as data
	noCheckpoint    bool // buffer: Checkpoint always nil

	retain bool // buffer: not a fault: Ack trims nothing (a buffer with its own retention)
}

var nameSetting = []sdk.Setting{{Name: "name", Type: sdk.TypeString, Required: true, Doc: "Names the test's data."}}

func refPlugin(b bugs) sdk.Plugin {
	return sdk.Plugin{
		Spec: sdk.Spec{Name: "ref", Version: "1", Summary: "reference plugin for the suite's tests",
			Source: &sdk.Stage{Summary: "counts", Settings: []sdk.Setting{
				{Name: "count", Type: sdk.TypeInt, Default: "0", Doc: "Records, then done; 0: unlimited."}}},
			Sink:   &sdk.Stage{Summary: "stores in memory", Settings: nameSetting, Capabilities: sdk.Capabilities{AtomicPosition: true}},
			Buffer: &sdk.Stage{Summary: "queues in memory", Settings: nameSetting, Capabilities: sdk.Capabilities{AtomicPosition: true}},
		},
		NewSource: func() sdk.Source { return &refSource{bugs: b} },
		NewSink:   func() sdk.Sink { return &refSink{bugs: b} },
		NewBuffer: func() sdk.Buffer { return &refBuffer{bugs: b} },
	}
}

// ---- source: record n has position n and payload {"n":n} ----

type refSource struct {
	sdk.UnimplementedSource
	bugs        bugs
	next, count uint64
	max         int
}

func (s *refSource) Open(_ context.Context, req sdk.OpenRequest) error {
	var cfg struct {
		Count uint64 `setting:"count"`
	}
	if err := req.Settings.Decode(&cfg); err != nil {
		return err
	}
	s.count, s.max = cfg.Count, req.MaxBatchRecords
	if s.bugs.endEarly {
		s.count /= 2
	}
	if req.After != nil && !s.bugs.ignoreAfter {
		s.next = binary.BigEndian.Uint64(req.After) + 1
	}
	if s.bugs.leak {
		go func() { select {} }()
	}
	return nil
}

func (s *refSource) Read(context.Context) ([]record.Record, error) {
	if s.count > 0 && s.next >= s.count {
		return nil, sdk.ErrDone
	}
	var recs []record.Record
	for ; len(recs) < 3 && (s.count == 0 || s.next < s.count); s.next++ {
		p := s.next
		if s.bugs.dupPositions && p == 10 {
			p = 9
		}
		payload := `{"n":` + strconv.FormatUint(s.next, 10) + `}`
		if s.bugs.random {
			payload = `{"n":` + strconv.FormatUint(s.next, 10) + `,"t":` + strconv.FormatInt(time.Now().UnixNano(), 10) + `}`
		}
		recs = append(recs, record.Record{Position: pos8(p), Op: record.OpInsert, Payload: []byte(payload), Encoding: record.EncodingJSON})
	}
	return recs, nil
}

// ---- sink and buffer: data kept per "name", across instances ----

type store struct {
	recs []record.Record // sink: written records; buffer: queued records with buffer positions
	cp   record.Position
	seq  uint64 // buffer: last sequence number given out
}

var stores = struct {
	sync.Mutex
	m map[string]*store
}{m: map[string]*store{}}

func storeFor(settings sdk.Settings) *store {
	name, _ := settings["name"].(string)
	stores.Lock()
	defer stores.Unlock()
	if stores.m[name] == nil {
		stores.m[name] = &store{}
	}
	return stores.m[name]
}

func clone(r record.Record) record.Record {
	r.Position, r.Key, r.Payload, r.Meta = slices.Clone(r.Position), slices.Clone(r.Key), slices.Clone(r.Payload), slices.Clone(r.Meta)
	return r
}

type refSink struct {
	sdk.UnimplementedSink
	bugs  bugs
	st    *store
	local record.Position
}

func (s *refSink) Open(_ context.Context, req sdk.OpenRequest) error {
	s.st = storeFor(req.Settings)
	return nil
}

func (s *refSink) Checkpoint(context.Context) (record.Position, error) {
	if s.bugs.volatile {
		return s.local, nil
	}
	stores.Lock()
	defer stores.Unlock()
	return s.st.cp.Clone(), nil
}

func (s *refSink) Write(_ context.Context, b record.Batch) error {
	stores.Lock()
	defer stores.Unlock()
	for _, r := range b.Records {
		if r.Op != record.OpHeartbeat || s.bugs.writeHeartbeats {
			s.st.recs = append(s.st.recs, clone(r))
		}
	}
	cp := b.Position.Clone()
	if s.bugs.recordPosition && len(b.Records) > 0 {
		cp = b.Records[len(b.Records)-1].Position.Clone()
	}
	if s.bugs.volatile {
		s.local = cp
	} else {
		s.st.cp = cp
	}
	return nil
}

func verifySink(t *testing.T, settings map[string]any, written []record.Record) {
	st := storeFor(settings)
	stores.Lock()
	defer stores.Unlock()
	if len(st.recs) != len(written) {
		t.Fatalf("the sink stored %d records, want %d", len(st.recs), len(written))
	}
	for i := range written {
		if !bytes.Equal(st.recs[i].Payload, written[i].Payload) {
			t.Fatalf("stored record %d = %q, want %q", i, st.recs[i].Payload, written[i].Payload)
		}
	}
}

type refBuffer struct {
	sdk.UnimplementedBuffer
	bugs    bugs
	st      *store
	readSeq uint64
	max     int
}

func (b *refBuffer) Open(_ context.Context, req sdk.OpenRequest) error {
	b.st, b.max = storeFor(req.Settings), req.MaxBatchRecords
	if req.After != nil && !b.bugs.ignoreAfter {
		b.readSeq = binary.BigEndian.Uint64(req.After)
	}
	return nil
}

func (b *refBuffer) Checkpoint(context.Context) (record.Position, error) {
	if b.bugs.noCheckpoint {
		return nil, nil
	}
	stores.Lock()
	defer stores.Unlock()
	return b.st.cp.Clone(), nil
}

func (b *refBuffer) Append(_ context.Context, batch record.Batch) error {
	stores.Lock()
	defer stores.Unlock()
	for _, r := range batch.Records {
		b.st.seq++
		r = clone(r)
		r.Position = pos8(b.st.seq)
		b.st.recs = append(b.st.recs, r)
	}
	b.st.cp = batch.Position.Clone()
	return nil
}

func (b *refBuffer) Read(ctx context.Context) ([]record.Record, error) {
	deadline := time.Now().Add(100 * time.Millisecond)
	for {
		stores.Lock()
		var out []record.Record
		for _, r := range b.st.recs {
			if binary.BigEndian.Uint64(r.Position) > b.readSeq && len(out) < b.max {
				out = append(out, r)
			}
		}
		if len(out) > 0 {
			b.readSeq = binary.BigEndian.Uint64(out[len(out)-1].Position)
		}
		stores.Unlock()
		if len(out) > 0 || time.Now().After(deadline) {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (b *refBuffer) Ack(_ context.Context, p record.Position) error {
	if b.bugs.retain {
		return nil
	}
	stores.Lock()
	defer stores.Unlock()
	seq := binary.BigEndian.Uint64(p)
	b.st.recs = slices.DeleteFunc(b.st.recs, func(r record.Record) bool { return binary.BigEndian.Uint64(r.Position) <= seq })
	return nil
}

var names atomic.Int64

// nameSettings names fresh, empty data for each call, as SinkConfig.Settings and BufferConfig.Settings
// require (tests may run more than once in a process: -count).
func nameSettings(t *testing.T) map[string]any {
	return map[string]any{"name": t.Name() + "#" + strconv.FormatInt(names.Add(1), 10)}
}

// run runs the suite for one stage kind against a reference plugin with b.
func run(t *testing.T, kind string, b bugs) {
	p := refPlugin(b)
	switch kind {
	case "source":
		cfg := sdktest.SourceConfig{Settings: func(*testing.T) map[string]any { return map[string]any{"count": 40} }, Records: 40, Done: true}
		sdktest.Source(t, p, cfg)
	case "source-unlimited":
		sdktest.Source(t, p, sdktest.SourceConfig{Records: 30})
	case "source-same":
		sdktest.Source(t, p, sdktest.SourceConfig{Records: 30, Same: func(want, got record.Record) error {
			if !want.Position.Equal(got.Position) {
				return fmt.Errorf("position %x, want %x", []byte(got.Position), []byte(want.Position))
			}
			return nil
		}})
	case "sink":
		sdktest.Sink(t, p, sdktest.SinkConfig{Settings: nameSettings, Records: 40, Verify: verifySink})
	case "buffer":
		sdktest.Buffer(t, p, sdktest.BufferConfig{Settings: nameSettings, Records: 40})
	default:
		t.Fatalf("unknown kind %q", kind)
	}
}

func TestCorrectPlugins(t *testing.T) {
	for _, kind := range []string{"source", "source-unlimited", "sink", "buffer"} {
		t.Run(kind, func(t *testing.T) { run(t, kind, bugs{}) })
	}
	t.Run("buffer-retaining", func(t *testing.T) { run(t, "buffer", bugs{retain: true}) })
	// A source whose payloads change between reads passes with a Same that compares positions only.
	t.Run("source-same", func(t *testing.T) { run(t, "source-same", bugs{random: true}) })
}

// TestBrokenPlugin runs one broken case; TestSuiteCatches runs it in a child process, since the suite
// failing is the expected outcome.
func TestBrokenPlugin(t *testing.T) {
	name := os.Getenv("SDKTEST_BROKEN")
	if name == "" {
		t.Skip("run by TestSuiteCatches in a child process")
	}
	c, ok := brokenCases[name]
	if !ok {
		t.Fatalf("unknown case %q", name)
	}
	run(t, c.kind, c.bugs)
}

var brokenCases = map[string]struct {
	kind string
	bugs bugs
	want string // in the failure output
}{
	"source ignores After":         {"source", bugs{ignoreAfter: true}, "read again after resuming"},
	"source repeats a position":    {"source", bugs{dupPositions: true}, "have the same position"},
	"source ends early":            {"source", bugs{endEarly: true}, "the stream ended after 20 records"},
	"source leaks a goroutine":     {"source-unlimited", bugs{leak: true}, "goroutines left running"},
	"source is not reproducible":   {"source-unlimited", bugs{random: true}, "payload"},
	"sink stores record positions": {"sink", bugs{recordPosition: true}, "Checkpoint after the last batch"},
	"sink checkpoint is volatile":  {"sink", bugs{volatile: true}, "Checkpoint after a restart"},
	"sink writes heartbeats":       {"sink", bugs{writeHeartbeats: true}, "the sink stored 41 records, want 40"},
	"buffer has no checkpoint":     {"buffer", bugs{noCheckpoint: true}, "Checkpoint after the last append"},
	"buffer ignores After":         {"buffer", bugs{ignoreAfter: true, retain: true}, "record 20: key"},
}

func TestSuiteCatches(t *testing.T) {
	if os.Getenv("SDKTEST_BROKEN") != "" {
		t.Skip("in a child process")
	}
	for name, c := range brokenCases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenPlugin$", "-test.count=1")
			cmd.Env = append(os.Environ(), "SDKTEST_BROKEN="+name)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a plugin that is broken: %s\n%s", name, out)
			}
			if !strings.Contains(string(out), c.want) {
				t.Fatalf("the suite failed, but not with %q:\n%s", c.want, out)
			}
		})
	}
}
