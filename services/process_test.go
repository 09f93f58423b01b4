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

// TestPortTaken: a server whose port another process bound first fails to start, and portTaken says why
// (startServer then tries again on another port).
func TestPortTaken(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	port := held.Addr().(*net.TCPAddr).Port
	t.Run("redis", func(t *testing.T) {
		r, err := NewRedis(t.TempDir(), RedisOptions{Port: port})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(); err == nil || !r.portTaken() {
			t.Fatalf("Start = %v, portTaken %v; want a failure for the port in use", err, r.portTaken())
		}
	})
	t.Run("mongo", func(t *testing.T) {
		m, err := NewMongo(t.TempDir(), port)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = m.Kill() }()
		if err := m.Start(); err == nil || !m.portTaken() {
			t.Fatalf("Start = %v, portTaken %v; want a failure for the port in use", err, m.portTaken())
		}
	})
}

type fakeServer struct {
	taken bool
	err   error
}

func (f *fakeServer) Start() error    { return f.err }
func (f *fakeServer) portTaken() bool { return f.taken }

// TestStartServer: startServer tries again only while the port was taken, at most three times.
func TestStartServer(t *testing.T) {
	inUse := errors.New("exited while starting")
	for _, tc := range []struct {
		name    string
		servers []*fakeServer
		made    int
		err     error
	}{
		{"first start", []*fakeServer{{}}, 1, nil},
		{"port taken once", []*fakeServer{{taken: true, err: inUse}, {}}, 2, nil},
		{"port taken thrice", []*fakeServer{{taken: true, err: inUse}, {taken: true, err: inUse}, {taken: true, err: inUse}, {}}, 3, inUse},
		{"another failure", []*fakeServer{{err: inUse}, {}}, 1, inUse},
	} {
		made := 0
		_, err := startServer(func() (*fakeServer, error) { made++; return tc.servers[made-1], nil })
		if made != tc.made || !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
			t.Errorf("%s: made %d, err %v; want %d, %v", tc.name, made, err, tc.made, tc.err)
		}
	}
}
