package file_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/plugins/file"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/sdk/sdktest"
)

var pluginBinary string

func TestMain(m *testing.M) { sdktest.Main(m, "./cmd/file", &pluginBinary) }

// fixture writes n JSON lines, with a blank line and a CRLF line now and then, and returns the path.
func fixture(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	for i := range n {
		switch {
		case i%10 == 3:
			b.WriteString("\n   \n")
		case i%10 == 7:
			fmt.Fprintf(&b, "{\"n\":%d,\"crlf\":true}\r\n", i)
			continue
		}
		fmt.Fprintf(&b, "{\"n\":%d}\n", i)
	}
	path := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSourceAcceptance(t *testing.T) {
	for _, tc := range []struct {
		name   string
		follow bool
		lines  int
	}{
		{"to the end", false, 100},
		{"follow", true, 130},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sdktest.Source(t, file.Plugin(), sdktest.SourceConfig{
				Settings: func(t *testing.T) map[string]any {
					return map[string]any{"path": fixture(t, tc.lines), "follow": tc.follow, "poll_interval": "10ms"}
				},
				Records: 100,
				Done:    !tc.follow,
				Binary:  pluginBinary,
			})
		})
	}
}

// readLines returns the lines of the file at path.
func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		t.Fatalf("%s does not end with a newline", path)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

type envelope struct {
	Position string            `json:"position"`
	Op       string            `json:"op"`
	Key      string            `json:"key"`
	KeyB64   []byte            `json:"key_b64"`
	Meta     map[string]string `json:"meta"`
	Encoding string            `json:"encoding"`
	Payload  json.RawMessage   `json:"payload"`
}

func TestSinkAcceptance(t *testing.T) {
	for _, format := range []string{"payload", "record"} {
		t.Run(format, func(t *testing.T) {
			sdktest.Sink(t, file.Plugin(), sdktest.SinkConfig{
				Settings: func(t *testing.T) map[string]any {
					return map[string]any{"path": filepath.Join(t.TempDir(), "sub", "out.jsonl"), "format": format, "sync": format == "record"}
				},
				Verify: func(t *testing.T, settings map[string]any, written []record.Record) {
					lines := readLines(t, settings["path"].(string))
					if len(lines) != len(written) {
						t.Fatalf("%d lines for %d records", len(lines), len(written))
					}
					for i, r := range written {
						if format == "payload" {
							if lines[i] != string(r.Payload) {
								t.Fatalf("line %d = %q, want %q", i+1, lines[i], r.Payload)
							}
							continue
						}
						var e envelope
						if err := json.Unmarshal([]byte(lines[i]), &e); err != nil {
							t.Fatalf("line %d: %v", i+1, err)
						}
						payload := []byte(e.Payload)
						if e.Encoding != "json" {
							var s string
							_ = json.Unmarshal(e.Payload, &s)
							payload, _ = base64.StdEncoding.DecodeString(s)
						}
						key := []byte(e.Key)
						if e.KeyB64 != nil {
							key = e.KeyB64
						}
						pos, _ := base64.StdEncoding.DecodeString(e.Position)
						if !bytes.Equal(pos, r.Position) || e.Op != r.Op.String() || !bytes.Equal(key, r.Key) ||
							e.Encoding != r.Encoding.String() || !bytes.Equal(payload, r.Payload) || len(e.Meta) != len(r.Meta) {
							t.Fatalf("line %d = %s\ndoes not describe %+v", i+1, lines[i], r)
						}
					}
				},
				Binary: pluginBinary,
			})
		})
	}
}

func TestAppendLine(t *testing.T) {
	pos := record.Position{0, 0, 0, 0, 0, 0, 0, 7}
	for _, tc := range []struct {
		name    string
		rec     record.Record
		format  file.Format
		want    string
		wantErr bool
	}{
		{name: "payload", format: file.FormatPayload,
			rec:  record.Record{Position: pos, Op: record.OpInsert, Payload: []byte(`{"a":1}`), Encoding: record.EncodingJSON},
			want: "{\"a\":1}\n"},
		{name: "payload: multi-line JSON is compacted", format: file.FormatPayload,
			rec:  record.Record{Position: pos, Payload: []byte("{\n  \"a\": \"x\\ny\",\r\n  \"b\": [1, 2]\n}\n"), Encoding: record.EncodingJSON},
			want: "{\"a\":\"x\\ny\",\"b\":[1,2]}\n"},
		{name: "payload: raw bytes with a newline", format: file.FormatPayload,
			rec: record.Record{Position: pos, Payload: []byte("two\nlines")}, wantErr: true},
		{name: "payload: none", format: file.FormatPayload,
			rec: record.Record{Position: pos, Op: record.OpDelete, Key: []byte("k")}, want: ""},
		{name: "record: JSON payload embedded", format: file.FormatRecord,
			rec: record.Record{Position: pos, Op: record.OpUpdate, Key: []byte("k1"),
				Meta:    record.Meta{{Key: "mongodb.coll", Value: "orders"}, {Key: "a", Value: "<&>"}},
				Payload: []byte(`{ "x": "<b>" }`), Encoding: record.EncodingJSON},
			want: `{"position":"AAAAAAAAAAc=","op":"update","key":"k1","meta":{"a":"<&>","mongodb.coll":"orders"},"encoding":"json","payload":{"x":"<b>"}}` + "\n"},
		{name: "record: raw payload as base64", format: file.FormatRecord,
			rec:  record.Record{Position: pos, Op: record.OpInsert, Payload: []byte{0xff, 0x00, '\n'}, Encoding: record.EncodingRaw},
			want: `{"position":"AAAAAAAAAAc=","op":"insert","encoding":"raw","payload":"/wAK"}` + "\n"},
		{name: "record: delete without payload", format: file.FormatRecord,
			rec:  record.Record{Position: pos, Op: record.OpDelete, Key: []byte("k"), Encoding: record.EncodingJSON},
			want: `{"position":"AAAAAAAAAAc=","op":"delete","key":"k","encoding":"json"}` + "\n"},
		{name: "record: UTF-8 key as a string, other bytes in base64", format: file.FormatRecord,
			rec:  record.Record{Position: pos, Op: record.OpInsert, Key: []byte(`{"$oid":"6571a1b2c3d4e5f60718293a"} é`), Encoding: record.EncodingJSON},
			want: `{"position":"AAAAAAAAAAc=","op":"insert","key":"{\"$oid\":\"6571a1b2c3d4e5f60718293a\"} é","encoding":"json"}` + "\n"},
		{name: "record: binary key", format: file.FormatRecord,
			rec:  record.Record{Position: pos, Op: record.OpInsert, Key: []byte{0xff, 0}, Encoding: record.EncodingJSON},
			want: `{"position":"AAAAAAAAAAc=","op":"insert","key_b64":"/wA=","encoding":"json"}` + "\n"},
		{name: "record: invalid JSON", format: file.FormatRecord,
			rec: record.Record{Position: pos, Payload: []byte(`{"a":`), Encoding: record.EncodingJSON}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := file.AppendLine([]byte("prefix|"), &tc.rec, tc.format)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error; wrote %q", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "prefix|"+tc.want {
				t.Fatalf("got  %q\nwant %q", got, "prefix|"+tc.want)
			}
		})
	}
}

func TestSinkCutsTornLine(t *testing.T) {
	long := strings.Repeat("x", 150<<10) // longer than the chunk the sink reads backwards
	for _, tc := range []struct {
		name    string
		content string
		want    string
		warned  bool
	}{
		{name: "new file", content: "", want: ""},
		{name: "complete lines", content: "{\"a\":1}\n{\"a\":2}\n", want: "{\"a\":1}\n{\"a\":2}\n"},
		{name: "torn last line", content: "{\"a\":1}\n{\"a\":", want: "{\"a\":1}\n", warned: true},
		{name: "only a torn line", content: "{\"a\"", want: "", warned: true},
		{name: "blank last line kept", content: "{\"a\":1}\n\n", want: "{\"a\":1}\n\n"},
		{name: "long torn line", content: "{\"a\":1}\n" + long, want: "{\"a\":1}\n", warned: true},
		{name: "long line, then a torn one", content: long + "\n" + long, want: long + "\n", warned: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "out.jsonl")
			if tc.content != "" {
				if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var logs bytes.Buffer
			s := &file.Sink{}
			err := s.Open(context.Background(), sdk.OpenRequest{
				Settings: sdk.Settings{"path": path},
				Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close(context.Background())
			data, _ := os.ReadFile(path)
			if string(data) != tc.want {
				t.Fatalf("after Open the file holds %d bytes %.40q…, want %d bytes", len(data), data, len(tc.want))
			}
			if got := strings.Contains(logs.String(), "level=WARN"); got != tc.warned {
				t.Fatalf("warned = %v, want %v; log: %s", got, tc.warned, logs.String())
			}
			// Appends continue after the cut.
			err = s.Write(context.Background(), record.Batch{Records: []record.Record{
				{Position: record.Position("p"), Payload: []byte(`{"b":1}`), Encoding: record.EncodingJSON},
				{Position: record.Position("q"), Op: record.OpHeartbeat},
			}})
			if err != nil {
				t.Fatal(err)
			}
			data, _ = os.ReadFile(path)
			if string(data) != tc.want+"{\"b\":1}\n" {
				t.Fatalf("after a write the file ends %q", data[max(0, len(data)-40):])
			}
		})
	}
}

// openSource opens a file source directly.
func openSource(t *testing.T, settings sdk.Settings, after record.Position) *file.Source {
	t.Helper()
	s := &file.Source{}
	err := s.Open(context.Background(), sdk.OpenRequest{Settings: settings, After: after, MaxBatchRecords: 100, MaxBatchBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

type line struct {
	payload string
	off     uint64
}

// read calls Read once and returns the lines and the error.
func read(ctx context.Context, s *file.Source) ([]line, error) {
	recs, err := s.Read(ctx)
	var out []line
	for _, r := range recs {
		out = append(out, line{string(r.Payload), binary.BigEndian.Uint64(r.Position)})
	}
	return out, err
}

func off(n uint64) record.Position { return binary.BigEndian.AppendUint64(nil, n) }

func TestSourceReadsToTheEnd(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		after   record.Position
		want    []line
	}{
		{name: "lines", content: "a\nbb\n", want: []line{{"a", 2}, {"bb", 5}}},
		{name: "unterminated last line is read at the end", content: "a\nbb", want: []line{{"a", 2}, {"bb", 4}}},
		{name: "blank and CRLF lines", content: "\r\na\r\n \n\nb\n", want: []line{{"a", 5}, {"b", 10}}},
		{name: "blank unterminated tail", content: "a\n  ", want: []line{{"a", 2}}},
		{name: "resume after the first line", content: "a\nbb\nccc\n", after: off(2), want: []line{{"bb", 5}, {"ccc", 9}}},
		{name: "resume at the end", content: "a\n", after: off(2), want: nil},
		{name: "empty file", content: "", want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "in.jsonl")
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			s := openSource(t, sdk.Settings{"path": path}, tc.after)
			var got []line
			for {
				ls, err := read(context.Background(), s)
				if errors.Is(err, sdk.ErrDone) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, ls...)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("read %v, want %v", got, tc.want)
			}
			for _, r := range got {
				if r.payload == "" {
					t.Fatal("empty record")
				}
			}
		})
	}
}

func TestSourceOpenErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(path, []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		settings sdk.Settings
		after    record.Position
		invalid  bool // a settings error (sdk.ErrInvalidSettings)
	}{
		{"missing file", sdk.Settings{"path": path + ".nope"}, nil, false},
		{"position past the end (file replaced)", sdk.Settings{"path": path}, off(100), false},
		{"foreign position", sdk.Settings{"path": path}, record.Position("1-0"), false},
		{"no path", sdk.Settings{}, nil, true},
		{"zero poll_interval", sdk.Settings{"path": path, "poll_interval": "0s"}, nil, true},
		{"a NUL byte in the path", sdk.Settings{"path": path + "\x00"}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &file.Source{}
			err := s.Open(context.Background(), sdk.OpenRequest{Settings: tc.settings, After: tc.after})
			if err == nil {
				t.Fatal("Open succeeded")
			}
			if got := errors.Is(err, sdk.ErrInvalidSettings); got != tc.invalid {
				t.Errorf("errors.Is(%v, ErrInvalidSettings) = %v, want %v", err, got, tc.invalid)
			}
		})
	}
}

func TestSinkOpenInvalidSettings(t *testing.T) {
	dir := t.TempDir()
	for _, settings := range []sdk.Settings{{}, {"path": filepath.Join(dir, "out.jsonl"), "format": "csv"}, {"path": filepath.Join(dir, "out\x00.jsonl")}} {
		err := (&file.Sink{}).Open(context.Background(), sdk.OpenRequest{Settings: settings})
		if !errors.Is(err, sdk.ErrInvalidSettings) {
			t.Errorf("Open(%v) = %v, want an ErrInvalidSettings", settings, err)
		}
	}
}

// TestSourceFollow appends to a followed file: complete lines arrive, a partial line waits for its
// newline, and a truncated file is an error.
func TestSourceFollow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(path, []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := openSource(t, sdk.Settings{"path": path, "follow": true, "poll_interval": "5ms"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	appendTo := func(s string) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		append string
		want   []line
	}{
		{"", []line{{"a", 2}}},
		{"bb\nc", []line{{"bb", 5}}},
		{"cc", nil},                                 // still no newline: Read keeps waiting
		{"c\nd\n", []line{{"cccc", 10}, {"d", 12}}}, // the line completes
	}
	for i, st := range steps {
		appendTo(st.append)
		if st.want == nil {
			short, stop := context.WithTimeout(ctx, 50*time.Millisecond)
			ls, err := read(short, s)
			stop()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("step %d: Read = %v, %v; want it to wait for the newline", i, ls, err)
			}
			continue
		}
		ls, err := read(ctx, s)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if fmt.Sprint(ls) != fmt.Sprint(st.want) {
			t.Fatalf("step %d: read %v, want %v", i, ls, st.want)
		}
	}
	if err := os.Truncate(path, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := read(ctx, s); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("Read after the file shrank = %v, want an error", err)
	}
}

// TestSourceLongLines reads lines longer than the read buffer.
func TestSourceLongLines(t *testing.T) {
	long := strings.Repeat("y", 200<<10)
	path := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(path, []byte("a\n"+long+"\nb\n"+long), 0o644); err != nil {
		t.Fatal(err)
	}
	s := openSource(t, sdk.Settings{"path": path}, nil)
	var got []int
	for {
		ls, err := read(context.Background(), s)
		if errors.Is(err, sdk.ErrDone) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			got = append(got, len(l.payload))
		}
	}
	if fmt.Sprint(got) != fmt.Sprint([]int{1, len(long), 1, len(long)}) {
		t.Fatalf("line lengths %v", got)
	}
}

// TestSinkOpenErrorsAreClassified: paths that can never be written are permanent errors (the host fails
// the pipeline at once instead of retrying), and say which path.
func TestSinkOpenErrorsAreClassified(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "plain")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		path  string
		class error
	}{
		{"a path through a regular file", filepath.Join(notDir, "out.jsonl"), sdk.ErrPermanent},
		{"a directory", dir, sdk.ErrPermanent},
		{"no path", "", sdk.ErrInvalidSettings},
	} {
		for _, plugin := range []struct {
			name string
			sink sdk.Sink
		}{{"file", &file.Sink{}}, {"file-atomic", &file.AtomicSink{}}} {
			t.Run(plugin.name+"/"+tc.name, func(t *testing.T) {
				settings := sdk.Settings{}
				if tc.path != "" {
					settings["path"] = tc.path
				}
				err := plugin.sink.Open(context.Background(), sdk.OpenRequest{Settings: settings})
				if !errors.Is(err, tc.class) {
					t.Fatalf("Open = %v, want an error of class %v", err, tc.class)
				}
				if tc.path != "" && !strings.Contains(err.Error(), tc.path) {
					t.Errorf("Open = %v does not name the path", err)
				}
			})
		}
	}
}
