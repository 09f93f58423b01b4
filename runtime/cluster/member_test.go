package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/sdk/sdktest"
	"github.com/sluicehq/sluice/services"
)

// testTTL is the lease TTL of these tests: renewals every 250ms, a lease relied on for 750ms after a
// renewal was sent, free leases looked for every 250ms.
const testTTL = time.Second

// node is a Member run the way the host runs it: every Acquired lease is "run" until it is lost, a
// Rebalance is answered by releasing the lease (as after a drain), a Lost lease is released.
type node struct {
	t      *testing.T
	m      *Member
	log    *sdktest.Output
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	events []Event
}

func newClient(t *testing.T, addr string) goredis.UniversalClient {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1, ContextTimeoutEnabled: true,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { c.Close() })
	return c
}

func startNode(t *testing.T, addr, id string, wanted ...string) *node {
	t.Helper()
	log := &sdktest.Output{}
	m, err := Join(context.Background(), Options{Client: newClient(t, addr), Where: addr, Instance: id, TTL: testTTL,
		Logger: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	m.Want(wanted)
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{t: t, m: m, log: log, cancel: cancel, done: make(chan struct{})}
	go n.serve(ctx)
	t.Cleanup(func() {
		n.stop(true)
		if t.Failed() {
			t.Logf("log of %s:\n%s", id, log)
		}
	})
	return n
}

func (n *node) serve(ctx context.Context) {
	defer close(n.done)
	go n.m.Run(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.m.Ready():
		}
		for _, e := range n.m.Take() {
			n.mu.Lock()
			n.events = append(n.events, e)
			n.mu.Unlock()
			switch e.Kind {
			case Rebalance, Lost:
				n.m.Release(e.Lease)
			}
		}
	}
}

// stop stops the node: gracefully (its leases released) or as a crash (nothing released: the leases
// expire).
func (n *node) stop(graceful bool) {
	select {
	case <-n.done:
		return
	default:
	}
	n.cancel()
	<-n.done
	if graceful {
		for _, l := range n.m.Held() {
			n.m.Release(l)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.m.Close(ctx)
	}
}

// held returns the pipelines whose lease the node holds.
func (n *node) held() []string {
	n.m.mu.Lock()
	defer n.m.mu.Unlock()
	var ids []string
	for id, l := range n.m.held {
		if l.Err() == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

func (n *node) acquired(id string) *Event {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := len(n.events) - 1; i >= 0; i-- {
		if e := n.events[i]; e.Kind == Acquired && e.Lease.pipeline == id {
			return &e
		}
	}
	return nil
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > timeout {
			t.Fatalf("not within %s: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// TestLeaseHandover: a lease's fencing token grows with every acquisition; a released lease is taken by
// another instance at once; a dead holder's lease is taken over after the TTL, and the takeover says from
// whom and after how long.
func TestLeaseHandover(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	a := startNode(t, srv.Addr, "a", "orders")
	waitFor(t, 5*time.Second, "a holds orders", func() bool { return a.acquired("orders") != nil })
	first := a.acquired("orders")
	if first.Previous != "" || first.TakenOver || first.Lease.Token() <= 0 {
		t.Fatalf("first acquisition: %+v", first)
	}
	b := startNode(t, srv.Addr, "b", "orders")
	time.Sleep(3 * testTTL)
	if got := b.held(); len(got) != 0 || len(a.held()) != 1 {
		t.Fatalf("b holds %v while a holds orders", got)
	}
	if h := b.m.Holders()["orders"]; h.Instance != "a" || h.Token != first.Lease.Token() || h.Since.IsZero() {
		t.Fatalf("b sees holder %+v, want a with token %d", h, first.Lease.Token())
	}

	// Graceful: a releases, b takes it within a poll or two.
	a.stop(true)
	took := waitFor(t, testTTL, "b holds orders after a released it", func() bool { return b.acquired("orders") != nil })
	second := b.acquired("orders")
	if second.Previous != "a" || second.TakenOver || second.Lease.Token() <= first.Lease.Token() {
		t.Fatalf("after a release: %+v (token before %d)", second, first.Lease.Token())
	}
	t.Logf("released lease taken in %s", took)

	// A crash: b stops renewing without releasing; c takes over once the lease expired.
	c := startNode(t, srv.Addr, "c", "orders")
	b.stop(false)
	crashed := time.Now()
	waitFor(t, 5*testTTL, "c holds orders after b died", func() bool { return c.acquired("orders") != nil })
	took = time.Since(crashed)
	third := c.acquired("orders")
	if third.Previous != "b" || !third.TakenOver || third.Lease.Token() <= second.Lease.Token() {
		t.Fatalf("takeover: %+v (token before %d)", third, second.Lease.Token())
	}
	if third.Unrenewed < testTTL*3/4 || third.Unrenewed > 3*testTTL {
		t.Fatalf("the takeover says b's lease went unrenewed for %s; the TTL is %s", third.Unrenewed, testTTL)
	}
	if took < testTTL/2 {
		t.Fatalf("c took over %s after b died: before b's lease could expire (TTL %s)", took, testTTL)
	}
	if !strings.Contains(c.log.String(), "took over a pipeline whose holder stopped renewing its lease") {
		t.Errorf("the takeover is not logged:\n%s", c.log)
	}
	t.Logf("takeover %s after the holder died; its lease unrenewed for %s", took, third.Unrenewed)
}

// TestFairShare: three instances share seven pipelines without any holding more than ceil(7/3) = 3; a
// fourth joins and gets its share as the others give some up; when one dies its pipelines are taken
// over by the others.
func TestFairShare(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	ids := []string{"p1", "p2", "p3", "p4", "p5", "p6", "p7"}
	var nodes []*node
	for _, id := range []string{"a", "b", "c"} {
		nodes = append(nodes, startNode(t, srv.Addr, id, ids...))
	}
	balanced := func(nodes []*node, most, fewest int) func() bool {
		return func() bool {
			all, lo, hi := 0, 100, 0
			seen := map[string]bool{}
			for _, n := range nodes {
				h := n.held()
				for _, id := range h {
					if seen[id] {
						return false
					}
					seen[id] = true
				}
				all += len(h)
				lo, hi = min(lo, len(h)), max(hi, len(h))
			}
			return all == len(ids) && hi <= most && lo >= fewest
		}
	}
	counts := func(nodes []*node) string {
		var s []string
		for _, n := range nodes {
			s = append(s, fmt.Sprintf("%s=%v", n.m.id, n.held()))
		}
		return strings.Join(s, " ")
	}
	waitFor(t, 10*time.Second, "7 pipelines spread 3/2/2", balanced(nodes, 3, 2))
	t.Logf("three instances: %s", counts(nodes))

	d := startNode(t, srv.Addr, "d", ids...)
	nodes = append(nodes, d)
	took := waitFor(t, 20*time.Second, "7 pipelines spread 2/2/2/1 after d joined", balanced(nodes, 2, 1))
	t.Logf("d joined; rebalanced in %s: %s", took, counts(nodes))
	time.Sleep(2 * time.Second)
	if !balanced(nodes, 2, 1)() {
		t.Fatalf("not stable: %s", counts(nodes))
	}

	nodes[0].stop(false)
	took = waitFor(t, 10*time.Second, "a's pipelines taken over", balanced(nodes[1:], 3, 2))
	t.Logf("a died; its pipelines taken over in %s: %s", took, counts(nodes[1:]))
}

// TestRenewalFailureLosesTheLeaseBeforeItExpires freezes Redis (SIGSTOP): renewals fail, and the lease is
// lost — its context cancelled, which stops the pipeline — within 3/4 of the TTL of the last renewal
// sent, before Redis could let another instance have it.
func TestRenewalFailureLosesTheLeaseBeforeItExpires(t *testing.T) {
	srv := services.StartRedis(t, services.RedisOptions{})
	a := startNode(t, srv.Addr, "a", "orders")
	waitFor(t, 5*time.Second, "a holds orders", func() bool { return a.acquired("orders") != nil })
	l := a.acquired("orders").Lease
	time.Sleep(2 * testTTL) // renewals go on
	if err := l.Valid(); err != nil {
		t.Fatalf("a renewed lease is not valid: %v", err)
	}
	if err := syscall.Kill(srv.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(srv.Pid(), syscall.SIGCONT) }()
	frozen := time.Now()
	select {
	case <-l.Done():
	case <-time.After(5 * testTTL):
		t.Fatal("the lease was not lost while Redis was frozen")
	}
	lostAt := time.Now()
	l.mu.Lock()
	lastSent := l.renewed
	l.mu.Unlock()
	if !errors.Is(context.Cause(l.Context()), pipeline.ErrLeaseLost) || !errors.Is(l.Valid(), pipeline.ErrLeaseLost) {
		t.Fatalf("cause %v, Valid %v: want ErrLeaseLost", context.Cause(l.Context()), l.Valid())
	}
	if expiry := lastSent.Add(testTTL); !lostAt.Before(expiry) {
		t.Fatalf("lost at %s, after Redis could expire it (last renewal sent %s, TTL %s)", lostAt.Sub(lastSent), frozen.Sub(lastSent), testTTL)
	}
	t.Logf("lost %s after the last renewal was sent (Redis frozen %s after it); Redis expires it at %s",
		lostAt.Sub(lastSent).Round(time.Millisecond), frozen.Sub(lastSent).Round(time.Millisecond), testTTL)
}

// TestValidReadsTheClock: a host frozen past its lease (its timers late) finds the lease invalid the
// moment it looks, before the timer that loses it has run.
func TestValidReadsTheClock(t *testing.T) {
	m := &Member{ttl: testTTL, stopBy: testTTL * 3 / 4, log: slog.New(slog.DiscardHandler), held: map[string]*Lease{},
		ready: make(chan struct{}, 1)}
	l := newLease(m, "orders", 42, time.Now(), time.Now())
	if err := l.Valid(); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.timer.Stop()                           // as if the process had been frozen: the timer has not fired
	l.renewed = time.Now().Add(-2 * testTTL) // and the clock moved on
	l.mu.Unlock()
	if err := l.Valid(); !errors.Is(err, pipeline.ErrLeaseLost) || !strings.Contains(err.Error(), "could not be renewed") {
		t.Fatalf("Valid = %v, want the lease lost", err)
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("the lease's context is not cancelled")
	}
	if evs := m.Take(); len(evs) != 1 || evs[0].Kind != Lost {
		t.Fatalf("events %+v, want one Lost", evs)
	}
}
