package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/plugins/redis/redisconn"
	"github.com/sluicehq/sluice/runtime/cluster"
	"github.com/sluicehq/sluice/runtime/config"
	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/sdk"
)

// clusterRun is what `run` needs to share pipelines with other instances (a file's cluster:).
type clusterRun struct {
	cfg    *config.Cluster
	client goredis.UniversalClient
	member *cluster.Member
	store  *cluster.Store
}

// clusterOf returns the cluster the files configure, nil when none does. load has checked that files
// configuring one agree.
func clusterOf(files []*config.File) *config.Cluster {
	for _, f := range files {
		if f.Cluster != nil {
			return f.Cluster
		}
	}
	return nil
}

// defaultInstanceID is an instance's id when neither --instance nor cluster.instance_id gives one: the
// host name and the process id, unique among the processes of a machine.
func defaultInstanceID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "sluice"
	}
	return host + ":" + strconv.Itoa(os.Getpid())
}

// redisClient connects (lazily) to the Redis cluster.redis names, the way the Redis buffer does.
func redisClient(cl *config.Cluster) (goredis.UniversalClient, string, error) {
	rc := redisconn.Defaults()
	if err := sdk.Settings(cl.Redis).Decode(&rc); err != nil {
		return nil, "", fmt.Errorf("cluster.redis: %w", err)
	}
	opts, err := rc.Options()
	if err != nil {
		return nil, "", fmt.Errorf("cluster.redis: %w", err)
	}
	// The leases, and the positions of every pipeline this instance runs, share the client.
	opts.PoolSize = 16
	return goredis.NewUniversalClient(opts), rc.Where(), nil
}

// joinCluster connects to the cluster's Redis and registers this instance as id.
func joinCluster(ctx context.Context, cl *config.Cluster, id string, log *slog.Logger) (*clusterRun, error) {
	client, where, err := redisClient(cl)
	if err != nil {
		return nil, err
	}
	jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	m, err := cluster.Join(jctx, cluster.Options{Client: client, Where: where, Prefix: cl.KeyPrefix, Instance: id, TTL: cl.LeaseTTL,
		Logger: log})
	if err != nil {
		client.Close()
		return nil, err
	}
	return &clusterRun{cfg: cl, client: client, member: m, store: cluster.NewStore(client, cl.KeyPrefix)}, nil
}

// want tells the member which pipelines the files hold now.
func (s *supervisor) want() {
	s.mu.Lock()
	var ids []string
	for _, id := range s.order {
		if s.entries[id].file != nil {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	s.cluster.member.Want(ids)
}

// countInstances keeps the live-instances gauge up to date until ctx is done.
func (s *supervisor) countInstances(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		s.metrics.Instances(len(s.cluster.member.Instances()))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// leaseEvents acts on what happened to this instance's leases: a pipeline whose lease it acquired starts
// under it; one whose lease it lost has been aborted already (see start) and stands by once stopped; one
// to hand over to an instance with fewer is drained, and its lease released once it has stopped.
func (s *supervisor) leaseEvents(evs []cluster.Event) {
	log := s.g.logger
	for _, ev := range evs {
		l := ev.Lease
		id := l.Pipeline()
		s.mu.Lock()
		e := s.entries[id]
		s.mu.Unlock()
		switch ev.Kind {
		case cluster.Acquired:
			if e == nil || e.file == nil || s.draining {
				s.cluster.member.Release(l) // no longer in the files, or stopping
				continue
			}
			if ev.TakenOver {
				err := fmt.Errorf("took pipeline %s over from instance %s, whose lease went unrenewed for %s", id, ev.Previous,
					ev.Unrenewed.Round(time.Millisecond))
				s.alerts.Notify(pipeline.Event{Pipeline: id, Kind: pipeline.EventLeaseTakeover, Time: time.Now(), Err: err,
					Previous: ev.Previous, Wait: ev.Unrenewed})
				s.metrics.LeaseTakeover(id, ev.Unrenewed)
			}
			s.metrics.LeaseHeld(id, true)
			in := s.newInstance(e.pc, l)
			s.mu.Lock()
			e.lease, e.next = l, nil
			e.runs = append(e.runs, in)
			s.mu.Unlock()
			log.Info("starting the pipeline: this instance holds its lease", "pipeline", id, "token", l.Token())
			s.start(in)
		case cluster.Lost:
			s.alerts.Notify(pipeline.Event{Pipeline: id, Kind: pipeline.EventLeaseLost, Time: time.Now(), Err: ev.Err})
			s.metrics.LeaseLost(id)
			s.metrics.LeaseHeld(id, false)
			if e == nil || e.lease != l {
				s.cluster.member.Release(l)
				continue
			}
			if cur := e.current(); cur == nil || cur.finished || cur.lease != l {
				s.releaseLease(e) // nothing runs under it (the pipeline had completed or failed)
			}
			// Otherwise the pipeline is being aborted; finished releases the lease when it has stopped.
		case cluster.Rebalance:
			if e == nil || e.lease != l {
				s.cluster.member.Release(l)
				continue
			}
			cur := e.current()
			if cur == nil || cur.finished || cur.lease != l {
				s.releaseLease(e)
				continue
			}
			log.Info("handing a pipeline to an instance running fewer: draining it", "pipeline", id)
			cur.handover = true
			s.mu.Lock()
			e.next = nil
			s.mu.Unlock()
			s.stopForReload(cur)
		}
	}
}

// releaseLease gives up e's lease: e stands by from now on.
func (s *supervisor) releaseLease(e *entry) {
	l := e.lease
	s.mu.Lock()
	e.lease, e.standby = nil, time.Now()
	s.mu.Unlock()
	if l != nil {
		s.cluster.member.Release(l)
	}
	s.metrics.LeaseHeld(e.id, false)
}

// leave releases the leases of the pipelines that stopped here (the others, still stopping when sluice
// gave up waiting for them, expire after the TTL, by when their plugins have died with sluice), and
// removes this instance's registration.
func (s *supervisor) leave() {
	for _, id := range s.order {
		e := s.entries[id]
		if e.lease == nil {
			continue
		}
		if cur := e.current(); cur == nil || cur.lease != e.lease || cur.finished {
			s.releaseLease(e)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.cluster.member.Close(ctx)
}

// holderText says who holds pipeline id's lease, for the summary.
func (s *supervisor) holderText(id string) string {
	if s.cluster == nil {
		return "not run"
	}
	if h := s.cluster.member.Holders()[id]; h.Instance != "" && h.Instance != s.instance {
		return "on instance " + h.Instance
	}
	return "no instance holds it"
}
