package cli_test

import (
	"net"
	"time"

	"github.com/sluicehq/sluice/services"
)

// The servers corpus cases may ask for (case.yaml services:), and the variables each gives the case.
// Cases share them: a case names its keys, topics and databases after itself ($CASE) so that they do not
// meet.
var serviceKinds = map[string]func(s *corpusServices, dir string) (map[string]string, error){
	// redis-server (AOF always). The default user has no password; the ACL user $REDIS_USER has
	// $REDIS_PASSWORD.
	"redis": func(s *corpusServices, dir string) (map[string]string, error) {
		const user, password = "corpus", "corpus-redis-password"
		r, err := services.NewRedis(dir, services.RedisOptions{Args: []string{"--user", user, "on", ">" + password, "~*", "&*", "+@all"}})
		if err != nil {
			return nil, err
		}
		if err := r.Start(); err != nil {
			return nil, err
		}
		s.cleanup(func() { _ = r.Stop(10 * time.Second) })
		return map[string]string{"REDIS_ADDR": r.Addr, "REDIS_USER": user, "REDIS_PASSWORD": password}, nil
	},
	// A redis-server that is nearly full: maxmemory 2 MB with the noeviction policy, so writes beyond it
	// are refused (OOM).
	"redis-full": func(s *corpusServices, dir string) (map[string]string, error) {
		r, err := services.NewRedis(dir, services.RedisOptions{Args: []string{"--maxmemory", "2mb", "--maxmemory-policy", "noeviction"}})
		if err != nil {
			return nil, err
		}
		if err := r.Start(); err != nil {
			return nil, err
		}
		s.cleanup(func() { _ = r.Stop(10 * time.Second) })
		return map[string]string{"REDIS_FULL_ADDR": r.Addr}, nil
	},
	// mongo-java-server.
	"mongo": func(s *corpusServices, dir string) (map[string]string, error) {
		m, err := services.NewMongo(dir, 0)
		if err != nil {
			return nil, err
		}
		if err := m.Start(); err != nil {
			return nil, err
		}
		s.cleanup(func() { _ = m.Stop(10 * time.Second) })
		return map[string]string{"MONGO_URI": m.URI, "MONGO_ADDR": m.Addr}, nil
	},
	// One Apache Kafka node: a PLAINTEXT listener ($KAFKA_BROKERS) and a SASL listener accepting
	// SCRAM-SHA-512 for $KAFKA_USER with $KAFKA_PASSWORD ($KAFKA_SCRAM_BROKERS).
	"kafka": func(s *corpusServices, dir string) (map[string]string, error) {
		const user, password = "corpus", "corpus-kafka-password"
		k, err := services.NewKafka(dir, services.KafkaSCRAM(user, password))
		if err != nil {
			return nil, err
		}
		if err := k.Start(); err != nil {
			return nil, err
		}
		s.cleanup(func() { _ = k.Stop(30 * time.Second) })
		return map[string]string{"KAFKA_BROKERS": k.Brokers[0], "KAFKA_SCRAM_BROKERS": k.SCRAMBrokers[0],
			"KAFKA_USER": user, "KAFKA_PASSWORD": password}, nil
	},
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
