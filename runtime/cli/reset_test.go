package cli_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/runtime/cluster"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/services"
)

// TestResetUnknownPipeline runs a pipeline so that the host stores its position, then resets pipelines
// that have stored positions (exit 0) and pipelines that do not (exit 2, naming them and listing those
// that do, deleting nothing).
func TestResetUnknownPipeline(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.yaml"), `version: 1
pipelines:
  - id: orders
    source: { plugin: generate, settings: { count: 100 } }
    sink:   { plugin: file, settings: { path: orders.jsonl } }
  - id: audit
    source: { plugin: generate, settings: { count: 10 } }
    sink:   { plugin: discard }
`)
	if out, errOut, code := sluice(t, dir, "run", "p.yaml"); code != 0 {
		t.Fatalf("run: exit %d\n%s\n%s", code, out, errOut)
	}

	out, errOut, code := sluice(t, dir, "reset", "ordres")
	want := "reset: no stored positions for pipeline ordres in data dir .sluice; nothing was deleted. Pipelines with stored positions there: audit, orders ("
	if code != 2 || !strings.HasPrefix(errOut, want) || out != "" {
		t.Fatalf("reset ordres: exit %d, stdout %q, stderr %q; want exit 2 and %q…", code, out, errOut, want)
	}
	// One unknown id among known ones: nothing is deleted.
	_, errOut, code = sluice(t, dir, "reset", "orders", "nope", "gone")
	if code != 2 || !strings.Contains(errOut, "no stored positions for pipelines nope, gone in data dir .sluice") {
		t.Fatalf("reset orders nope gone: exit %d, %q", code, errOut)
	}
	out, errOut, code = sluice(t, dir, "reset", "orders")
	if code != 0 || out != "pipeline orders: stored positions deleted\n" {
		t.Fatalf("reset orders: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// Deleted: now unknown, and the list shows what is left.
	_, errOut, code = sluice(t, dir, "reset", "orders")
	if code != 2 || !strings.Contains(errOut, "Pipelines with stored positions there: audit (") {
		t.Fatalf("second reset orders: exit %d, %q", code, errOut)
	}
	if _, _, code = sluice(t, dir, "reset", "--data-dir", filepath.Join(dir, ".sluice"), "audit"); code != 0 {
		t.Fatalf("reset audit with --data-dir: exit %d", code)
	}
	_, errOut, code = sluice(t, dir, "reset", "audit")
	if code != 2 || !strings.Contains(errOut, "No pipeline has stored positions there") {
		t.Fatalf("reset in an emptied store: exit %d, %q", code, errOut)
	}
}

// TestResetNoDataDir resets in a directory without a state store: exit 2, and no data directory is
// created.
func TestResetNoDataDir(t *testing.T) {
	dir := t.TempDir()
	_, errOut, code := sluice(t, dir, "reset", "orders")
	if code != 2 || !strings.Contains(errOut, "no stored positions for pipeline orders in data dir .sluice") ||
		!strings.Contains(errOut, "No pipeline has stored positions there") {
		t.Fatalf("exit %d, %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, ".sluice")); !os.IsNotExist(err) {
		t.Errorf("reset created the data dir: %v", err)
	}
}

// TestResetCluster resets positions that instances sharing pipelines keep in Redis (reset --file): a
// pipeline with positions there is reset, an unknown one is an error listing those there are, one that an
// instance runs is refused, and a file without cluster: is an error.
func TestResetCluster(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "c.yaml"), fmt.Sprintf(`version: 1
cluster: { redis: { addr: %q }, key_prefix: test }
pipelines:
  - id: orders
    source: { plugin: generate }
    sink:   { plugin: discard }
`, srv.Addr))
	writeFile(t, filepath.Join(dir, "plain.yaml"), "version: 1\npipelines: [{id: orders, source: {plugin: generate}, sink: {plugin: discard}}]\n")
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer rdb.Close()
	store := cluster.NewStore(rdb, "test")
	for _, id := range []string{"orders", "audit"} {
		if err := store.Fenced(id, 0).Put(id, "source", record.Position("x")); err != nil {
			t.Fatal(err)
		}
	}
	_, errOut, code := sluice(t, dir, "reset", "--file", "c.yaml", "ordres")
	if want := fmt.Sprintf("reset: no stored positions for pipeline ordres in Redis at %s (keys test:state:*); nothing was deleted. Pipelines with stored positions there: audit, orders (", srv.Addr); code != 2 || !strings.HasPrefix(errOut, want) {
		t.Fatalf("reset ordres: exit %d, %q; want exit 2 and %q…", code, errOut, want)
	}
	// An instance runs audit: its lease is held.
	if err := rdb.Set(context.Background(), "test:lease:{audit}", "17 etl-2#a1b2", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = sluice(t, dir, "reset", "--file", "c.yaml", "audit")
	if code != 1 || !strings.Contains(errOut, "pipeline audit is running on instance etl-2: stop it there") {
		t.Fatalf("reset of a running pipeline: exit %d, %q", code, errOut)
	}
	out, errOut, code := sluice(t, dir, "reset", "--file", "c.yaml", "orders")
	if code != 0 || out != "pipeline orders: stored positions deleted\n" {
		t.Fatalf("reset orders: exit %d, %q, %q", code, out, errOut)
	}
	if n, _ := rdb.Exists(context.Background(), "test:state:{orders}").Result(); n != 0 {
		t.Fatal("the positions of orders are still in Redis")
	}
	_, errOut, code = sluice(t, dir, "reset", "--file", "plain.yaml", "orders")
	if code != 2 || !strings.Contains(errOut, "plain.yaml has no cluster:") {
		t.Fatalf("reset --file without cluster: exit %d, %q", code, errOut)
	}
}
