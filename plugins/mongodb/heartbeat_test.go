package mongodb

import (
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sluicehq/sluice/sdk/record"
)

func token(t *testing.T, data string) bson.Raw {
	t.Helper()
	b, err := bson.Marshal(bson.D{{Key: "_data", Value: data}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHeartbeat checks when a quiet stream emits a heartbeat: only after heartbeat_interval without
// records, only when the resume token (the post-batch resume token on real servers) has moved past the
// last position emitted, and never when heartbeats are off.
func TestHeartbeat(t *testing.T) {
	s := &Source{cfg: Config{HeartbeatInterval: time.Minute}}
	first, moved := token(t, "8201"), token(t, "8202")
	s.lastEmitted, s.lastActivity = first, time.Now()
	if _, ok := s.heartbeatAt(moved); ok {
		t.Fatal("heartbeat before the interval passed")
	}
	s.lastActivity = time.Now().Add(-2 * time.Minute)
	if _, ok := s.heartbeatAt(first); ok {
		t.Fatal("heartbeat although the token has not moved")
	}
	if _, ok := s.heartbeatAt(nil); ok {
		t.Fatal("heartbeat without a token")
	}
	r, ok := s.heartbeatAt(moved)
	if !ok || r.Op != record.OpHeartbeat || !r.Position.Equal(tokenPosition(moved)) || len(r.Payload) != 0 {
		t.Fatalf("heartbeat = %+v, %v", r, ok)
	}
	if _, ok := s.heartbeatAt(moved); ok {
		t.Fatal("a second heartbeat for the same token, right after the first")
	}
	s.cfg.HeartbeatInterval = 0
	s.lastActivity = time.Now().Add(-time.Hour)
	if _, ok := s.heartbeatAt(token(t, "8203")); ok {
		t.Fatal("heartbeat with heartbeat_interval 0")
	}
}
