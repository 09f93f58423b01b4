// Command services starts the real servers sluice's demo runs against — redis-server (AOF, appendfsync
// always), mongo-java-server and a single-node Kafka broker — each on a free port of 127.0.0.1 with its
// data under DIR, writes their addresses to DIR/services.env, and stops them on SIGINT or SIGTERM.
//
//	go run ./services/cmd/services DIR
//
// DIR/services.env holds REDIS_ADDR, MONGO_URI and KAFKA_BROKERS (shell syntax); it is written once every
// server is ready, so a script can wait for the file.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/services"
)

type server interface {
	Start() error
	Stop(grace time.Duration) error
}

func main() {
	// An argument that starts with "-" (--help, -h) is not taken for a directory to start servers in.
	if len(os.Args) != 2 || strings.HasPrefix(os.Args[1], "-") {
		fmt.Fprintln(os.Stderr, "usage: services DIR\n\nstarts redis-server, mongo-java-server and Kafka on 127.0.0.1 with their data under DIR,\nwrites DIR/services.env, and stops them on SIGINT or SIGTERM")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "services:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	env := filepath.Join(dir, "services.env")
	_ = os.Remove(env)
	var started []server
	stop := func() {
		for i := len(started) - 1; i >= 0; i-- {
			_ = started[i].Stop(20 * time.Second)
		}
	}
	defer stop()
	start := func(name string, s server, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		fmt.Fprintf(os.Stderr, "services: starting %s\n", name)
		if err := s.Start(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		started = append(started, s)
		return nil
	}
	redis, err := services.NewRedis(filepath.Join(dir, "redis"), services.RedisOptions{})
	if err := start("redis-server", redis, err); err != nil {
		return err
	}
	mongo, err := services.NewMongo(filepath.Join(dir, "mongo"), 0)
	if err := start("mongo-java-server", mongo, err); err != nil {
		return err
	}
	kafka, err := services.NewKafka(filepath.Join(dir, "kafka"))
	if err := start("kafka", kafka, err); err != nil {
		return err
	}
	text := fmt.Sprintf("REDIS_ADDR=%s\nMONGO_URI='%s'\nKAFKA_BROKERS=%s\n", redis.Addr, mongo.URI, strings.Join(kafka.Brokers, ","))
	if err := os.WriteFile(env+".tmp", []byte(text), 0o644); err != nil {
		return err
	}
	if err := os.Rename(env+".tmp", env); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "services: ready (%s)\n%s", env, text)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	fmt.Fprintln(os.Stderr, "services: stopping")
	return nil
}
