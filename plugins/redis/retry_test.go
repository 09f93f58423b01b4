package redis

import (
	"context"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/services"
)

// TestAppendScriptIdempotent runs the append script twice with the same arguments, as a retry does when
// the reply of an applied append was lost: the second run appends nothing (and says so: -1, -1).
func TestAppendScriptIdempotent(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	ctx := context.Background()
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer client.Close()
	keys := []string{"{t}", "{t}:meta"}
	args := []any{0, "", "pos1", 1, []byte("a"), 2, []byte("bb")}
	for i, want := range [][]int64{{3, 3}, {-1, -1}} {
		got, err := appendScript.Run(ctx, client, keys, args...).Int64Slice()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Fatalf("run %d returned %v, want %v", i+1, got, want)
		}
	}
	if n, _ := client.XLen(ctx, "{t}").Result(); n != 2 {
		t.Fatalf("%d entries, want 2", n)
	}
}
