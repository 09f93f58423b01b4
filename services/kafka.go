package services

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"

	"strings"
	"testing"
	"time"
)

// Kafka is a single-node Apache Kafka 4.x broker in KRaft mode (broker and controller in one process),
// run from the jars Maven Central serves for org.apache.kafka:kafka_2.13 (services/kafka/pom.xml) with
// the machine's Java, listening on 127.0.0.1 only. Its data is in its directory and survives Restart.
type Kafka struct {
	*Process
	// Addr is the plaintext listener, host:port.
	Addr string
	// SASLAddr is a SASL_PLAINTEXT listener accepting SCRAM-SHA-512 (and SCRAM-SHA-256, PLAIN) for
	// SCRAMUser / SCRAMPassword; empty unless KafkaOptions.SASL.
	SASLAddr string
}

// The SCRAM user a SASL-enabled test broker is formatted with.
const (
	SCRAMUser     = "sluice"
	SCRAMPassword = "sluice-secret"
)

// KafkaOptions configure a test broker.
type KafkaOptions struct {
	// SASL adds a SASL_PLAINTEXT listener with the SCRAM user above.
	SASL bool
}

// NewKafka formats a KRaft log directory in dir and describes the broker; call Start.
func NewKafka(dir string, o KafkaOptions) (*Kafka, error) {
	java, err := LookPath("java", "install a Java 17 runtime (apt-get install openjdk-17-jdk-headless)")
	if err != nil {
		return nil, err
	}
	cp, err := Classpath(filepath.Join(Root(), "kafka"))
	if err != nil {
		return nil, err
	}
	var ports [3]int
	for i := range ports {
		if ports[i], err = FreePort(); err != nil {
			return nil, err
		}
	}
	k := &Kafka{Addr: Addr(ports[0])}
	listeners := fmt.Sprintf("PLAINTEXT://%s,CONTROLLER://%s", k.Addr, Addr(ports[1]))
	advertised := "PLAINTEXT://" + k.Addr
	protocols := "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
	var sasl string
	if o.SASL {
		k.SASLAddr = Addr(ports[2])
		listeners += ",SASL_PLAINTEXT://" + k.SASLAddr
		advertised += ",SASL_PLAINTEXT://" + k.SASLAddr
		protocols += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
		sasl = `sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_` + SCRAMUser + `="` + SCRAMPassword + `";
`
	}
	props := fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.voters=1@%s
listeners=%s
advertised.listeners=%s
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=%s
%slog.dirs=%s
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
`, Addr(ports[1]), listeners, advertised, protocols, sasl, filepath.Join(dir, "data"))
	conf := filepath.Join(dir, "server.properties")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(conf, []byte(props), 0o644); err != nil {
		return nil, err
	}
	format := []string{java, "-cp", cp, "kafka.tools.StorageTool", "format", "-t", "c2x1aWNlLXRlc3Qtc3J2", "-c", conf}
	if o.SASL {
		format = append(format, "--add-scram", fmt.Sprintf("SCRAM-SHA-512=[name=%s,password=%s]", SCRAMUser, SCRAMPassword))
	}
	if out, err := exec.Command(format[0], format[1:]...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("kafka: formatting the log directory (%s): %v\n%s", quote(format[:4]), err, out)
	}
	k.Process = NewProcess("kafka", dir, []string{java, "-Xms256m", "-Xmx768m", "-XX:+UseSerialGC",
		"-Djava.awt.headless=true", "-cp", cp, "kafka.Kafka", conf})
	return k, nil
}

// Start starts the broker and waits until it has started and its listener accepts connections.
func (k *Kafka) Start() error {
	if err := k.Process.Start(); err != nil {
		return err
	}
	return k.WaitFor(120*time.Second, func(ctx context.Context) error {
		if !k.logContains("Kafka Server started") {
			return fmt.Errorf("not started yet")
		}
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", k.Addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// Restart stops the broker gracefully and starts it again with the same data.
func (k *Kafka) Restart() error {
	if err := k.Stop(30 * time.Second); err != nil {
		return err
	}
	return k.Start()
}

func (p *Process) logContains(s string) bool {
	b, err := os.ReadFile(p.LogPath)
	return err == nil && strings.Contains(string(b), s)
}

// StartKafka starts a broker for the test and stops it when the test ends.
func StartKafka(t testing.TB, o KafkaOptions) *Kafka {
	t.Helper()
	k, err := NewKafka(filepath.Join(t.TempDir(), "kafka"), o)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Stop(30 * time.Second) })
	return k
}
