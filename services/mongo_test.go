package services

import (
	"net"
	"testing"
	"time"
)

// TestMongo starts mongo-java-server, restarts it on the same port and stops it.
func TestMongo(t *testing.T) {
	m := StartMongo(t)
	if m.URI != "mongodb://"+m.Addr+"/?directConnection=true" {
		t.Fatalf("URI %q", m.URI)
	}
	pid := m.Pid()
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	if m.Pid() == pid {
		t.Fatal("Restart kept the old process")
	}
	c, err := net.DialTimeout("tcp", m.Addr, time.Second)
	if err != nil {
		t.Fatalf("after Restart: %v", err)
	}
	c.Close()
	if err := m.Stop(5 * time.Second); err != nil || m.Running() {
		t.Fatalf("Stop: %v, running %v", err, m.Running())
	}
}
