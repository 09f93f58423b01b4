package kafka

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
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/services"
)

// openErr opens a Sink with settings, closes it, and returns what Open returned.
func openErr(t *testing.T, pipeline string, settings map[string]any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := &Sink{}
	err := s.Open(ctx, sdk.OpenRequest{Pipeline: pipeline, Settings: sdk.Settings(settings)})
	_ = s.Close(ctx)
	return err
}

// wantClass fails the test unless err is of class (sdk.ErrPermanent, sdk.ErrInvalidSettings, or nil for
// transient) and its message holds each of want.
func wantClass(t *testing.T, err, class error, want ...string) {
	t.Helper()
	switch {
	case err == nil:
		t.Fatalf("no error; want one of class %v saying %q", class, want)
	case class == nil && sdk.IsPermanent(err):
		t.Fatalf("error %q is permanent; want it transient", err)
	case class != nil && !errors.Is(err, class):
		t.Fatalf("error %q is not of class %v", err, class)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not say %q", err, w)
		}
	}
	t.Logf("%v", err)
}

// topicExists asks the cluster whether topic exists, without creating it.
func topicExists(t *testing.T, brokers []string, topic string) bool {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	infos, err := lookupTopics(ctx, cl, []string{topic})
	if err != nil {
		t.Fatal(err)
	}
	return infos[topic].err == nil
}

// TestMissingTopic: with auto_create_topics false (the default), Open fails with a permanent error naming
// the topic and the setting, and creates nothing; with auto_create_topics true the brokers create it.
func TestMissingTopic(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		missing := "missing-" + newTopic(t, b.brokers, 1)
		for _, transactional := range []bool{true, false} {
			err := openErr(t, "missing", settingsFor(b, missing, map[string]any{"transactional": transactional}))
			wantClass(t, err, sdk.ErrPermanent, fmt.Sprintf(
				`kafka: topic %q does not exist on the cluster at %s and auto_create_topics is false; create it or set auto_create_topics: true`,
				missing, strings.Join(b.brokers, ",")))
		}
		if topicExists(t, b.brokers, missing) {
			t.Fatalf("looking %s up created it", missing)
		}
		s := openSink(t, "missing-auto", settingsFor(b, missing, map[string]any{"auto_create_topics": true}), false)
		if err := s.Write(context.Background(), makeBatch(0, 3)); err != nil {
			t.Fatal(err)
		}
		verify(t, b.brokers, missing, makeBatch(0, 3).Records)
	})
}

// TestAutoCreateRefused: with auto_create_topics true and brokers that do not create topics, writing to
// a missing topic fails with a permanent error saying so.
func TestAutoCreateRefused(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1)) // auto.create.topics.enable off
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := backend{name: "kfake", brokers: c.ListenAddrs()}
	s := openSink(t, "auto-refused", settingsFor(b, "nowhere", map[string]any{"auto_create_topics": true}), false)
	wantClass(t, s.Write(context.Background(), makeBatch(0, 2)), sdk.ErrPermanent,
		"kafka: a topic does not exist and the brokers at "+b.brokers[0]+" did not create it although auto_create_topics is true",
		"topic nowhere: UNKNOWN_TOPIC_OR_PARTITION")
}

// TestRouteToMissingTopic: a record routed to a topic that does not exist fails the write with a
// permanent error naming the topic and the record's position when the pipeline has no dead-letter sink,
// and is rejected (the rest committed) when it has one. Once someone creates the topic, records routed to
// it are written: after missingRecheck, not before (the sink does not ask the cluster on every write).
func TestRouteToMissingTopic(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		topic := newTopic(t, b.brokers, 1)
		later := "later-" + topic
		settings := settingsFor(b, topic, nil)
		batch := makeBatch(0, 5)
		batch.Records[3].Meta = batch.Records[3].Meta.Set(record.MetaRoute, later)
		defer func(d time.Duration) { missingRecheck = d }(missingRecheck)
		missingRecheck = time.Hour

		strict := openSink(t, "route-missing-strict", settings, false)
		wantClass(t, strict.Write(ctx, batch), sdk.ErrPermanent,
			fmt.Sprintf("record at position %x cannot be written: routed to topic %q, which does not exist", []byte(pos(3)), later),
			"auto_create_topics is false", "no dead-letter sink")
		if got := checkpoint(t, strict); got != nil {
			t.Fatalf("Checkpoint after the failed write = %q, want nil", got)
		}

		s := openSink(t, "route-missing", settings, true)
		err := s.Write(ctx, batch)
		var rej *sdk.RejectError
		if !errors.As(err, &rej) || len(rej.Rejections) != 1 || rej.Rejections[0].Index != 3 ||
			!strings.Contains(rej.Rejections[0].Reason, fmt.Sprintf("topic %q, which does not exist", later)) {
			t.Fatalf("Write = %v, want record 3 rejected for its missing topic", err)
		}
		verify(t, b.brokers, topic, []record.Record{batch.Records[0], batch.Records[1], batch.Records[2], batch.Records[4]})

		createTopic(t, later, 1, kgo.SeedBrokers(b.brokers...))
		next := makeBatch(5, 2)
		next.Records[1].Meta = next.Records[1].Meta.Set(record.MetaRoute, later)
		if err := s.Write(ctx, next); !errors.As(err, &rej) {
			t.Fatalf("a write within missingRecheck of the lookup = %v, want the record rejected again", err)
		}
		missingRecheck = 0
		next = makeBatch(7, 2)
		next.Records[1].Meta = next.Records[1].Meta.Set(record.MetaRoute, later)
		if err := s.Write(ctx, next); err != nil {
			t.Fatalf("a write after the topic was created: %v", err)
		}
		verify(t, b.brokers, later, next.Records[1:])
		if got := checkpoint(t, s); !got.Equal(next.Position) {
			t.Fatalf("Checkpoint = %q, want %q", got, next.Position)
		}
	})
}

// TestNoTopic: a record without route, when the topic setting is empty, is rejected, or fails the write
// permanently without a dead-letter sink.
func TestNoTopic(t *testing.T) {
	b := fakeBackend(t)
	topic := newTopic(t, b.brokers, 1)
	settings := settingsFor(b, "", nil)
	settings["progress_topic"] = topic + "-progress"
	delete(settings, "topic")
	batch := makeBatch(0, 2)
	batch.Records[1].Meta = batch.Records[1].Meta.Set(record.MetaRoute, topic)
	wantClass(t, openSink(t, "no-topic-strict", settings, false).Write(context.Background(), batch), sdk.ErrPermanent,
		fmt.Sprintf("record at position %x cannot be written: it has no route (sluice.route) and the topic setting is empty", []byte(pos(0))))
	var rej *sdk.RejectError
	if err := openSink(t, "no-topic", settings, true).Write(context.Background(), batch); !errors.As(err, &rej) || rej.Rejections[0].Index != 0 {
		t.Fatalf("Write = %v, want record 0 rejected", err)
	}
	verify(t, b.brokers, topic, batch.Records[1:])
}

// authCluster is a cluster with SASL and ACLs: user may use topics named "ok-…" and transactional ids
// "sluice-ok…", and nothing named "denied-…"/"sluice-denied…".
type authCluster struct {
	brokers        []string // SASL listener
	mechanism      string
	user, password string
	admin          []kgo.Opt // a client that may create topics
}

func (a authCluster) settings(topic, progress string, extra map[string]any) map[string]any {
	s := map[string]any{"brokers": toAny(a.brokers), "topic": topic, "progress_topic": progress,
		"sasl_mechanism": a.mechanism, "sasl_username": a.user, "sasl_password": a.password}
	for k, v := range extra {
		s[k] = v
	}
	return s
}

// eachAuthCluster runs f against a kfake cluster with SASL and ACLs, and against the real node, whose
// SCRAM user is denied the "denied" names.
func eachAuthCluster(t *testing.T, f func(t *testing.T, a authCluster)) {
	t.Run("kfake", func(t *testing.T) {
		const admin, adminPass, user, pass = "admin", "admin-secret", "app", "app-secret"
		allow := func(rt kmsg.ACLResourceType, name string, pattern kmsg.ACLResourcePatternType) kfake.ACL {
			return kfake.ACL{Resource: rt, Name: name, Pattern: pattern, Operation: kmsg.ACLOperationAll, Allow: true}
		}
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.EnableACLs(),
			kfake.Superuser("SCRAM-SHA-256", admin, adminPass),
			kfake.User("SCRAM-SHA-256", user, pass,
				allow(kmsg.ACLResourceTypeTopic, "ok-", kmsg.ACLResourcePatternTypePrefixed),
				allow(kmsg.ACLResourceTypeTransactionalId, "sluice-ok", kmsg.ACLResourcePatternTypePrefixed),
				allow(kmsg.ACLResourceTypeCluster, "kafka-cluster", kmsg.ACLResourcePatternTypeLiteral)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		f(t, authCluster{brokers: c.ListenAddrs(), mechanism: "SCRAM-SHA-256", user: user, password: pass,
			admin: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.SASL(scram.Auth{User: admin, Pass: adminPass}.AsSha256Mechanism())}})
	})
	t.Run("kafka", func(t *testing.T) {
		k := realKafka(t)
		denyOnce(t, k.Brokers)
		f(t, authCluster{brokers: k.SCRAMBrokers, mechanism: "SCRAM-SHA-512", user: scramUser, password: scramPassword,
			admin: []kgo.Opt{kgo.SeedBrokers(k.Brokers...)}})
	})
}

var denied bool

// denyOnce denies the SCRAM user of the real node everything on topics "denied-…" and transactional ids
// "sluice-denied…" (the node lets everyone use resources without ACLs).
func denyOnce(t *testing.T, brokers []string) {
	t.Helper()
	if denied {
		return
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	acls := kadm.NewACLs().Deny("User:" + scramUser).Topics("denied-").TransactionalIDs("sluice-denied").
		ResourcePatternType(kadm.ACLPatternPrefixed).Operations(kadm.OpAll)
	results, err := kadm.NewClient(cl).CreateACLs(ctx, acls)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Err != nil {
			t.Fatalf("creating ACL %+v: %v", r, r.Err)
		}
	}
	denied = true
}

// TestAuthorization: a topic, transactional id or progress topic the user may not use fails Open with a
// permanent error saying which; a route to a topic the user may not describe is rejected.
func TestAuthorization(t *testing.T) {
	eachAuthCluster(t, func(t *testing.T, a authCluster) {
		n := topicSeq.Add(1)
		ok := fmt.Sprintf("ok-%d-%d", time.Now().UnixNano()%1e9, n)
		createTopic(t, ok, 1, a.admin...)
		progress := ok + "-progress"

		wantClass(t, openErr(t, "ok-1", a.settings("denied-"+ok, progress, nil)), sdk.ErrPermanent,
			fmt.Sprintf("kafka: not authorized: user %q may not write or describe", a.user), fmt.Sprintf(`topic "denied-%s"`, ok), "TOPIC_AUTHORIZATION_FAILED")
		wantClass(t, openErr(t, "denied-1", a.settings(ok, progress, nil)), sdk.ErrPermanent,
			fmt.Sprintf(`kafka: not authorized: user %q may not use transactional id "sluice-denied-1"`, a.user), "TRANSACTIONAL_ID_AUTHORIZATION_FAILED")
		wantClass(t, openErr(t, "ok-1", a.settings(ok, "denied-"+progress, nil)), sdk.ErrPermanent,
			fmt.Sprintf(`progress topic "denied-%s"`, progress), "TOPIC_AUTHORIZATION_FAILED")

		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		s := &Sink{}
		if err := s.Open(ctx, sdk.OpenRequest{Pipeline: "ok-2", Settings: sdk.Settings(a.settings(ok, progress, nil)), DeadLetter: true}); err != nil {
			t.Fatalf("Open with permitted names: %v", err)
		}
		defer s.Close(ctx)
		batch := makeBatch(0, 3)
		batch.Records[1].Meta = batch.Records[1].Meta.Set(record.MetaRoute, "denied-"+ok)
		var rej *sdk.RejectError
		if err := s.Write(ctx, batch); !errors.As(err, &rej) || len(rej.Rejections) != 1 || rej.Rejections[0].Index != 1 ||
			!strings.Contains(rej.Rejections[0].Reason, "not authorized to describe") {
			t.Fatalf("Write = %v, want record 1 rejected: not authorized", err)
		}
		t.Logf("rejected: %s", rej.Rejections[0].Reason)
		if got := checkpoint(t, s); !got.Equal(batch.Position) {
			t.Fatalf("Checkpoint = %q, want %q", got, batch.Position)
		}
	})
}

// TestTLS: a broker certificate that does not verify (unknown authority, another name) and a broker that
// requires a client certificate fail Open with a permanent error; the right CA connects.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCert(t, nil, nil, "sluice test CA")
	srv, srvKey := newCert(t, ca, caKey, "127.0.0.1")
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(clientAuth tls.ClientAuthType) []string {
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{srv.Raw}, PrivateKey: srvKey}},
			ClientAuth:   clientAuth, ClientCAs: pool, MinVersion: tls.VersionTLS12}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c.ListenAddrs()
	}
	settings := func(brokers []string, extra map[string]any) map[string]any {
		return settingsFor(backend{brokers: brokers}, "", merged(map[string]any{"progress_topic": "tls-progress"}, extra))
	}
	plain := start(tls.NoClientCert)
	wantClass(t, openErr(t, "tls", settings(plain, map[string]any{"tls": true})), sdk.ErrPermanent,
		"kafka: the certificate of a broker at "+plain[0]+" does not verify", "certificate signed by unknown authority")
	wantClass(t, openErr(t, "tls", settings(plain, map[string]any{"tls_ca_file": caFile, "tls_server_name": "kafka.example"})), sdk.ErrPermanent,
		"does not verify", `tls_server_name "kafka.example"`, "kafka.example")
	if err := openErr(t, "tls", settings(plain, map[string]any{"tls_ca_file": caFile})); err != nil {
		t.Fatalf("Open with the broker's CA: %v", err)
	}
	mutual := start(tls.RequireAndVerifyClientCert)
	wantClass(t, openErr(t, "tls", settings(mutual, map[string]any{"tls_ca_file": caFile})), sdk.ErrPermanent,
		"kafka: a broker at "+mutual[0]+" refused the TLS handshake", "remote error: tls")
}

// TestTLSRealBroker writes through a real broker's TLS listener, and through its SASL_SSL listener
// (SCRAM-SHA-512 over TLS), with the settings users give: tls_ca_file, SASL credentials. Open fails
// permanently, saying why, when the broker's certificate does not verify — another CA in tls_ca_file, the
// system roots (tls: true), a tls_server_name the certificate does not hold — and on a wrong SCRAM
// password over TLS, without showing it.
func TestTLSRealBroker(t *testing.T) {
	k := realKafka(t)
	topic := newTopic(t, k.Brokers, 1)
	sasl := map[string]any{"sasl_mechanism": "SCRAM-SHA-512", "sasl_username": scramUser, "sasl_password": scramPassword}
	settings := func(brokers []string, pipeline string, extra map[string]any) map[string]any {
		return settingsFor(backend{brokers: brokers}, topic, merged(map[string]any{"progress_topic": topic + "-" + pipeline}, extra))
	}
	tlsOnly := settings(k.TLSBrokers, "tls", map[string]any{"tls_ca_file": realCAFile})
	s := openSink(t, "tls", tlsOnly, false)
	if err := s.Write(context.Background(), makeBatch(0, 10)); err != nil {
		t.Fatal(err)
	}
	if got := checkpoint(t, s); !got.Equal(pos(9)) {
		t.Fatalf("Checkpoint over TLS = %q, want %q", got, pos(9))
	}
	scramTLS := settings(k.SCRAMTLSBrokers, "scram-tls", merged(sasl, map[string]any{"tls_ca_file": realCAFile}))
	s = openSink(t, "scram-tls", scramTLS, false)
	if err := s.Write(context.Background(), makeBatch(10, 10)); err != nil {
		t.Fatal(err)
	}
	if got := checkpoint(t, s); !got.Equal(pos(19)) {
		t.Fatalf("Checkpoint over SASL_SSL = %q, want %q", got, pos(19))
	}
	verify(t, k.Brokers, topic, makeBatch(0, 20).Records)

	other, _ := newCert(t, nil, nil, "another CA")
	otherFile := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(otherFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := k.TLSBrokers[0]
	wantClass(t, openErr(t, "tls-bad", settings(k.TLSBrokers, "bad", map[string]any{"tls_ca_file": otherFile})), sdk.ErrPermanent,
		"kafka: the certificate of a broker at "+addr+" does not verify", "certificate signed by unknown authority")
	wantClass(t, openErr(t, "tls-bad", settings(k.TLSBrokers, "bad", map[string]any{"tls": true})), sdk.ErrPermanent,
		"kafka: the certificate of a broker at "+addr+" does not verify", "certificate signed by unknown authority")
	wantClass(t, openErr(t, "tls-bad", settings(k.TLSBrokers, "bad", map[string]any{"tls_ca_file": realCAFile, "tls_server_name": "kafka.example"})),
		sdk.ErrPermanent, "kafka: the certificate of a broker at "+addr+" does not verify", `tls_server_name "kafka.example"`, "kafka.example")
	wantClass(t, openErr(t, "tls-bad", settings(k.SCRAMTLSBrokers, "bad", map[string]any{"tls_ca_file": otherFile})), sdk.ErrPermanent,
		"kafka: the certificate of a broker at "+k.SCRAMTLSBrokers[0]+" does not verify")
	err := openErr(t, "tls-bad", settings(k.SCRAMTLSBrokers, "bad", merged(sasl, map[string]any{"tls_ca_file": realCAFile, "sasl_password": "wrong-password-tls"})))
	wantClass(t, err, sdk.ErrPermanent, "kafka: authentication failed at "+k.SCRAMTLSBrokers[0], "SASL_AUTHENTICATION_FAILED")
	if strings.Contains(err.Error(), "wrong-password-tls") {
		t.Fatalf("the error shows the password: %v", err)
	}
}

// newCert returns a certificate for name (an IP address, or a CA's name when parent is nil, self-signed)
// and its key.
func newCert(t testing.TB, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	signer, signerKey := tmpl, key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
	} else {
		tmpl.IPAddresses = []net.IP{net.ParseIP(name)}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TestSettingsTheBrokersRefuse: a transaction_timeout above the brokers' transaction.max.timeout.ms is a
// settings error; a message the topic refuses as too large is permanent and aborts the transaction (the
// rest of the batch, already produced, is not committed).
func TestSettingsTheBrokersRefuse(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		topic := newTopic(t, b.brokers, 1)
		wantClass(t, openErr(t, "txn-timeout", settingsFor(b, topic, map[string]any{"transaction_timeout": "20m"})), sdk.ErrInvalidSettings,
			"kafka: transaction_timeout 20m0s is more than the brokers allow", "INVALID_TRANSACTION_TIMEOUT")

		s := openSink(t, "too-large", settingsFor(b, topic, map[string]any{"max_message_bytes": 2000000}), false)
		batch := makeBatch(0, 4)
		batch.Records[2].Payload = make([]byte, 1500000) // above the topic's max.message.bytes (1048588)
		wantClass(t, s.Write(context.Background(), batch), sdk.ErrPermanent,
			"kafka: a broker refused a message batch as too large", "max_message_bytes (2000000)", "MESSAGE_TOO_LARGE")
		if got := consume(t, b.brokers, topic); len(got) != 0 {
			t.Fatalf("read_committed sees %d messages of the failed write, want none", len(got))
		}
	})
}

// TestTransientErrors: brokers that are down, brokers that do not answer (the real node stopped with
// SIGSTOP) and a partition without enough in-sync replicas for acks all (kfake answering
// NOT_ENOUGH_REPLICAS) are transient errors: the host retries.
func TestTransientErrors(t *testing.T) {
	t.Run("brokers down", func(t *testing.T) {
		addr := services.RefusedAddr(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s := &Sink{}
		err := s.Open(ctx, sdk.OpenRequest{Pipeline: "down", Settings: sdk.Settings(settingsFor(backend{brokers: []string{addr}}, "orders", nil))})
		_ = s.Close(ctx)
		wantClass(t, err, nil, addr)
	})
	t.Run("not enough replicas", func(t *testing.T) {
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b := backend{name: "kfake", brokers: c.ListenAddrs()}
		topic := newTopic(t, b.brokers, 1)
		// A transactional write gives up after transaction_timeout, when the coordinator would abort the
		// transaction anyway.
		s := openSink(t, "replicas", settingsFor(b, topic, map[string]any{"transaction_timeout": "2s"}), false)
		c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			req := kr.(*kmsg.ProduceRequest)
			resp := req.ResponseKind().(*kmsg.ProduceResponse)
			for _, rt := range req.Topics {
				st := kmsg.NewProduceResponseTopic()
				st.Topic, st.TopicID = rt.Topic, rt.TopicID
				for _, rp := range rt.Partitions {
					sp := kmsg.NewProduceResponseTopicPartition()
					sp.Partition, sp.ErrorCode = rp.Partition, kerr.NotEnoughReplicas.Code
					st.Partitions = append(st.Partitions, sp)
				}
				resp.Topics = append(resp.Topics, st)
			}
			return resp, nil, true
		})
		wantClass(t, s.Write(context.Background(), makeBatch(0, 2)), nil,
			"kafka: the brokers did not acknowledge the records within transaction_timeout (2s)", "min.insync.replicas", "records have timed out")
	})
	t.Run("brokers not answering", func(t *testing.T) {
		k := realKafka(t)
		b := backend{name: "kafka", brokers: k.Brokers}
		topic := newTopic(t, k.Brokers, 1)
		s := openSink(t, "frozen", settingsFor(b, topic, nil), false)
		if err := syscall.Kill(k.Pid(), syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = syscall.Kill(k.Pid(), syscall.SIGCONT) }()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		wantClass(t, s.Write(ctx, makeBatch(0, 2)), nil, "context deadline exceeded")
		octx, ocancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer ocancel()
		opened := &Sink{}
		err := opened.Open(octx, sdk.OpenRequest{Pipeline: "frozen-open", Settings: sdk.Settings(settingsFor(b, topic, nil))})
		late := octx.Err() != nil
		_ = opened.Close(octx)
		if late {
			t.Fatalf("Open returned %v after its deadline", err)
		}
		// Before the deadline, in the sink's words, not the client's dial timeout, later.
		wantClass(t, err, nil, "kafka: brokers "+b.brokers[0]+" gave no usable answer while Open could wait")
	})
}

// TestSilentBrokerFailsBeforeTheDeadline: brokers that accept connections and never answer keep Open
// waiting; it fails with the sink's own words, naming the brokers, before the caller's deadline, so the
// host hears why rather than cutting the call.
func TestSilentBrokerFailsBeforeTheDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s := &Sink{}
	err = s.Open(ctx, sdk.OpenRequest{Pipeline: "p", Settings: sdk.Settings{"brokers": []any{ln.Addr().String()}, "topic": "t"}})
	if ctx.Err() != nil {
		t.Fatalf("Open returned %v after the deadline", err)
	}
	wantClass(t, err, nil, "kafka: brokers "+ln.Addr().String()+" gave no usable answer while Open could wait (the pipeline's open_timeout)",
		"is brokers right?")
}
