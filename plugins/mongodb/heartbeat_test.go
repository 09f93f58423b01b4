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
// TestTokenTime reads the cluster time at the start of a resume token's KeyString.
func TestTokenTime(t *testing.T) {
	for _, tt := range []struct {
		data string
		want time.Time
	}{
		{"826482E5A6000000012B022C0100296E5A1004", time.Unix(0x6482E5A6, 0)}, // an event's token
		{"8265A1B2C3000000012B0229296E04", time.Unix(0x65A1B2C3, 0)},         // a post-batch token
		{"8265a1b2c30000000104", time.Unix(0x65A1B2C3, 0)},
		{"6b02cf6900000001", time.Time{}}, // another server's format
		{"8201", time.Time{}},
		{"82ZZ", time.Time{}},
		{"82GGGGGGGG000000012B", time.Time{}},
	} {
		if got := tokenTime(token(t, tt.data)); !got.Equal(tt.want) || got.IsZero() != tt.want.IsZero() {
			t.Errorf("tokenTime(%s) = %v, want %v", tt.data, got, tt.want)
		}
	}
	if got := tokenTime(nil); !got.IsZero() {
		t.Errorf("tokenTime(nil) = %v", got)
	}
}

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
	// A heartbeat carries the time in its token.
	s.lastActivity = time.Now().Add(-2 * time.Minute)
	real := token(t, "826482E5A6000000012B022C0100296E5A1004")
	if r, ok := s.heartbeatAt(real); !ok || !r.Time.Equal(time.Unix(0x6482E5A6, 0)) {
		t.Fatalf("heartbeat at %v, %v; want the token's time %v", r.Time, ok, time.Unix(0x6482E5A6, 0))
	}
	s.cfg.HeartbeatInterval = 0
	s.lastActivity = time.Now().Add(-time.Hour)
	if _, ok := s.heartbeatAt(token(t, "8203")); ok {
		t.Fatal("heartbeat with heartbeat_interval 0")
	}
}
