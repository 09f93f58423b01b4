package services

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Mongo is mongo-java-server (in-memory backend, oplog enabled so change streams work) started on
// 127.0.0.1 by the tiny launcher in services/mongo (java Launcher.java PORT, dependencies from Maven
// Central). It speaks the MongoDB wire protocol at version 8 (MongoDB 4.2); its data is in memory and
// dies with the process.
type Mongo struct {
	*Process
	// Addr is host:port; URI is a connection string for it.
	Addr, URI string
}

// MongoOption configures a server made by NewMongo.
type MongoOption func(*mongoConfig)

type mongoConfig struct{ heap string }

// MongoHeap sets the JVM's maximum heap (-Xmx), such as "1g". Default "512m": enough for tests; the server
// keeps every document and its oplog in memory, so long runs with many changes need more.
func MongoHeap(size string) MongoOption { return func(c *mongoConfig) { c.heap = size } }

// NewMongo describes a mongo-java-server with its log in dir, on port (0: a free one). Resolving its
// Java dependencies (first use only) needs Maven and network access to Maven Central.
func NewMongo(dir string, port int, opts ...MongoOption) (*Mongo, error) {
	cfg := mongoConfig{heap: "512m"}
	for _, o := range opts {
		o(&cfg)
	}
	java, err := LookPath("java", "install a Java 17 runtime (apt-get install openjdk-17-jdk-headless)")
	if err != nil {
		return nil, err
	}
	src := filepath.Join(Root(), "mongo")
	cp, err := Classpath(src)
	if err != nil {
		return nil, err
	}
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	args := []string{java, "-Xmx" + cfg.heap, "-XX:+UseSerialGC", "-cp", cp, filepath.Join(src, "Launcher.java"), strconv.Itoa(port)}
	addr := Addr(port)
	return &Mongo{Process: NewProcess("mongo", dir, args), Addr: addr,
		URI: "mongodb://" + addr + "/?directConnection=true"}, nil
}

// Start starts the server and waits until it answers a hello.
func (m *Mongo) Start() error {
	if err := m.Process.Start(); err != nil {
		return err
	}
	return m.WaitFor(90*time.Second, m.ready)
}

// Restart stops the server (SIGTERM, then SIGKILL after 5 s) and starts it again on the same port. Its
// in-memory data and oplog are gone: clients see a new, empty server.
func (m *Mongo) Restart() error {
	if err := m.Stop(5 * time.Second); err != nil {
		return err
	}
	return m.Start()
}

// ready waits for the launcher's readiness line in the log, then checks the port.
func (m *Mongo) ready(ctx context.Context) error {
	if !m.logHas("mongo-java-server listening on") {
		return fmt.Errorf("not listening yet")
	}
	c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", m.Addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// StartMongo starts a mongo-java-server for the test and stops it when the test ends.
func StartMongo(t testing.TB) *Mongo {
	t.Helper()
	m, err := startServer(func() (*Mongo, error) {
		dir := filepath.Join(t.TempDir(), "mongo")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		return NewMongo(dir, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop(5 * time.Second) })
	return m
}

// logHas reports whether the process's log contains a line starting with prefix.
func (p *Process) logHas(prefix string) bool {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if len(s.Text()) >= len(prefix) && s.Text()[:len(prefix)] == prefix {
			return true
		}
	}
	return false
}
