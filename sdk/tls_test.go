package sdk_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
)

// writePEM writes a self-signed certificate and its key as PEM: cert.pem, key.pem, and both.pem with both.
func writePEM(t *testing.T) (cert, key, both string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	c := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	p := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
	dir := t.TempDir()
	cert, key, both = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "both.pem")
	for path, data := range map[string][]byte{cert: c, key: p, both: append(append([]byte{}, c...), p...)} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, both
}

func TestTLSConfig(t *testing.T) {
	cert, key, both := writePEM(t)
	tc, err := (&sdk.TLS{CAFile: cert, CertFile: cert, KeyFile: key, ServerName: "db.example"}).Config()
	if err != nil {
		t.Fatal(err)
	}
	if tc.RootCAs == nil || len(tc.Certificates) != 1 || tc.ServerName != "db.example" || tc.InsecureSkipVerify {
		t.Fatalf("config %+v", tc)
	}
	if tc, err := (&sdk.TLS{CertFile: both, KeyFile: both}).Config(); err != nil || len(tc.Certificates) != 1 || tc.RootCAs != nil {
		t.Fatalf("one file holding certificate and key, named in both: %v", err)
	}
	if tc, err := (&sdk.TLS{InsecureSkipVerify: true}).Config(); err != nil || !tc.InsecureSkipVerify {
		t.Fatalf("tls_insecure_skip_verify: %+v, %v", tc, err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tt := range []struct {
		tls  sdk.TLS
		want string
	}{
		{sdk.TLS{CAFile: missing}, "tls_ca_file: open " + missing + ": no such file or directory"},
		{sdk.TLS{CAFile: key}, "tls_ca_file " + key + " holds no PEM certificate"},
		// A file holding certificate and key, named only in tls_cert_file (the old MongoDB setting).
		{sdk.TLS{CertFile: both}, "tls_cert_file and tls_key_file go together: set both, or neither (a PEM file holding the certificate and its key is named in both)"},
		{sdk.TLS{KeyFile: key}, "tls_cert_file and tls_key_file go together"},
		{sdk.TLS{CertFile: missing, KeyFile: key}, "tls_cert_file: open " + missing},
		{sdk.TLS{CertFile: cert, KeyFile: missing}, "tls_key_file: open " + missing},
		{sdk.TLS{CertFile: key, KeyFile: key}, "tls_cert_file " + key + " holds no PEM certificate"},
		{sdk.TLS{CertFile: cert, KeyFile: cert}, "tls_key_file " + cert + " holds no PEM private key"},
		{sdk.TLS{CAFile: cert, InsecureSkipVerify: true}, "tls_insecure_skip_verify and tls_ca_file together"},
	} {
		_, err := tt.tls.Config()
		if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, sdk.ErrInvalidSettings) {
			t.Errorf("%+v: got %v, want an invalid-settings error containing %q", tt.tls, err, tt.want)
		}
	}
	_, other, _ := writePEM(t)
	if _, err := (&sdk.TLS{CertFile: cert, KeyFile: other}).Config(); err == nil ||
		!strings.Contains(err.Error(), "tls_cert_file "+cert+" and tls_key_file "+other+": ") {
		t.Errorf("a key that does not match: %v", err)
	}
}

func TestTLSSettings(t *testing.T) {
	type cfg struct {
		sdk.TLS `setting:",squash"`
	}
	s := sdk.MustSettingsOf[cfg]()
	var names []string
	for _, st := range s {
		names = append(names, st.Name)
	}
	if got := strings.Join(names, " "); got != "tls tls_ca_file tls_cert_file tls_key_file tls_server_name tls_insecure_skip_verify" {
		t.Errorf("settings %s", got)
	}
	var c cfg
	if err := (sdk.Settings{"tls_server_name": "x"}).Decode(&c); err != nil || !c.On() || c.Enabled {
		t.Errorf("decoded %+v, %v: want On() from tls_server_name alone", c, err)
	}
	if (&sdk.TLS{}).On() {
		t.Error("no settings: TLS on")
	}
}
