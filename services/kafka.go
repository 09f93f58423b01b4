package services

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// KafkaOption configures a node started by NewKafka or StartKafka. The default is a single KRaft node
// (broker and controller in one process) with a PLAINTEXT listener on a free port of 127.0.0.1, a 512 MB
// heap, and the internal topics (consumer offsets, transaction state) at replication factor 1 and min
// ISR 1, so that transactions work on one node.
type KafkaOption func(*kafkaConfig)

type kafkaConfig struct {
	port, scramPort   int
	scramUser, scramP string
	tlsCert, tlsKey   []byte
	tlsPort           int
	scramTLSPort      int
	heap              string
	props             map[string]string
}

// KafkaPort sets the PLAINTEXT listener's port on 127.0.0.1. Default: a free port (FreePort).
func KafkaPort(port int) KafkaOption { return func(c *kafkaConfig) { c.port = port } }

// KafkaSCRAM adds a SASL_PLAINTEXT listener (on a free port: Kafka.SCRAMBrokers) that accepts only
// SCRAM-SHA-512, and creates user with password when the storage is formatted (StorageTool's
// --add-scram). The PLAINTEXT listener stays open and unauthenticated. Default: no SASL listener.
func KafkaSCRAM(user, password string) KafkaOption {
	return func(c *kafkaConfig) { c.scramUser, c.scramP = user, password }
}

// KafkaTLS adds an SSL listener (on a free port: Kafka.TLSBrokers) that serves the certificate chain
// certPEM (the node's certificate first, for 127.0.0.1) with its private key keyPEM (PEM, PKCS#8,
// unencrypted: x509.MarshalPKCS8PrivateKey), and asks clients for no certificate. With KafkaSCRAM it also
// adds a SASL_SSL listener (Kafka.SCRAMTLSBrokers): SCRAM-SHA-512 over the same TLS. The PLAINTEXT
// listener stays open. Default: no TLS listener.
func KafkaTLS(certPEM, keyPEM []byte) KafkaOption {
	return func(c *kafkaConfig) { c.tlsCert, c.tlsKey = certPEM, keyPEM }
}

// KafkaHeap sets the JVM's maximum heap (-Xmx), such as "1g". Default "512m", enough for tests and the
// demo.
func KafkaHeap(size string) KafkaOption { return func(c *kafkaConfig) { c.heap = size } }

// KafkaProperty sets a server.properties entry, overriding the default for that key (for example
// "log.segment.bytes"). Default: none beyond those described at KafkaOption.
func KafkaProperty(key, value string) KafkaOption {
	return func(c *kafkaConfig) { c.props[key] = value }
}

// Kafka is an Apache Kafka 4 node (KRaft: broker and controller in one JVM) running as a child process on
// 127.0.0.1, with its data, its configuration (server.properties) and its log (LogPath) in its own
// directory. The jars come from Maven Central through services/kafka/pom.xml (see Classpath). Its
// methods are meant for one goroutine at a time.
type Kafka struct {
	*Process
	// Brokers are the PLAINTEXT bootstrap addresses (host:port).
	Brokers []string
	// SCRAMBrokers are the SASL_PLAINTEXT (SCRAM-SHA-512) bootstrap addresses, with KafkaSCRAM only.
	SCRAMBrokers []string
	// User and Password are the SCRAM user's credentials, with KafkaSCRAM only.
	User, Password string
	// TLSBrokers are the SSL bootstrap addresses, with KafkaTLS only.
	TLSBrokers []string
	// SCRAMTLSBrokers are the SASL_SSL (SCRAM-SHA-512 over TLS) bootstrap addresses, with KafkaTLS and
	// KafkaSCRAM only.
	SCRAMTLSBrokers []string

	logStart int64 // size of the log when the current run started: readiness looks only after it
}

const kafkaInstall = "install a Java 17 (or later) runtime and Maven: apt-get install -y openjdk-17-jdk-headless maven"

// NewKafka prepares a Kafka node with its files in dir: it resolves the jars (the first time, with Maven,
// from Maven Central into ~/.m2), writes dir/server.properties and formats the storage (creating the
// SCRAM user, if any). It does not start the node: call Start. It fails, saying what to install, when
// Java or Maven is missing.
func NewKafka(dir string, opts ...KafkaOption) (*Kafka, error) {
	cfg := kafkaConfig{heap: "512m", props: map[string]string{}}
	for _, o := range opts {
		o(&cfg)
	}
	java, err := LookPath("java", kafkaInstall)
	if err != nil {
		return nil, err
	}
	cp, err := Classpath(filepath.Join(Root(), "kafka"))
	if err != nil {
		return nil, err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var controller int
	ports := []*int{&cfg.port, &controller}
	if cfg.scramUser != "" {
		ports = append(ports, &cfg.scramPort)
	}
	if cfg.tlsCert != nil {
		ports = append(ports, &cfg.tlsPort)
		if cfg.scramUser != "" {
			ports = append(ports, &cfg.scramTLSPort)
		}
	}
	for _, p := range ports {
		if *p == 0 {
			if *p, err = FreePort(); err != nil {
				return nil, err
			}
		}
	}
	props := map[string]string{
		"process.roles":                                    "broker,controller",
		"node.id":                                          "1",
		"controller.quorum.voters":                         "1@" + Addr(controller),
		"controller.listener.names":                        "CONTROLLER",
		"inter.broker.listener.name":                       "PLAINTEXT",
		"listeners":                                        "PLAINTEXT://" + Addr(cfg.port) + ",CONTROLLER://" + Addr(controller),
		"advertised.listeners":                             "PLAINTEXT://" + Addr(cfg.port),
		"listener.security.protocol.map":                   "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL",
		"log.dirs":                                         filepath.Join(dir, "data"),
		"num.partitions":                                   "1",
		"offsets.topic.replication.factor":                 "1",
		"offsets.topic.num.partitions":                     "1",
		"transaction.state.log.replication.factor":         "1",
		"transaction.state.log.min.isr":                    "1",
		"transaction.state.log.num.partitions":             "1",
		"share.coordinator.state.topic.replication.factor": "1",
		"share.coordinator.state.topic.min.isr":            "1",
		"group.initial.rebalance.delay.ms":                 "0",
		"auto.create.topics.enable":                        "true",
	}
	k := &Kafka{Brokers: []string{Addr(cfg.port)}}
	if cfg.scramUser != "" {
		scram := "SASL_PLAINTEXT://" + Addr(cfg.scramPort)
		props["listeners"] += "," + scram
		props["advertised.listeners"] += "," + scram
		props["sasl.enabled.mechanisms"] = "SCRAM-SHA-512"
		props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"] = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
		k.SCRAMBrokers, k.User, k.Password = []string{Addr(cfg.scramPort)}, cfg.scramUser, cfg.scramP
	}
	if cfg.tlsCert != nil {
		// One PEM file holds the key and the chain: Kafka's PEM key store (KIP-651).
		store := filepath.Join(dir, "tls-keystore.pem")
		if err := os.WriteFile(store, append(append([]byte(nil), cfg.tlsKey...), cfg.tlsCert...), 0o600); err != nil {
			return nil, err
		}
		props["ssl.keystore.type"] = "PEM"
		props["ssl.keystore.location"] = store
		props["ssl.client.auth"] = "none"
		tls := "SSL://" + Addr(cfg.tlsPort)
		props["listeners"] += "," + tls
		props["advertised.listeners"] += "," + tls
		k.TLSBrokers = []string{Addr(cfg.tlsPort)}
		if cfg.scramUser != "" {
			scramTLS := "SASL_SSL://" + Addr(cfg.scramTLSPort)
			props["listeners"] += "," + scramTLS
			props["advertised.listeners"] += "," + scramTLS
			props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"] = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
			k.SCRAMTLSBrokers = []string{Addr(cfg.scramTLSPort)}
		}
	}
	for key, v := range cfg.props {
		props[key] = v
	}
	keys := make([]string, 0, len(props))
	for key := range props {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, key := range keys {
		fmt.Fprintf(&b, "%s=%s\n", key, props[key])
	}
	conf := filepath.Join(dir, "server.properties")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}

	jvm := []string{java, "-Xmx" + cfg.heap, "-Xms128m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=info", "-Dorg.slf4j.simpleLogger.showDateTime=true",
		"-cp", cp}
	format := append(append([]string(nil), jvm...), "kafka.tools.StorageTool", "format",
		"--cluster-id", clusterID(filepath.Join(dir, "data")), "--config", conf, "--ignore-formatted")
	if cfg.scramUser != "" {
		format = append(format, "--add-scram",
			fmt.Sprintf("SCRAM-SHA-512=[name=%s,password=%s]", cfg.scramUser, cfg.scramP))
	}
	cmd := exec.Command(format[0], format[1:]...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		// The command line holds the SCRAM password: name the tool, not its arguments.
		return nil, fmt.Errorf("kafka: formatting the storage in %s (kafka.tools.StorageTool format): %w\n%s", dir, err, out)
	}
	k.Process = NewProcess("kafka", dir, append(jvm, "kafka.Kafka", conf))
	return k, nil
}

// clusterID returns the cluster id of the storage in logDir when it was formatted before (a node started
// again on the same directory keeps its data), else a new random KRaft cluster id: 16 bytes, base64url
// without padding.
func clusterID(logDir string) string {
	if b, err := os.ReadFile(filepath.Join(logDir, "meta.properties")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if id, ok := strings.CutPrefix(strings.TrimSpace(line), "cluster.id="); ok && id != "" {
				return id
			}
		}
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Start starts the node and waits (up to 2 minutes) until it has logged "Kafka Server started", which a
// KRaft node does once its broker is registered and unfenced, and its listener accepts connections.
func (k *Kafka) Start() error {
	k.logStart = 0
	if fi, err := os.Stat(k.LogPath); err == nil {
		k.logStart = fi.Size()
	}
	if err := k.Process.Start(); err != nil {
		return err
	}
	if err := k.WaitFor(2*time.Minute, k.ready); err != nil {
		_ = k.Kill()
		return err
	}
	return nil
}

// ready checks for the startup line in this run's part of the log, then the PLAINTEXT listener.
func (k *Kafka) ready(ctx context.Context) error {
	b, err := os.ReadFile(k.LogPath)
	if err != nil {
		return err
	}
	if int64(len(b)) < k.logStart || !bytes.Contains(b[k.logStart:], []byte("Kafka Server started")) {
		return fmt.Errorf("not started yet")
	}
	c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", k.Brokers[0])
	if err != nil {
		return err
	}
	return c.Close()
}

// Restart stops the node gracefully (SIGTERM: a clean shutdown, up to 30 s) and starts it again on the
// same ports and data.
func (k *Kafka) Restart() error {
	if err := k.Stop(30 * time.Second); err != nil {
		return err
	}
	return k.Start()
}

// Crash kills the node with SIGKILL and starts it again on the same ports and data; it recovers its logs.
func (k *Kafka) Crash() error {
	if err := k.Kill(); err != nil {
		return err
	}
	return k.Start()
}

// StartKafka starts a Kafka node for a test in a directory under t.TempDir() and stops it when the test
// ends (logging the end of its log if the test failed). It fails the test when Java or Maven is missing
// or the node does not start; it never skips. Starting takes several seconds: share one node between
// the tests of a package where you can.
func StartKafka(t testing.TB, opts ...KafkaOption) *Kafka {
	t.Helper()
	k, err := startServer(func() (*Kafka, error) { return NewKafka(filepath.Join(t.TempDir(), "kafka"), opts...) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k.Stop(30 * time.Second)
		if t.Failed() {
			t.Logf("end of %s:\n%s", k.LogPath, k.LogTail(30))
		}
	})
	return k
}
