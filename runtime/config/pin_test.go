package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	digestA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	digestB = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
)

// TestStageSHA256 reads a stage's sha256 key in each format: lower-cased, with where it was written, and
// printed by validate --print (which loads again).
func TestStageSHA256(t *testing.T) {
	upper := strings.ToUpper(digestB)
	for name, text := range map[string]string{
		"p.yaml": "version: 1\npipelines:\n  - id: p\n    source: { plugin: generate, sha256: " + digestA + " }\n    sink:\n      plugin: discard\n      sha256: \"" + upper + "\"\n",
		"p.json": `{"version": 1, "pipelines": [{"id": "p",
  "source": {"plugin": "generate", "sha256": "` + digestA + `"},
      "sink": {"plugin": "discard", "sha256": "` + upper + `"}}]}`,
		"p.toml": "version = 1\n[[pipelines]]\nid = \"p\"\nsource = { plugin = \"generate\", sha256 = \"" + digestA + "\" }\n[pipelines.sink]\nplugin = \"discard\"\nsha256 = \"" + upper + "\"\n",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), name)
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := testLoader().Load(path)
			if err != nil {
				t.Fatal(err)
			}
			src, sink := f.Pipelines[0].Source, f.Pipelines[0].Sink
			if src.SHA256 != digestA || sink.SHA256 != digestB {
				t.Errorf("sha256 %q and %q, want %q and %q", src.SHA256, sink.SHA256, digestA, digestB)
			}
			line := strings.Split(text, "\n")[src.SHA256Pos.Line-1]
			if src.SHA256Pos.File != path || !strings.HasPrefix(strings.TrimLeft(line[src.SHA256Pos.Col-1:], `"`), digestA) {
				t.Errorf("source sha256 at %s, which is %q", src.SHA256Pos, line)
			}
			if sink.SHA256Pos.Line != 7 && sink.SHA256Pos.Line != 3 {
				t.Errorf("sink sha256 at %s", sink.SHA256Pos)
			}
			var b bytes.Buffer
			if err := f.Print(&b); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(b.String(), "sha256: "+digestA) || !strings.Contains(b.String(), "sha256: "+digestB) {
				t.Errorf("Print does not show the digests:\n%s", b.String())
			}
			printed := filepath.Join(t.TempDir(), "printed.yaml")
			if err := os.WriteFile(printed, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			g, err := testLoader().Load(printed)
			if err != nil || g.Pipelines[0].Source.SHA256 != digestA || g.Pipelines[0].Sink.SHA256 != digestB {
				t.Errorf("printed file loads as %v, %v", g, err)
			}
		})
	}
}

func TestLockRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), LockFileName)
	if l, err := ReadLock(path); l != nil || err != nil {
		t.Fatalf("ReadLock of a missing file: %v, %v; want nil, nil", l, err)
	}
	if err := WriteLock(path, map[string]string{"kafka": digestB, "generate": digestA}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := lockHeader + "generate sha256:" + digestA + "\nkafka sha256:" + digestB + "\n"
	if string(data) != want {
		t.Errorf("lock file:\n%s\nwant:\n%s", data, want)
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o644 {
		t.Errorf("lock file mode %v, %v; want 0644", info.Mode(), err)
	}
	l, err := ReadLock(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Pins) != 2 || l.Pins["generate"].SHA256 != digestA || l.Pins["kafka"].SHA256 != digestB {
		t.Errorf("pins %+v", l.Pins)
	}
	if p := l.Pins["kafka"].Pos; p != (Pos{File: path, Line: 4, Col: 7}) {
		t.Errorf("kafka's pin at %s, want line 4, column 7 (where sha256: starts)", p)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("WriteLock left %d files, want only the lock file", len(entries))
	}
}

func TestLockErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), LockFileName)
	text := "# comment\n\n" +
		"generate sha256:" + digestA + "\n" +
		"  kafka   sha256:" + digestB + "   \r\n" +
		"generate sha256:" + digestB + "\n" +
		"redis " + digestA + "\n" +
		"Redis sha256:" + digestA + "\n" +
		"mongodb sha256:" + strings.ToUpper(digestA) + "\n" +
		"file sha256:" + digestA + " extra\n" +
		"memory\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ReadLock(path)
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("ReadLock: %v, want Errors", err)
	}
	want := strings.Join([]string{
		path + `:5:1: plugin "generate" is pinned twice (first at line 3); keep one line`,
		path + `:6:7: plugin "redis": want sha256: and 64 lower-case hex digits, got "` + digestA[:40] + `…"`,
		path + `:7:1: plugin name "Redis" is invalid: want lower-case letters, digits, '-' or '_', starting with a letter`,
		path + `:8:9: plugin "mongodb": want sha256: and 64 lower-case hex digits, got "sha256:` + strings.ToUpper(digestA)[:33] + `…"`,
		path + `:9:1: want NAME sha256:HEX, got 3 fields`,
		path + `:10:1: "memory" has no digest: want NAME sha256:HEX`,
	}, "\n")
	if err.Error() != want {
		t.Errorf("ReadLock errors:\n%s\nwant:\n%s", err, want)
	}
}
