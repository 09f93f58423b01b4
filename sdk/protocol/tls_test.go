package protocol

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/proto/sluicev1"
)

// envOwnTLS makes the test binary serve ownTLSPlugin, a plugin that does the TLS handshake itself as one in
// another language must (docs/plugins-in-other-languages.md), instead of running tests. Its value says how
// it behaves: "good"; "no-cert" sends no certificate in its handshake line; "other-cert" sends one
// certificate and serves with another.
const envOwnTLS = "SLUICE_PROTOCOL_TEST_OWN_TLS"

// ownTLSPlugin serves go-plugin's health service and sluice's Plugin service over mutual TLS, with the
// host's certificate from PLUGIN_CLIENT_CERT as the only one it accepts. Its spec's summary names the
// curve of the certificate the host presented in the TLS handshake.
type ownTLSPlugin struct {
	sluicev1.UnimplementedPluginServer
}

func (ownTLSPlugin) Spec(ctx context.Context, _ *sluicev1.Empty) (*sluicev1.SpecResponse, error) {
	summary := "no client certificate"
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
			summary = "host certificate: " + keyName(info.State.PeerCertificates[0])
		}
	}
	spec := sdk.Spec{Name: "owntls", Version: "1", Summary: summary, Sink: &sdk.Stage{Summary: "nothing"}}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	return &sluicev1.SpecResponse{SpecJson: b}, nil
}

// keyName names a certificate's key: "ECDSA P-256", or its algorithm for other keys.
func keyName(c *x509.Certificate) string {
	if k, ok := c.PublicKey.(*ecdsa.PublicKey); ok {
		return "ECDSA " + k.Curve.Params().Name
	}
	return c.PublicKeyAlgorithm.String()
}

func serveOwnTLS(behaviour string) error {
	hostPEM := os.Getenv(envClientCert)
	hostCerts := x509.NewCertPool()
	if !hostCerts.AppendCertsFromPEM([]byte(hostPEM)) {
		return fmt.Errorf("%s holds no certificate: %q", envClientCert, hostPEM)
	}
	_, cert, err := selfSigned()
	if err != nil {
		return err
	}
	sent := cert
	if behaviour == "other-cert" {
		if _, sent, err = selfSigned(); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp(os.Getenv("PLUGIN_UNIX_SOCKET_DIR"), "owntls")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lis, err := net.Listen("unix", filepath.Join(dir, "sock"))
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    hostCerts,
		MinVersion:   tls.VersionTLS12,
	})))
	sluicev1.RegisterPluginServer(srv, ownTLSPlugin{})
	hs := health.NewServer()
	hs.SetServingStatus(plugin.GRPCServiceName, grpc_health_v1.HealthCheckResponse_SERVING)
	grpc_health_v1.RegisterHealthServer(srv, hs)
	field6 := base64.RawStdEncoding.EncodeToString(sent.Certificate[0])
	if behaviour == "no-cert" {
		field6 = ""
	}
	fmt.Printf("1|%d|unix|%s|grpc|%s\n", sdk.ProtocolVersion, lis.Addr(), field6)
	return srv.Serve(lis)
}

// TestHostCertificateP256 starts a plugin that does mutual TLS itself and checks the certificate the host
// presents in the handshake is ECDSA P-256 (which BoringSSL, the TLS stack of gRPC in Python and C++,
// accepts; go-plugin's own is P-521, which it refuses) and the one passed in PLUGIN_CLIENT_CERT.
func TestHostCertificateP256(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Launch(LaunchConfig{Path: exe, Env: []string{envOwnTLS + "=good"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	spec, err := c.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := "host certificate: ECDSA P-256"; spec.Summary != want {
		t.Errorf("the plugin says %q, want %q", spec.Summary, want)
	}
	if err := c.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

// TestHostCertificate checks the certificate Launch makes: self-signed, for localhost, for both ends of a
// connection, and ECDSA P-256.
func TestHostCertificate(t *testing.T) {
	h, err := newHostTLS()
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(h.certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", h.certPEM)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got := keyName(cert); got != "ECDSA P-256" {
		t.Errorf("key %s, want ECDSA P-256", got)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("verifying it as its own root for %v: %v", usage, err)
		}
	}
	if !h.config.Certificates[0].Leaf.Equal(cert) {
		t.Error("the certificate in PLUGIN_CLIENT_CERT is not the one the host presents")
	}
	if h.gotServerCert() {
		t.Error("a fresh config claims to trust a plugin certificate")
	}
}

// TestPluginCertificateChecked: the host refuses a plugin whose handshake line has no certificate, and
// one that serves with another certificate than the one it sent.
func TestPluginCertificateChecked(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("no certificate", func(t *testing.T) {
		_, err := Launch(LaunchConfig{Path: exe, Env: []string{envOwnTLS + "=no-cert"}})
		var se *StartError
		if !errors.As(err, &se) {
			t.Fatalf("Launch = %v, want a *StartError", err)
		}
		if want := "sent no TLS certificate in its plugin handshake"; !strings.HasPrefix(se.Reason, want) {
			t.Errorf("reason %q, want it to start with %q", se.Reason, want)
		}
	})
	t.Run("another certificate", func(t *testing.T) {
		_, err := Launch(LaunchConfig{Path: exe, Env: []string{envOwnTLS + "=other-cert"}})
		var se *StartError
		if !errors.As(err, &se) {
			t.Fatalf("Launch = %v, want a *StartError", err)
		}
		if want := "but serves another TLS certificate there than the one its handshake sent"; !strings.HasSuffix(se.Reason, want) {
			t.Errorf("reason %q, want it to end with %q", se.Reason, want)
		}
	})
}

// TestSDKPluginRequiresHostCertificate: a plugin built with the SDK accepts only the host that started it.
// A client with another certificate, or none, is refused, even one that trusts any server certificate.
func TestSDKPluginRequiresHostCertificate(t *testing.T) {
	c, _ := launchCrash(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Spec(ctx); err != nil {
		t.Fatalf("the host itself: %v", err)
	}
	rc := c.client.ReattachConfig()
	if rc == nil {
		t.Fatal("no address for the plugin")
	}
	_, other, err := selfSigned()
	if err != nil {
		t.Fatal(err)
	}
	for name, certs := range map[string][]tls.Certificate{"another certificate": {other}, "no certificate": nil} {
		t.Run(name, func(t *testing.T) {
			creds := credentials.NewTLS(&tls.Config{Certificates: certs, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
			cc, err := grpc.NewClient("passthrough:///plugin", grpc.WithTransportCredentials(creds),
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, rc.Addr.Network(), rc.Addr.String())
				}))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if _, err := sluicev1.NewPluginClient(cc).Spec(ctx, &sluicev1.Empty{}); err == nil {
				t.Fatal("the plugin answered a client whose certificate the host did not send")
			}
		})
	}
}
