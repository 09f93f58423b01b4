package sdk

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// TLS is the group of client TLS settings every first-party plugin that connects over TLS declares the
// same way. Embed it in a config struct with `setting:",squash"` (see SettingsOf) and add TLSRules to
// the stage's rules:
//
//	type Config struct {
//		Addr    string `setting:"addr,required" doc:"The server, host:port."`
//		sdk.TLS `setting:",squash"`
//	}
//
// tls_cert_file holds the client certificate and tls_key_file its key; a PEM file holding both is named
// in both.
type TLS struct {
	Enabled            bool   `setting:"tls" default:"false" doc:"Connect with TLS, verifying the server against the system's CAs (or tls_ca_file). Default false; any other tls_* setting turns it on."`
	CAFile             string `setting:"tls_ca_file" doc:"A PEM file of CA certificates to verify the server with, instead of the system's."`
	CertFile           string `setting:"tls_cert_file" doc:"A PEM client certificate, for servers that require mutual TLS; needs tls_key_file. A file holding both the certificate and its key is named in both."`
	KeyFile            string `setting:"tls_key_file" doc:"The PEM private key of tls_cert_file."`
	ServerName         string `setting:"tls_server_name" doc:"The name the server's certificate must carry. Default: the host connected to."`
	InsecureSkipVerify bool   `setting:"tls_insecure_skip_verify" default:"false" doc:"Accept any server certificate, unverified: for tests only, never in production (anyone between sluice and the server can read and change the traffic). Default false."`
}

// TLSRules are the rules across the TLS settings, for a stage whose config embeds TLS.
var TLSRules = []Rule{
	{Expr: `((tls_cert_file ?? "") == "") == ((tls_key_file ?? "") == "")`, Settings: []string{"tls_cert_file", "tls_key_file"},
		Message: "tls_cert_file and tls_key_file go together: set both, or neither (a PEM file holding the certificate and its key is named in both)"},
	{Expr: `!(tls_insecure_skip_verify && (tls_ca_file ?? "") != "")`, Settings: []string{"tls_insecure_skip_verify", "tls_ca_file"},
		Message: "tls_insecure_skip_verify and tls_ca_file together: the CA would never be checked; set one"},
}

// On reports whether the settings ask for TLS: tls, or any other tls_* setting.
func (t *TLS) On() bool {
	return t.Enabled || t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify
}

// Check checks what TLSRules check, without reading any file: for a stage to refuse at Open what
// validate would have reported. Errors are of class ErrInvalidSettings.
func (t *TLS) Check() error {
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		return InvalidSettings(errors.New("tls_cert_file and tls_key_file go together: set both, or neither (a PEM file holding the certificate and its key is named in both)"))
	case t.InsecureSkipVerify && t.CAFile != "":
		return InvalidSettings(errors.New("tls_insecure_skip_verify and tls_ca_file together: the CA would never be checked; set one"))
	}
	return nil
}

// Config builds the client TLS configuration the settings describe (TLS 1.2 at least), reading the
// files now; ServerName is tls_server_name, or empty (the caller's dialler then uses the host it
// dials). Errors are of class ErrInvalidSettings (InvalidSettings) and name the setting and the file,
// never the files' content.
func (t *TLS) Config() (*tls.Config, error) {
	bad := func(format string, args ...any) (*tls.Config, error) {
		return nil, InvalidSettings(fmt.Errorf(format, args...))
	}
	if err := t.Check(); err != nil {
		return nil, err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // an opt-in setting, documented as for tests only
	if t.CAFile != "" {
		data, err := os.ReadFile(t.CAFile)
		if err != nil {
			return bad("tls_ca_file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return bad("tls_ca_file %s holds no PEM certificate", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		certPEM, err := os.ReadFile(t.CertFile)
		if err != nil {
			return bad("tls_cert_file: %v", err)
		}
		keyPEM, err := os.ReadFile(t.KeyFile)
		if err != nil {
			return bad("tls_key_file: %v", err)
		}
		switch {
		case !hasBlock(certPEM, "CERTIFICATE"):
			return bad("tls_cert_file %s holds no PEM certificate", t.CertFile)
		case !hasBlock(keyPEM, "PRIVATE KEY"):
			return bad("tls_key_file %s holds no PEM private key", t.KeyFile)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return bad("tls_cert_file %s and tls_key_file %s: %v", t.CertFile, t.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// hasBlock reports whether data holds a PEM block whose type ends with suffix ("PRIVATE KEY" matches
// "EC PRIVATE KEY" too).
func hasBlock(data []byte, suffix string) bool {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return false
		}
		if strings.HasSuffix(b.Type, suffix) {
			return true
		}
	}
}
