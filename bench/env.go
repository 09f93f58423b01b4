package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sluicehq/sluice/services"
)

// env is the servers the runs write to, started once for all rounds.
type env struct {
	kfake *broker // nil unless a workload uses it
	kafka *broker // the real node; nil when not started
	redis *services.Redis
}

// startEnv starts the servers the selected workloads need. It returns the notes the report carries about
// what was not run and why. The caller closes env also when err is not nil.
func startEnv(ctx context.Context, opts options) (*env, []string, error) {
	e := &env{}
	var notes []string
	has := func(k string) bool { return slices.Contains(opts.keys, k) }
	// W2 and W2-lanes take the real node when there is one, else kfake.
	w2 := has("W2") || has("W2-lanes")
	if (has("W5-kafka") || w2) && opts.kafka != "off" {
		missing := ""
		for _, tool := range []string{"java", "mvn"} {
			if _, err := exec.LookPath(tool); err != nil {
				missing += " " + tool
			}
		}
		switch {
		case missing != "" && opts.kafka == "auto":
			notes = append(notes, fmt.Sprintf("No real Kafka node (%s not installed): W5 on Kafka not run, W2 on kfake.", strings.TrimSpace(missing)))
		default:
			fmt.Fprintln(opts.progress, "bench: starting Kafka (services/)")
			b, err := startKafka(filepath.Join(opts.dir, "servers"), opts.kafkaProps)
			if err != nil {
				return e, nil, err
			}
			e.kafka = b
			if len(opts.kafkaProps) > 0 {
				var set []string
				for key, value := range opts.kafkaProps {
					set = append(set, key+"="+value)
				}
				sort.Strings(set)
				notes = append(notes, "Apache Kafka ran with broker properties "+strings.Join(set, ", ")+" (-kafka-property).")
			}
		}
	} else if has("W5-kafka") {
		notes = append(notes, "W5 on a real Kafka node not run (-kafka off).")
	}
	if has("W5-kfake") || (w2 && e.kafka == nil) {
		b, err := startKfake()
		if err != nil {
			return e, notes, err
		}
		e.kfake = b
	}
	if w2 {
		fmt.Fprintln(opts.progress, "bench: starting redis-server (services/, AOF appendfsync everysec)")
		r, err := services.NewRedis(filepath.Join(opts.dir, "servers", "redis"), services.RedisOptions{Persistence: "everysec"})
		if err != nil {
			return e, notes, err
		}
		if err := r.Start(); err != nil {
			return e, notes, err
		}
		e.redis = r
	}
	for _, peer := range []string{"rpconnect", "conduit"} {
		if opts.peers[peer] == "" {
			notes = append(notes, fmt.Sprintf("%s: not run (%s unset).", peerName[peer], peerEnv[peer]))
		}
	}
	for _, v := range []string{"GOGC", "GOMEMLIMIT"} {
		if val := os.Getenv(v); val != "" {
			notes = append(notes, fmt.Sprintf("Ran with %s=%s in the environment: it reaches sluice and every plugin process (and the peers).", v, val))
		}
	}
	notes = append(notes, "Conduit runs W5 only: its generator makes no sequence, so W1's 50 % filter would have no exact count to check, and it has no Redis Streams connector built in for W2.")
	return e, notes, ctx.Err()
}

// peerName is how the report names each peer.
var peerName = map[string]string{"rpconnect": "Redpanda Connect", "conduit": "Conduit"}

// brokerFor returns the Kafka a workload writes to.
func (e *env) brokerFor(w workload) *broker {
	if w.RealKafka || (w.Redis && e.kafka != nil) {
		return e.kafka
	}
	return e.kfake
}

// close stops every server started.
func (e *env) close() {
	if e.kafka != nil {
		e.kafka.Close()
	}
	if e.kfake != nil {
		e.kfake.Close()
	}
	if e.redis != nil {
		_ = e.redis.Stop(10 * time.Second)
	}
}

// redisDo sends one command to the Redis at addr and returns its reply line.
func redisDo(ctx context.Context, addr string, args ...string) (string, error) {
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "-") {
		return "", fmt.Errorf("redis %s: %s", args[0], line[1:])
	}
	return line, nil
}

// execOutput runs a command to its end and returns its combined output.
func execOutput(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}
