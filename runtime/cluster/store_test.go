package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/services"
)

// TestStoreFencing: positions are written under the pipeline's latest lease only: once another instance
// has taken the lease over, the old holder's writes are refused and change nothing.
func TestStoreFencing(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	client := newClient(t, srv.Addr)
	store := NewStore(client, "")
	if pos, err := store.Get("orders", "source"); err != nil || pos != nil {
		t.Fatalf("Get of nothing = %q, %v", pos, err)
	}
	a := startNode(t, srv.Addr, "a", "orders")
	waitFor(t, 5*time.Second, "a holds orders", func() bool { return a.acquired("orders") != nil })
	la := a.acquired("orders").Lease
	old := store.Fenced("orders", la.Token())
	if err := old.Put("orders", "source", record.Position("\x00\x01a")); err != nil {
		t.Fatal(err)
	}
	if pos, err := old.Get("orders", "source"); err != nil || string(pos) != "\x00\x01a" {
		t.Fatalf("Get = %q, %v", pos, err)
	}
	if err := old.Put("other", "source", record.Position("x")); err == nil {
		t.Fatal("a pipeline's store stored another pipeline's position")
	}

	b := startNode(t, srv.Addr, "b", "orders")
	a.stop(false) // frozen, say: it stops renewing but still holds its token
	waitFor(t, 5*testTTL, "b takes orders over", func() bool { return b.acquired("orders") != nil })
	lb := b.acquired("orders").Lease
	err := old.Put("orders", "source", record.Position("zombie"))
	if !errors.Is(err, ErrFenced) || !errors.Is(err, pipeline.ErrLeaseLost) {
		t.Fatalf("Put with the old token = %v, want ErrFenced", err)
	}
	if pos, _ := store.Get("orders", "source"); string(pos) != "\x00\x01a" {
		t.Fatalf("the refused Put changed the position to %q", pos)
	}
	cur := store.Fenced("orders", lb.Token())
	if err := cur.Put("orders", "source", record.Position("b1")); err != nil {
		t.Fatal(err)
	}
	if err := old.Put("orders", "source", record.Position("zombie")); !errors.Is(err, ErrFenced) {
		t.Fatalf("Put with the old token after the new holder wrote = %v, want ErrFenced", err)
	}
	got, _ := client.HGetAll(context.Background(), "sluice:state:{orders}").Result()
	if got["source"] != "b1" || got["source:token"] != fmt.Sprint(lb.Token()) {
		t.Fatalf("state hash %v", got)
	}
}

// TestStoreListAndDelete: List finds every pipeline with positions; Delete refuses a pipeline an instance
// runs, and forgets one nobody runs.
func TestStoreListAndDelete(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	client := newClient(t, srv.Addr)
	store := NewStore(client, "")
	ctx := context.Background()
	a := startNode(t, srv.Addr, "a", "orders", "audit")
	waitFor(t, 5*time.Second, "a holds both", func() bool { return a.acquired("orders") != nil && a.acquired("audit") != nil })
	for _, id := range []string{"orders", "audit"} {
		if err := store.Fenced(id, a.acquired(id).Lease.Token()).Put(id, "buffer", record.Position("1-0")); err != nil {
			t.Fatal(err)
		}
	}
	if ids, err := store.List(ctx); err != nil || strings.Join(ids, ",") != "audit,orders" {
		t.Fatalf("List = %v, %v", ids, err)
	}
	if err := store.Delete(ctx, "orders"); err == nil || !strings.Contains(err.Error(), "is running on instance a") {
		t.Fatalf("Delete of a running pipeline = %v", err)
	}
	a.stop(true)
	if err := store.Delete(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if ids, err := store.List(ctx); err != nil || strings.Join(ids, ",") != "audit" {
		t.Fatalf("List after Delete = %v, %v", ids, err)
	}
	if pos, err := store.Get("orders", "buffer"); err != nil || pos != nil {
		t.Fatalf("Get after Delete = %q, %v", pos, err)
	}
}

// TestStoreToken: the token of a held lease is its holder's; once released, the last one issued.
func TestStoreToken(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	client := newClient(t, srv.Addr)
	store := NewStore(client, "")
	ctx := context.Background()
	if tok, err := store.Token(ctx, "orders"); err != nil || tok != 0 {
		t.Fatalf("Token of a pipeline never leased = %d, %v", tok, err)
	}
	a := startNode(t, srv.Addr, "a", "orders")
	waitFor(t, 5*time.Second, "a holds orders", func() bool { return a.acquired("orders") != nil })
	want := a.acquired("orders").Lease.Token()
	if tok, err := store.Token(ctx, "orders"); err != nil || tok != want {
		t.Fatalf("Token while a holds the lease = %d, %v; want %d", tok, err, want)
	}
	a.stop(true)
	waitFor(t, 5*time.Second, "the lease is released", func() bool {
		h, _ := store.Holder(ctx, "orders")
		return h.Instance == ""
	})
	if tok, err := store.Token(ctx, "orders"); err != nil || tok != want {
		t.Fatalf("Token once released = %d, %v; want the last issued, %d", tok, err, want)
	}
}
