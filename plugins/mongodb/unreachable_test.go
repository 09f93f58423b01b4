package mongodb

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/services"
)

// TestOpenUnreachable opens the source against servers it cannot use: the error names the server and
// what it did, says serverSelectionTimeoutMS fired (not some other timeout), leaves the driver's topology
// dump out, and stays transient.
func TestOpenUnreachable(t *testing.T) {
	refused := services.RefusedAddr(t)
	closes, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer closes.Close()
	go func() {
		for {
			c, err := closes.Accept()
			if err != nil {
				return
			}
			_, _ = c.Read(make([]byte, 64))
			c.Close()
		}
	}()
	for _, tc := range []struct {
		name, host string
		want       []string
	}{
		{"refused", refused, []string{refused + " (connect: connection refused)"}},
		{"unresolvable", "no-such-host.invalid:27017", []string{"no-such-host.invalid:27017 (the host does not resolve: no such host)"}},
		{"not MongoDB", closes.Addr().String(), []string{closes.Addr().String() + " (closed the connection: is it a MongoDB server?)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Source{}
			err := s.Open(context.Background(), sdk.OpenRequest{Pipeline: "p", Settings: sdk.Settings{
				"uri": "mongodb://" + tc.host + "/?serverSelectionTimeoutMS=300&connectTimeoutMS=300", "database": "shop", "collection": "orders"}})
			want := append([]string{"mongodb: opening the change stream on shop.orders at the latest change: no MongoDB server could be used within serverSelectionTimeoutMS (300ms); servers tried: ",
				": check uri"}, tc.want...)
			for _, w := range want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("Open = %v, want it to say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "topology") || strings.Contains(err.Error(), "deadline exceeded") {
				t.Fatalf("Open = %v: the driver's words", err)
			}
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Open = %v wraps context.DeadlineExceeded: the host would take it for its own deadline", err)
			}
			if errors.Is(err, sdk.ErrPermanent) || errors.Is(err, sdk.ErrInvalidSettings) {
				t.Fatalf("Open = %v: an unreachable server is transient", err)
			}
		})
	}
}
