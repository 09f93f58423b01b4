package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/sdk"
)

// classify gives err, an error of the sink's Open, Checkpoint or Write, its class (see sdk.ErrPermanent)
// and says what it means for this sink's settings. Errors no retry can heal become permanent (or invalid
// settings): failed authentication, missing authorization, a broker certificate that does not verify, a
// limit of the brokers the settings exceed. Everything else (brokers down, not enough replicas, timeouts,
// a leader moving) stays transient: the host restarts the sink.
func (s *Sink) classify(err error) error {
	if err == nil || sdk.IsPermanent(err) {
		return err
	}
	c := &s.cfg
	var (
		unknownCA *x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		header    tls.RecordHeaderError
		op        *net.OpError
	)
	switch {
	case errors.Is(err, kgo.ErrRecordTimeout) && c.Transactional:
		return fmt.Errorf("kafka: the brokers did not acknowledge the records within transaction_timeout (%s): a leader is unavailable or slow, or a partition has fewer in-sync replicas than its min.insync.replicas: %w",
			c.TransactionTimeout, err)
	case errors.Is(err, kerr.ProducerFenced), errors.Is(err, kerr.InvalidProducerEpoch):
		// Transient: a transaction that outlived transaction_timeout is fenced too, and the restarted
		// sink then goes on. A second instance of the pipeline is another matter: the two fence each
		// other in turn, and this message says so each time.
		return fmt.Errorf("kafka: fenced: another sink with transactional id %q (another instance of this pipeline) has started, or a transaction outlived transaction_timeout (%s): %w",
			c.TransactionalID, c.TransactionTimeout, err)

	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.UnsupportedSaslMechanism),
		errors.Is(err, kerr.IllegalSaslState):
		return sdk.Permanentf("kafka: authentication failed at %s (sasl_mechanism %s, sasl_username %q): check the user name and password: %w",
			c.brokerList(), c.SASLMechanism, c.SASLUsername, err)

	case errors.Is(err, kerr.TopicAuthorizationFailed):
		return sdk.Permanentf("kafka: not authorized: %s may not write or describe a topic this sink writes to (the cluster needs WRITE and DESCRIBE on it): %w",
			c.principal(), err)
	case errors.Is(err, kerr.TransactionalIDAuthorizationFailed):
		return sdk.Permanentf("kafka: not authorized: %s may not use transactional id %q (the cluster needs WRITE and DESCRIBE on it; or set transactional_id to one it may use): %w",
			c.principal(), c.TransactionalID, err)
	case errors.Is(err, kerr.ClusterAuthorizationFailed):
		return sdk.Permanentf("kafka: not authorized: %s lacks a cluster permission the sink needs (IDEMPOTENT_WRITE to produce, CREATE to create the progress topic %q): %w",
			c.principal(), c.ProgressTopic, err)
	case errors.Is(err, kerr.DelegationTokenAuthorizationFailed), errors.Is(err, kerr.GroupAuthorizationFailed):
		return sdk.Permanentf("kafka: not authorized (%s): %w", c.principal(), err)

	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &verify):
		return sdk.Permanentf("kafka: the certificate of a broker at %s does not verify (tls_ca_file %q, tls_server_name %q): %w",
			c.brokerList(), c.CAFile, c.ServerName, err)
	case errors.As(err, &op) && op.Op == "remote error" && !strings.HasSuffix(op.Err.Error(), "internal error"):
		// crypto/tls reports the alerts a peer sends as "remote error": the broker refused the
		// handshake (no or an unknown client certificate, no common protocol version or cipher).
		return sdk.Permanentf("kafka: a broker at %s refused the TLS handshake (tls_cert_file %q): %w",
			c.brokerList(), c.CertFile, err)
	case errors.As(err, &header):
		return sdk.Permanentf("kafka: a broker at %s does not speak TLS on that port: set tls: false, or give the brokers' TLS listener: %w",
			c.brokerList(), err)

	case errors.Is(err, kerr.UnknownTopicOrPartition) && c.AutoCreateTopics:
		// The client asked the brokers to create the topic, and went on asking for a while.
		return sdk.Permanentf("kafka: a topic does not exist and the brokers at %s did not create it although auto_create_topics is true: create it, or turn auto.create.topics.enable on on the brokers: %w",
			c.brokerList(), err)
	case errors.Is(err, kerr.InvalidTransactionTimeout):
		return sdk.InvalidSettings(fmt.Errorf("kafka: transaction_timeout %s is more than the brokers allow (their transaction.max.timeout.ms, 15m by default): %w",
			c.TransactionTimeout, err))
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return sdk.Permanentf("kafka: a broker refused a message batch as too large: lower max_message_bytes (%d) and batch_max_bytes (%d) below the topic's max.message.bytes: %w",
			c.MaxMessageBytes, c.BatchMaxBytes, err)
	case errors.Is(err, kerr.InvalidTopicException), errors.Is(err, kerr.PolicyViolation),
		errors.Is(err, kerr.InvalidRequiredAcks), errors.Is(err, kerr.UnsupportedCompressionType),
		errors.Is(err, kerr.UnsupportedForMessageFormat):
		return sdk.Permanent(err)
	}
	return err
}

// brokerList names the bootstrap brokers for a message.
func (c *Config) brokerList() string { return strings.Join(c.Brokers, ",") }

// principal names who the sink is to the brokers, for a message about permissions.
func (c *Config) principal() string {
	if c.SASLMechanism == "none" {
		return "this client (no SASL user)"
	}
	return fmt.Sprintf("user %q", c.SASLUsername)
}
