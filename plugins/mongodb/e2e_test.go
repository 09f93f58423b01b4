package mongodb_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sluicehq/sluice/services"
)

// TestKillPluginNoLoss runs mongodb → file sink pipelines with the real host while documents are
// inserted, kills the mongodb plugin with SIGKILL mid-run, and checks that every insert reaches the
// file: the host restarts the plugin, which resumes after the last stored resume token. With the file
// sink (at-least-once: the host stores positions after the sink acks) a few inserts may arrive twice;
// with file-atomic (the sink stores the resume token with its lines) every insert arrives exactly once.
func TestKillPluginNoLoss(t *testing.T) {
	srv := services.StartMongo(t)
	bin := services.Binaries(t, "file", "file-atomic", "mongodb")
	for _, tc := range []struct {
		sink        string
		exactlyOnce bool
	}{{"file", false}, {"file-atomic", true}} {
		t.Run(tc.sink, func(t *testing.T) { killPluginRun(t, srv, bin, tc.sink, tc.exactlyOnce) })
	}
}

func killPluginRun(t *testing.T, srv *services.Mongo, bin, sink string, exactlyOnce bool) {
	dir := t.TempDir()
	coll := strings.ReplaceAll(sink, "-", "_")
	conf := fmt.Sprintf(`version: 1
pipelines:
  - id: orders
    source:
      plugin: mongodb
      settings: { uri: %q, database: shop, collection: %s, max_await: 200ms, start_at: %q }
    sink:
      plugin: %s
      settings: { path: out.jsonl }
    batch_max_records: 100
`, srv.URI, coll, time.Now().Add(-time.Minute).UTC().Format(time.RFC3339), sink)
	if err := os.WriteFile(filepath.Join(dir, "orders.yaml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	host := exec.Command(filepath.Join(bin, "sluice"), "run", "--data-dir", "state", "orders.yaml")
	host.Dir, host.Stdout, host.Stderr = dir, &stdout, &stderr
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = host.Process.Kill(); _ = host.Wait() }()

	ctx := context.Background()
	c := connect(t, srv.URI).Database("shop").Collection(coll)
	const n = 3000
	out := filepath.Join(dir, "out.jsonl")
	killed := 0
	for i := 0; i < n; i += 50 {
		docs := make([]any, 50)
		for j := range docs {
			docs[j] = bson.D{{Key: "n", Value: i + j}}
		}
		if _, err := c.InsertMany(ctx, docs); err != nil {
			t.Fatal(err)
		}
		if i == n/2 {
			// Kill the plugin once some changes have been delivered, with more still being written.
			for wait := time.Now().Add(60 * time.Second); len(inserted(t, out)) == 0 && time.Now().Before(wait); {
				time.Sleep(50 * time.Millisecond)
			}
			killed = killPlugin(t, host.Process.Pid, filepath.Join(bin, "plugins", "mongodb"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if killed == 0 {
		t.Fatalf("found no mongodb plugin process to kill\nstderr:\n%s", tail(stderr.String(), 30))
	}
	var seen map[int]int
	deadline := time.Now().Add(90 * time.Second)
	for {
		seen = inserted(t, out)
		if len(seen) == n || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = host.Process.Signal(syscall.SIGTERM)
	_ = host.Wait()
	seen = inserted(t, out) // after the host stopped: nothing more arrives
	if len(seen) != n {
		t.Fatalf("%d of %d inserts reached the file\nstdout:\n%s\nstderr:\n%s", len(seen), n, stdout.String(), tail(stderr.String(), 30))
	}
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	if exactlyOnce && dups > 0 {
		t.Errorf("%d inserts delivered twice through %s, which stores positions atomically", dups, sink)
	}
	if !strings.Contains(stderr.String(), "restarting") {
		t.Errorf("the host did not report a restart:\n%s", tail(stderr.String(), 30))
	}
	t.Logf("%s: all %d inserts delivered after SIGKILL of the plugin (pid %d); %d delivered twice; summary: %s",
		sink, n, killed, dups, strings.TrimSpace(stdout.String()))
}

// killPlugin sends SIGKILL to the child of the host process (pid host) that runs the plugin binary at
// path, and returns its pid, or 0 when there is none.
func killPlugin(t *testing.T, host int, path string) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		stat, err := os.ReadFile(filepath.Join(p, "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces, so read after the last ')'.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(host) {
			continue
		}
		if exe, err := os.Readlink(filepath.Join(p, "exe")); err == nil && exe == path {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			return pid
		}
	}
	return 0
}

// inserted counts, per n, the insert events in the file sink's output.
func inserted(t *testing.T, path string) map[int]int {
	t.Helper()
	counts := map[int]int{}
	f, err := os.Open(path)
	if err != nil {
		return counts
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		var ev struct {
			OperationType string `json:"operationType"`
			FullDocument  struct {
				N *int `json:"n"`
			} `json:"fullDocument"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.OperationType != "insert" || ev.FullDocument.N == nil {
			continue
		}
		counts[*ev.FullDocument.N]++
	}
	return counts
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestValidateRules runs `sluice validate` on a file with each combination of collection, collections
// and namespaces the source refuses: the host reports each at its line and column, from the plugin's
// spec rules, without starting the plugin; and a file with good ones passes.
func TestValidateRules(t *testing.T) {
	bin := services.Binaries(t, "mongodb", "discard")
	dir := t.TempDir()
	bad := `version: 1
pipelines:
  - id: no-database
    source: { plugin: mongodb, settings: { uri: "mongodb://127.0.0.1:1", collections: [a, b] } }
    sink: { plugin: discard }
  - id: both
    source: { plugin: mongodb, settings: { uri: "mongodb://127.0.0.1:1", database: shop, collection: c, namespaces: { include: [x] } } }
    sink: { plugin: discard }
  - id: empty
    source: { plugin: mongodb, settings: { uri: "mongodb://127.0.0.1:1", database: shop, collections: [] } }
    sink: { plugin: discard }
  - id: typo
    source: { plugin: mongodb, settings: { uri: "mongodb://127.0.0.1:1", namespaces: { includes: [x] } } }
    sink: { plugin: discard }
  - id: nothing
    source: { plugin: mongodb, settings: { uri: "mongodb://127.0.0.1:1", namespaces: {} } }
    sink: { plugin: discard }
`
	good := `version: 1
pipelines:
  - id: shop
    source: { plugin: mongodb, settings: { uri: "mongodb://127.0.0.1:1", database: shop, collections: [orders, carts], namespaces: { exclude: ["_tmp$"] }, snapshot: initial } }
    sink: { plugin: discard }
  - id: deployment
    source: { plugin: mongodb, settings: { uri: "mongodb://127.0.0.1:1", namespaces: { include: ['^(shop|billing)\.'] }, snapshot: initial } }
    sink: { plugin: discard }
`
	for name, text := range map[string]string{"bad.yaml": bad, "good.yaml": good} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	validate := func(file string) (string, int) {
		cmd := exec.Command(filepath.Join(bin, "sluice"), "validate", file)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	out, code := validate("bad.yaml")
	want := []string{
		`bad.yaml:4:87: setting "collections" of plugin "mongodb" (source): collections needs a database: set database (collections are names in it), or use namespaces to filter the whole deployment by "db.coll"`,
		`bad.yaml:7:117: setting "namespaces" of plugin "mongodb" (source): collection watches one collection and cannot be combined with collections or namespaces: list every collection in collections (or filter with namespaces) and remove collection`,
		`bad.yaml:10:103: setting "collections" of plugin "mongodb" (source): collections is empty: list the collections to watch, or remove it to watch every collection of database`,
		`bad.yaml:13:86: setting "namespaces" of plugin "mongodb" (source): namespaces takes include and exclude, lists of regular expressions matched against "db.coll"`,
		`bad.yaml:16:86: setting "namespaces" of plugin "mongodb" (source): namespaces has neither include nor exclude: give regular expressions matched against "db.coll", or remove namespaces`,
		`5 problems found`,
	}
	if code != 2 || strings.TrimSpace(out) != strings.Join(want, "\n") {
		t.Errorf("validate bad.yaml: exit %d\n%s\nwant exit 2 and\n%s", code, out, strings.Join(want, "\n"))
	}
	if out, code := validate("good.yaml"); code != 0 {
		t.Errorf("validate good.yaml: exit %d\n%s", code, out)
	}
}
