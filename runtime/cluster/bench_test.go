package cluster_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services"
)

// benchWindow is how long BenchmarkInstances measures each run's steady state.
const benchWindow = 10 * time.Second

// BenchmarkInstances measures what several instances on one machine deliver together: six endless
// pipelines, shared by 1, 2 and 3 instances of the real sluice, each run measured once the pipelines are
// spread (every instance at its share) over benchWindow, as records delivered per second by all of them.
//
//   - direct: generate → discard, positions in Redis (the host's shared state store): the hosts' CPU.
//   - buffered: generate → redis → discard: the Redis buffer (AOF, appendfsync always) in between.
//
// Run it with -benchtime 1x: each iteration starts the instances and measures one window.
func BenchmarkInstances(b *testing.B) {
	bin := services.Binaries(b, "generate", "redis", "discard")
	for _, kind := range []string{"direct", "buffered"} {
		for n := 1; n <= 3; n++ {
			b.Run(fmt.Sprintf("%s/instances=%d", kind, n), func(b *testing.B) {
				var total float64
				for range b.N {
					total += instancesRun(b, bin, kind, n)
				}
				b.ReportMetric(total/float64(b.N), "records/s")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// instancesRun starts n instances sharing six pipelines of kind and returns the records all of them
// delivered per second over benchWindow, once the pipelines are spread.
func instancesRun(b *testing.B, bin, kind string, n int) float64 {
	b.Helper()
	redisSrv := services.StartRedis(b, services.RedisOptions{})
	dir := b.TempDir()
	var conf strings.Builder
	fmt.Fprintf(&conf, "version: 1\ncluster:\n  redis: { addr: %q }\n  lease_ttl: 5s\npipelines:\n", redisSrv.Addr)
	for i := range 6 {
		fmt.Fprintf(&conf, "  - id: p%d\n    source: { plugin: generate, settings: { payload_bytes: 200 } }\n", i)
		if kind == "buffered" {
			fmt.Fprintf(&conf, "    buffer: { plugin: redis, settings: { addr: %q, max_entries: 200000 } }\n", redisSrv.Addr)
		}
		conf.WriteString("    sink: { plugin: discard }\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "bench.yaml"), []byte(conf.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	var hosts []*host
	for i := range n {
		hosts = append(hosts, startHost(b, bin, dir, "bench.yaml", fmt.Sprintf("bench-%d", i+1)))
	}
	defer func() {
		for _, h := range hosts {
			h.stop()
		}
	}()
	share := (6 + n - 1) / n
	waitUntil(b, 2*time.Minute, "six pipelines running, spread over the instances", func() bool {
		total := 0
		for _, h := range hosts {
			held := h.running6()
			if held > share {
				return false
			}
			total += held
		}
		return total == 6
	})
	time.Sleep(3 * time.Second) // past the start, and any handover
	before := delivered(b, hosts)
	start := time.Now()
	time.Sleep(benchWindow)
	after := delivered(b, hosts)
	return float64(after-before) / time.Since(start).Seconds()
}

// running6 counts the pipelines the host runs (state running, under its own lease).
func (h *host) running6() int {
	l, err := h.list()
	if err != nil {
		return 0
	}
	n := 0
	for _, p := range l.Pipelines {
		if p.State == "running" && p.Lease != nil && p.Lease.Here {
			n++
		}
	}
	return n
}

// delivered adds up the records the hosts' pipelines delivered.
func delivered(b *testing.B, hosts []*host) int64 {
	b.Helper()
	var sum int64
	for _, h := range hosts {
		l, err := h.list()
		if err != nil {
			b.Fatal(err)
		}
		for _, p := range l.Pipelines {
			sum += p.Delivered
		}
	}
	return sum
}
