package mongodb

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/expr-lang/expr"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/services"

	"go.mongodb.org/mongo-driver/v2/bson"
)

func TestParseStartAt(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"latest", "at the latest change", true},
		{"", "at the latest change", true},
		{"2024-05-01T00:00:00Z", "at cluster time 1714521600.0", true},
		{"2024-05-01T02:00:00+02:00", "at cluster time 1714521600.0", true},
		{`{"_data": "8265AB"}`, `after resume token {"_data": "8265AB"}`, true},
		{`{"_data": "8265AB", "_typeBits": {"$binary": {"base64": "QA==", "subType": "00"}}}`, `after resume token {"_data": "8265AB","_typeBits": {"$binary":{"base64":"QA==","subType":"00"}}}`, true},
		{"yesterday", "", false},
		{"2024-05-01", "", false},
		{`{"token": "x"}`, "", false},
	} {
		st, err := parseStartAt(tc.in)
		if (err == nil) != tc.ok || tc.ok && st.String() != tc.want {
			t.Errorf("parseStartAt(%q) = %s, %v; want %s", tc.in, st, err, tc.want)
		}
	}
}

// TestAfterID checks the filter that continues a snapshot after the last _id copied: it must also
// match every _id of a type that sorts later, since $gt only compares within one type bracket.
func TestAfterID(t *testing.T) {
	v := func(x any) bson.RawValue {
		t.Helper()
		typ, b, err := bson.MarshalValue(x)
		if err != nil {
			t.Fatal(err)
		}
		return bson.RawValue{Type: typ, Value: b}
	}
	for _, tc := range []struct {
		last bson.RawValue
		want string
	}{
		{v(int32(5)), `{"$or": [{"_id": {"$gt": {"$numberInt":"5"}}},{"_id": {"$type": ["string","object","binData","objectId","bool","date","timestamp","regex","maxKey"]}}]}`},
		{v(int64(5)), `{"$or": [{"_id": {"$gt": {"$numberLong":"5"}}},{"_id": {"$type": ["string","object","binData","objectId","bool","date","timestamp","regex","maxKey"]}}]}`},
		{v("a"), `{"$or": [{"_id": {"$gt": "a"}},{"_id": {"$type": ["object","binData","objectId","bool","date","timestamp","regex","maxKey"]}}]}`},
		{v(bson.DateTime(0)), `{"$or": [{"_id": {"$gt": {"$date":{"$numberLong":"0"}}}},{"_id": {"$type": ["timestamp","regex","maxKey"]}}]}`},
		{v(bson.MaxKey{}), `{"_id": {"$gt": {"$maxKey":1}}}`},
	} {
		b, err := bson.Marshal(afterID(tc.last))
		if err != nil {
			t.Fatal(err)
		}
		if got := bson.Raw(b).String(); got != tc.want {
			t.Errorf("afterID(%s) =\n%s\nwant\n%s", tc.last, got, tc.want)
		}
	}
}

// TestSnapshotPosition round-trips the positions of a snapshot that starts at a resume token and of one
// that starts at a cluster time, with the collection being copied; and reads a position written by
// version 0.2 of the plugin, which has no collection.
func TestSnapshotPosition(t *testing.T) {
	tok := token(t, "8265AB")
	last := bson.RawValue{Type: bson.TypeString, Value: bsonString("sku-9")}
	ns := namespace{"shop", "orders.2024"}
	for _, from := range []start{{token: tok}, {at: &bson.Timestamp{T: 1714521600, I: 3}}} {
		sn := &snapshot{from: from, ns: ns, last: last}
		for _, kind := range []byte{posSnapshot, posStreamStart} {
			pos, err := sn.position(kind)
			if err != nil || pos[0] != kind {
				t.Fatalf("position(%d) = %x, %v", kind, []byte(pos), err)
			}
			got, err := parseSnapshotPosition(pos)
			if err != nil || got.from.String() != from.String() {
				t.Fatalf("parse(%x) = %s, %v; want %s", []byte(pos), got.from, err, from)
			}
			if kind == posSnapshot && (!got.last.Equal(last) || got.ns != ns) || kind == posStreamStart && (got.last.Type != 0 || got.ns != namespace{}) {
				t.Fatalf("kind %d: ns %s, last = %s", kind, got.ns, got.last)
			}
		}
	}
	// Version 0.2: {tok, last}.
	old, err := bson.Marshal(bson.D{{Key: "tok", Value: tok}, {Key: "last", Value: int32(7)}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseSnapshotPosition(append(record.Position{posSnapshot}, old...))
	if err != nil || got.ns != (namespace{}) || got.last.Int32() != 7 || got.from.token.String() != tok.String() {
		t.Fatalf("version 0.2 position: %+v, %v", got, err)
	}
	if _, err := parseSnapshotPosition([]byte{posSnapshot, 5, 0, 0, 0, 0}); err == nil {
		t.Fatal("a position without a start parsed")
	}
	half, _ := bson.Marshal(bson.D{{Key: "tok", Value: tok}, {Key: "db", Value: "shop"}})
	if _, err := parseSnapshotPosition(append(record.Position{posSnapshot}, half...)); err == nil {
		t.Fatal("a position with a database and no collection parsed")
	}
}

func bsonString(s string) []byte {
	_, b, _ := bson.MarshalValue(s)
	return b
}

// TestTransient checks which errors make the source resume instead of failing.
func TestTransient(t *testing.T) {
	if transient(bson.ErrDecodeToNil) || transient(mongoErr(286, nil)) {
		t.Fatal("a non-network error is transient")
	}
	if !transient(mongoErr(43, []string{"ResumableChangeStreamError"})) {
		t.Fatal("a resumable change stream error is not transient")
	}
	if !historyLost(mongoErr(286, nil)) || historyLost(mongoErr(43, nil)) {
		t.Fatal("historyLost misclassifies")
	}
}

// TestHistoryLost applies each on_history_lost mode to a source whose stored token the server no longer
// has. mongo-java-server never reports lost history (it resumes from any token), so the test hands the
// error to the handler directly; which server errors count as lost history is TestTransient's.
func TestHistoryLost(t *testing.T) {
	srv := services.StartMongo(t)
	ctx := context.Background()
	lost := mongoErr(286, nil)
	stored := start{token: token(t, "8265AB")}
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		mode, startAt string
		wantErr       string // "" when the stream is open again
	}{
		{"fail", "latest", "sluice reset PIPELINE"},
		{"latest", past, ""},
		{"timestamp", past, ""},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			s := &Source{}
			settings := sdk.Settings{"uri": srv.URI, "database": "shop", "collection": "lost", "on_history_lost": tc.mode, "start_at": tc.startAt}
			if err := s.Open(ctx, sdk.OpenRequest{Settings: settings, MaxBatchRecords: 10}); err != nil {
				t.Fatal(err)
			}
			defer s.Close(ctx)
			s.lastEmitted = stored.token
			err := s.historyLost(ctx, stored, lost)
			if tc.wantErr != "" {
				if !errors.Is(err, sdk.ErrPermanent) || !errors.Is(err, sdk.ErrHistoryLost) || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "shop.lost") {
					t.Fatalf("err = %v, want a permanent, history-lost error naming the collection and %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || s.stream == nil || s.lastEmitted != nil {
				t.Fatalf("err %v, stream %v, lastEmitted %s", err, s.stream, s.lastEmitted)
			}
			if want := (start{}).String(); tc.mode == "latest" && s.from.String() != want {
				t.Fatalf("reopened %s, want %s", s.from, want)
			}
			if tc.mode == "timestamp" && s.from.String() != s.startAt.String() {
				t.Fatalf("reopened %s, want start_at %s", s.from, s.startAt)
			}
		})
	}
}

// TestTLSConfig: the driver gets the configuration of the shared TLS settings, a CA bundle and a client
// certificate with its key, here in one PEM file named in both tls_cert_file and tls_key_file. That file
// named in tls_cert_file alone (what mongodb's tls_cert_file meant before the shared settings) is refused,
// by the spec's rules as by Open, with a message that says to name it in tls_key_file too.
func TestTLSConfig(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sluice-test"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	dir := t.TempDir()
	ca, both := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem")
	if err := os.WriteFile(ca, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(both, append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})...), 0o600); err != nil {
		t.Fatal(err)
	}
	options := func(settings sdk.Settings) (*tls.Config, error) {
		var cfg Config
		if err := settings.Decode(&cfg); err != nil {
			return nil, err
		}
		copts, err := clientOptions(cfg)
		if err != nil {
			return nil, err
		}
		return copts.TLSConfig, nil
	}

	tc, err := options(sdk.Settings{"uri": "mongodb://db.example:27017", "tls_ca_file": ca, "tls_cert_file": both, "tls_key_file": both})
	if err != nil || tc == nil || tc.RootCAs == nil || len(tc.Certificates) != 1 || tc.InsecureSkipVerify || tc.MinVersion != tls.VersionTLS12 {
		t.Fatalf("client TLS config = %+v, %v", tc, err)
	}
	if tc, err := options(sdk.Settings{"uri": "mongodb://db.example:27017/?tls=true"}); err != nil || tc == nil || tc.RootCAs != nil {
		t.Fatalf("without tls settings, the uri's TLS options: %+v, %v", tc, err)
	}
	if tc, err := options(sdk.Settings{"uri": "mongodb://db.example:27017"}); err != nil || tc != nil {
		t.Fatalf("without tls settings or uri options, TLS is on: %+v, %v", tc, err)
	}
	if tc, err := options(sdk.Settings{"uri": "mongodb://db.example:27017", "tls": true, "tls_server_name": "mongo.internal"}); err != nil || tc == nil || tc.ServerName != "mongo.internal" {
		t.Fatalf("tls_server_name: %+v, %v", tc, err)
	}
	for _, bad := range []struct {
		settings sdk.Settings
		want     string
	}{
		{sdk.Settings{"uri": "mongodb://x", "tls_ca_file": both + ".missing"}, "tls_ca_file"},
		{sdk.Settings{"uri": "mongodb://x", "tls_cert_file": ca, "tls_key_file": ca}, "tls_key_file " + ca + " holds no PEM private key"},
		{sdk.Settings{"uri": "mongodb://x", "tls_cert_file": both}, "a PEM file holding the certificate and its key is named in both"},
		{sdk.Settings{"uri": "mongodb://x", "tls_key_file": both}, "tls_cert_file and tls_key_file go together"},
	} {
		if _, err := options(bad.settings); !errors.Is(err, sdk.ErrInvalidSettings) || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: %v, want ErrInvalidSettings saying %q", bad.settings, err, bad.want)
		}
		s := &Source{}
		if err := s.Open(context.Background(), sdk.OpenRequest{Settings: bad.settings}); !errors.Is(err, sdk.ErrInvalidSettings) {
			t.Errorf("Open(%v) = %v, want ErrInvalidSettings", bad.settings, err)
		}
	}

	// The rules the host checks when it loads a connector file say the same, before the plugin starts.
	refused := func(settings map[string]any) []string {
		var msgs []string
		for _, r := range spec.Source.Rules {
			env := map[string]any{} // as the host hands them over: defaults applied, nil when absent
			for _, s := range spec.Source.Settings {
				v, err := s.DefaultValue()
				if err != nil {
					t.Fatalf("%s: %v", s.Name, err)
				}
				env[s.Name] = v
			}
			for k, v := range settings {
				env[k] = v
			}
			p, err := expr.Compile(r.Expr, expr.AsBool())
			if err != nil {
				t.Fatalf("rule %q: %v", r.Expr, err)
			}
			ok, err := expr.Run(p, env)
			if err != nil {
				t.Fatalf("rule %q: %v", r.Expr, err)
			}
			if !ok.(bool) {
				msgs = append(msgs, r.Message)
			}
		}
		return msgs
	}
	if msgs := refused(map[string]any{"uri": "mongodb://x", "tls_cert_file": both}); len(msgs) != 1 || !strings.Contains(msgs[0], "named in both") {
		t.Errorf("rules on tls_cert_file alone: %q", msgs)
	}
	if msgs := refused(map[string]any{"uri": "mongodb://x", "tls_cert_file": both, "tls_key_file": both}); len(msgs) != 0 {
		t.Errorf("rules on one file in tls_cert_file and tls_key_file: %q", msgs)
	}
}

// TestClassify checks which server errors fail the pipeline at once instead of being retried.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err       error
		permanent bool
	}{
		{mongoErr(18, nil), true},    // AuthenticationFailed
		{mongoErr(13, nil), true},    // Unauthorized
		{mongoErr(40573, nil), true}, // not a replica set
		{mongoErr(10334, nil), true}, // BSONObjectTooLarge
		{mongoErr(43, []string{"ResumableChangeStreamError"}), false},
		{fmt.Errorf("mongodb: connecting: %w", mongoErr(11600, nil)), false}, // InterruptedAtShutdown
		{errors.New("i/o timeout"), false},
	} {
		if got := errors.Is(classify(tc.err), sdk.ErrPermanent); got != tc.permanent {
			t.Errorf("classify(%v): permanent %v, want %v", tc.err, got, tc.permanent)
		}
	}
}

// TestRejectedCredentialsArePermanent connects with credentials the server refuses: mongo-java-server has
// no authentication, so its refusal of the SASL handshake stands in for a wrong password. Open fails at
// once with a permanent error, so the host does not retry it.
func TestRejectedCredentialsArePermanent(t *testing.T) {
	srv := services.StartMongo(t)
	uri := strings.Replace(srv.URI, "mongodb://", "mongodb://sluice:wrong@", 1)
	s := &Source{}
	defer s.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := s.Open(ctx, sdk.OpenRequest{Pipeline: "p", MaxBatchRecords: 10,
		Settings: sdk.Settings{"uri": uri, "database": "shop", "collection": "orders"}})
	if !errors.Is(err, sdk.ErrPermanent) {
		t.Fatalf("Open = %v, want a permanent error", err)
	}
	t.Logf("Open = %v", err)
}
