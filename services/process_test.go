package services

import (
	"errors"
	"net"
	"syscall"
	"testing"
)

// TestRefusedAddr: a connection to the address is refused, and while the test runs no listener is given its
// port (the kernel hands out ephemeral ports in turn, so a port merely closed comes back soon).
func TestRefusedAddr(t *testing.T) {
	addr := RefusedAddr(t)
	if _, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dialling %s: %v, want connection refused", addr, err)
	}
	for range 2000 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		got := ln.Addr().String()
		ln.Close()
		if got == addr {
			t.Fatalf("a listener was given %s, the refused address's port", addr)
		}
	}
	if _, err := net.Listen("tcp", addr); err == nil {
		t.Fatalf("listening on %s succeeded; the refused address's port should be held", addr)
	}
}
