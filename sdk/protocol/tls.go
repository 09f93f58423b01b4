package protocol

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"
)

// The host and each plugin process authenticate each other with mutual TLS, as go-plugin's AutoMTLS does,
// except that the host makes its certificate itself: go-plugin's is ECDSA on P-521, which the TLS stacks
// of gRPC in other languages (BoringSSL's, in Python, C++, Ruby…) refuse. Per plugin process:
//
//  1. the host makes a fresh self-signed certificate (ECDSA P-256, for "localhost") and passes it, PEM, in
//     the plugin's environment as PLUGIN_CLIENT_CERT;
//  2. the plugin makes its own, serves TLS with it, requires a client certificate signed by the host's
//     (itself), and sends it in the sixth field of its handshake line (DER, base64 without padding);
//  3. go-plugin puts that certificate in the host's RootCAs: the host connects only to the process it
//     started. A plugin that sends none is refused (errNoServerCert).
//
// Plugins built with the SDK do step 2 through go-plugin (their own certificate is P-521, which only Go
// verifies). docs/plugins-in-other-languages.md tells authors in other languages what to do.

// Fields of the host's certificate.
const (
	// tlsServerName is the name both certificates are made for and verified against.
	tlsServerName = "localhost"
	// certValidity is how long the host's certificate is valid: one is made per plugin process and
	// lives as long as it, which has no bound.
	certValidity = 30 * 365 * 24 * time.Hour
)

// hostTLS is the host's side of mutual TLS with one plugin process.
type hostTLS struct {
	// certPEM is the host's certificate, PEM, for PLUGIN_CLIENT_CERT.
	certPEM []byte
	// config is the TLS configuration the host dials with. Its RootCAs start as noRoots, an empty pool
	// that trusts nothing; go-plugin replaces them with the certificate the plugin sends.
	config  *tls.Config
	noRoots *x509.CertPool
}

// newHostTLS makes a fresh certificate and key for the host's side of one plugin connection.
func newHostTLS() (*hostTLS, error) {
	certPEM, cert, err := selfSigned()
	if err != nil {
		return nil, fmt.Errorf("making the host's TLS certificate: %w", err)
	}
	noRoots := x509.NewCertPool()
	return &hostTLS{
		certPEM: certPEM,
		config: &tls.Config{
			Certificates: []tls.Certificate{cert},
			RootCAs:      noRoots,
			ServerName:   tlsServerName,
			MinVersion:   tls.VersionTLS12,
			// go-plugin sets ClientCAs to the plugin's certificate too: should the host ever serve the
			// plugin (go-plugin's broker), it would accept only that plugin.
			ClientAuth: tls.RequireAndVerifyClientCert,
			ClientCAs:  noRoots,
		},
		noRoots: noRoots,
	}, nil
}

// gotServerCert reports whether go-plugin has taken the plugin's certificate from its handshake line.
// Call it only after plugin.Client.Client has returned.
func (h *hostTLS) gotServerCert() bool { return h.config.RootCAs != h.noRoots }

// selfSigned makes a self-signed ECDSA P-256 certificate for tlsServerName, valid for both ends of a
// connection, and returns it as PEM and as a tls.Certificate.
func selfSigned() ([]byte, tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	now := time.Now()
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: tlsServerName, Organization: []string{"sluice"}},
		DNSNames:              []string{tlsServerName},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		// Self-signed and trusted as its own root by the peer.
		IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return certPEM, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
