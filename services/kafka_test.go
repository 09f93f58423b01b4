package services

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// apiVersions sends a Kafka ApiVersions v0 request to addr and returns the response's error code. With
// tlsConf it speaks TLS.
func apiVersions(t *testing.T, addr string, tlsConf ...*tls.Config) int16 {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	var c net.Conn
	var err error
	if len(tlsConf) > 0 {
		c, err = tls.DialWithDialer(d, "tcp", addr, tlsConf[0])
	} else {
		c, err = d.Dial("tcp", addr)
	}
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

// testCerts returns a CA (as a pool) and a certificate for 127.0.0.1 it signed, with its key, in PEM.
func testCerts(t *testing.T) (roots *x509.CertPool, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "services test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(ca)
	return roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
}

func TestKafka(t *testing.T) {
	roots, cert, key := testCerts(t)
	k := StartKafka(t, KafkaSCRAM("alice", "alice-secret"), KafkaTLS(cert, key))
	if code := apiVersions(t, k.Brokers[0]); code != 0 {
		t.Fatalf("ApiVersions error code %d", code)
	}
	if len(k.SCRAMBrokers) != 1 || len(k.TLSBrokers) != 1 || len(k.SCRAMTLSBrokers) != 1 {
		t.Fatalf("SCRAMBrokers = %v, TLSBrokers = %v, SCRAMTLSBrokers = %v", k.SCRAMBrokers, k.TLSBrokers, k.SCRAMTLSBrokers)
	}
	// The SASL listeners answer ApiVersions before authentication too; the TLS ones serve the certificate,
	// which verifies for 127.0.0.1 against the CA.
	if code := apiVersions(t, k.SCRAMBrokers[0]); code != 0 {
		t.Fatalf("ApiVersions on the SCRAM listener: error code %d", code)
	}
	for _, addr := range []string{k.TLSBrokers[0], k.SCRAMTLSBrokers[0]} {
		if code := apiVersions(t, addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}); code != 0 {
			t.Fatalf("ApiVersions over TLS on %s: error code %d", addr, code)
		}
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
	// A node made again on the same directory (as `services DIR` run twice) keeps the storage's cluster id.
	if err := k.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	again, err := NewKafka(k.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Start(); err != nil {
		t.Fatalf("a node on a directory formatted before: %v", err)
	}
	defer func() { _ = again.Stop(30 * time.Second) }()
	if code := apiVersions(t, again.Brokers[0]); code != 0 {
		t.Fatalf("on the same directory again: ApiVersions error code %d", code)
	}
}
