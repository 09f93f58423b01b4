package redis_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice/plugins/redis"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/services"
)

// writeCerts writes a CA and a certificate it signed for 127.0.0.1 (usable by server and client) into
// dir, and returns the paths of the CA, the certificate and its key.
func writeCerts(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sluice test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	caCert, _ := x509.ParseCertificate(caDER)
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(leafKey)
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", leafDER), write("key.pem", "EC PRIVATE KEY", keyDER)
}

// TestTLS connects over TLS, verifying the server with tls_ca_file (by settings and by a rediss:// url),
// and with a client certificate to a server that requires one.
func TestTLS(t *testing.T) {
	ca, cert, key := writeCerts(t, t.TempDir())
	srv := services.StartRedis(t, services.RedisOptions{TLSCertFile: cert, TLSKeyFile: key, TLSCAFile: ca})
	mutual := services.StartRedis(t, services.RedisOptions{TLSCertFile: cert, TLSKeyFile: key, TLSCAFile: ca, TLSAuthClients: true})
	for _, tc := range []struct {
		name     string
		settings map[string]any
	}{
		{"tls_ca_file", map[string]any{"addr": srv.Addr, "tls": true, "tls_ca_file": ca}},
		{"rediss url", map[string]any{"url": "rediss://" + srv.Addr, "tls_ca_file": ca}},
		{"client certificate", map[string]any{"addr": mutual.Addr, "tls_ca_file": ca, "tls_cert_file": cert, "tls_key_file": key}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.settings["key"] = freshKey()
			b := &redis.Buffer{}
			defer b.Close(context.Background())
			if err := b.Open(context.Background(), sdk.OpenRequest{Pipeline: "p", Settings: tc.settings}); err != nil {
				t.Fatal(err)
			}
			if err := b.Append(context.Background(), batch(0, 3)); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("unknown CA", func(t *testing.T) {
		b := &redis.Buffer{}
		defer b.Close(context.Background())
		start := time.Now()
		err := b.Open(context.Background(), sdk.OpenRequest{Pipeline: "p",
			Settings: sdk.Settings{"addr": srv.Addr, "tls": true}})
		if err == nil || time.Since(start) > 10*time.Second {
			t.Fatalf("Open = %v after %v; want a certificate error at once, not retried", err, time.Since(start))
		}
	})
}
