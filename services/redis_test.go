package services

import (
	"context"
	"testing"
	"time"
)

func TestRedisStartsAndRestarts(t *testing.T) {
	r := StartRedis(t, RedisOptions{})
	if err := r.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := r.Crash(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ping(ctx, r.Addr, nil); err != nil {
		t.Fatal(err)
	}
}
