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

// buildHost builds bin/sluice and the mongodb and file plugins into a temporary directory.
func buildHost(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	for _, b := range []struct{ dir, pkg, out string }{
		{"../../runtime", "./cmd/sluice", "sluice"},
		{"../file", "./cmd/file", "plugins/file"},
		{".", "./cmd/mongodb", "plugins/mongodb"},
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, b.out), b.pkg)
		cmd.Dir = b.dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", b.pkg, err, out)
		}
	}
	return bin
}

// TestKillPluginNoLoss runs mongodb → file with the real host while documents are inserted, kills the
// mongodb plugin with SIGKILL mid-run, and checks that every insert reaches the file: the host restarts
// the plugin, which resumes after the last stored resume token.
func TestKillPluginNoLoss(t *testing.T) {
	srv := services.StartMongo(t)
	bin := buildHost(t)
	dir := t.TempDir()
	conf := fmt.Sprintf(`version: 1
pipelines:
  - id: orders
    source:
      plugin: mongodb
      settings: { uri: %q, database: shop, collection: orders, max_await: 200ms, start_at: %q }
    sink:
      plugin: file
      settings: { path: out.jsonl }
    batch_max_records: 100
`, srv.URI, time.Now().Add(-time.Minute).UTC().Format(time.RFC3339))
	if err := os.WriteFile(filepath.Join(dir, "orders.yaml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	host := exec.Command(filepath.Join(bin, "sluice"), "run", "--data-dir", "state", "orders.yaml")
	host.Dir, host.Stdout, host.Stderr = dir, &stdout, &stderr
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	defer host.Process.Kill()

	ctx := context.Background()
	client := connect(t, srv.URI)
	coll := client.Database("shop").Collection("orders")
	const n = 3000
	killed := false
	for i := 0; i < n; i += 50 {
		docs := make([]any, 50)
		for j := range docs {
			docs[j] = bson.D{{Key: "n", Value: i + j}}
		}
		if _, err := coll.InsertMany(ctx, docs); err != nil {
			t.Fatal(err)
		}
		if i >= n/2 && !killed {
			killed = killPlugin(t, filepath.Join(bin, "plugins", "mongodb"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !killed {
		t.Fatal("found no mongodb plugin process to kill")
	}
	out := filepath.Join(dir, "out.jsonl")
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
	if len(seen) != n {
		t.Fatalf("%d of %d inserts reached the file\nstdout:\n%s\nstderr:\n%s", len(seen), n, stdout.String(), tail(stderr.String(), 30))
	}
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	if !strings.Contains(stderr.String(), "restarting") {
		t.Errorf("the host did not report a restart:\n%s", tail(stderr.String(), 30))
	}
	t.Logf("all %d inserts delivered after SIGKILL of the plugin; %d delivered twice (the file sink is at-least-once); summary: %s",
		n, dups, strings.TrimSpace(stdout.String()))
}

// killPlugin sends SIGKILL to the process running the plugin binary at path.
func killPlugin(t *testing.T, path string) bool {
	t.Helper()
	out, _ := exec.Command("pgrep", "-f", path).Output()
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err == nil && pid != os.Getpid() {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				return true
			}
		}
	}
	return false
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
