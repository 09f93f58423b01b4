package services

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// apiVersions sends a Kafka ApiVersions v0 request to addr and returns the response's error code.
func apiVersions(t *testing.T, addr string) int16 {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var req bytes.Buffer
	_ = binary.Write(&req, binary.BigEndian, struct {
		Size         int32
		Key, Version int16
		Correlation  int32
		ClientIDLen  int16
	}{Size: 2 + 2 + 4 + 2 + 4, Key: 18, Version: 0, Correlation: 7, ClientIDLen: 4})
	req.WriteString("test")
	if _, err := c.Write(req.Bytes()); err != nil {
		t.Fatal(err)
	}
	var head struct {
		Size, Correlation int32
		Error             int16
	}
	if err := binary.Read(c, binary.BigEndian, &head); err != nil {
		t.Fatal(err)
	}
	if head.Correlation != 7 {
		t.Fatalf("correlation id %d, want 7", head.Correlation)
	}
	_, _ = io.CopyN(io.Discard, c, int64(head.Size-6))
	return head.Error
}

func TestKafka(t *testing.T) {
	k := StartKafka(t, KafkaSCRAM("alice", "alice-secret"))
	if code := apiVersions(t, k.Brokers[0]); code != 0 {
		t.Fatalf("ApiVersions error code %d", code)
	}
	if len(k.SCRAMBrokers) != 1 {
		t.Fatalf("SCRAMBrokers = %v", k.SCRAMBrokers)
	}
	// The SASL listener answers ApiVersions before authentication too.
	if code := apiVersions(t, k.SCRAMBrokers[0]); code != 0 {
		t.Fatalf("ApiVersions on the SCRAM listener: error code %d", code)
	}
	conf, err := os.ReadFile(filepath.Join(k.Dir, "server.properties"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(conf), "alice-secret") {
		t.Fatal("server.properties holds the SCRAM password")
	}
	if err := k.Restart(); err != nil {
		t.Fatal(err)
	}
	if code := apiVersions(t, k.Brokers[0]); code != 0 {
		t.Fatalf("after Restart: ApiVersions error code %d", code)
	}
	if err := k.Crash(); err != nil {
		t.Fatal(err)
	}
	if code := apiVersions(t, k.Brokers[0]); code != 0 {
		t.Fatalf("after Crash: ApiVersions error code %d", code)
	}
}
