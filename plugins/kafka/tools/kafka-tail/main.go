// Command kafka-tail prints the messages of Kafka topics as a read_committed consumer sees them: only
// committed transactions, in offset order per partition. It is the consumer the demo uses to show what the
// kafka sink wrote.
//
//	kafka-tail -brokers 127.0.0.1:9092 -topics shop.orders,shop.users [-from end] [-n 100] [-idle 5s] [-json]
//
// Each message is one line: topic/partition@offset, the key, the headers and the value (text form), or a
// JSON object with -json. It exits after -n messages, after -idle without a message, or on SIGINT.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "bootstrap brokers, comma-separated")
	topics := flag.String("topics", "", "topics to read, comma-separated (required)")
	from := flag.String("from", "start", "start: read from the oldest message; end: only new ones")
	n := flag.Int("n", 0, "exit after this many messages (0: no limit)")
	idle := flag.Duration("idle", 0, "exit after this long without a message (0: never)")
	asJSON := flag.Bool("json", false, "print one JSON object per message")
	flag.Parse()
	if *topics == "" {
		fmt.Fprintln(os.Stderr, "kafka-tail: -topics is required")
		os.Exit(2)
	}
	offset := kgo.NewOffset().AtStart()
	if *from == "end" {
		offset = kgo.NewOffset().AtEnd()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*brokers, ",")...),
		kgo.ConsumeTopics(strings.Split(*topics, ",")...), kgo.ConsumeResetOffset(offset),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(500*time.Millisecond))
	if err != nil {
		fmt.Fprintln(os.Stderr, "kafka-tail:", err)
		os.Exit(2)
	}
	defer cl.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := json.NewEncoder(os.Stdout)
	seen, last := 0, time.Now()
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				fmt.Fprintf(os.Stderr, "kafka-tail: %s/%d: %v\n", t, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			if *n > 0 && seen >= *n {
				return
			}
			seen++
			last = time.Now()
			if *asJSON {
				h := map[string]string{}
				for _, x := range r.Headers {
					h[x.Key] = string(x.Value)
				}
				_ = out.Encode(map[string]any{"topic": r.Topic, "partition": r.Partition, "offset": r.Offset,
					"key": string(r.Key), "headers": h, "value": string(r.Value)})
				return
			}
			var hs []string
			for _, x := range r.Headers {
				hs = append(hs, x.Key+"="+string(x.Value))
			}
			fmt.Printf("%s/%d@%d key=%q headers=[%s] %s\n", r.Topic, r.Partition, r.Offset, r.Key, strings.Join(hs, " "), r.Value)
		})
		if (*n > 0 && seen >= *n) || (*idle > 0 && time.Since(last) >= *idle) {
			return
		}
	}
}
