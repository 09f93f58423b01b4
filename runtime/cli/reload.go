package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/runtime/alert"
	"github.com/sluicehq/sluice/runtime/config"
)

// watchInterval is how often `run --watch` reads the connector files to see whether they changed.
const watchInterval = time.Second

// fingerprint identifies what a pipeline runs: its resolved configuration, with defaults applied and
// references expanded as they read when the file was loaded — stages (plugin, in_process, settings),
// transform steps, on_error, the dead-letter sink, batching, retry and watchdogs. Where the pipeline is
// written (file, line, order) is not part of it. A reload restarts a pipeline whose fingerprint changed.
func fingerprint(p *config.Pipeline) string {
	stage := func(s *config.Stage) any {
		if s == nil {
			return nil
		}
		return map[string]any{"plugin": s.Plugin, "in_process": s.InProcess, "settings": s.Settings, "sha256": s.SHA256}
	}
	raws := func(rs []config.Raw) []any {
		out := make([]any, len(rs))
		for i, r := range rs {
			out[i] = r.Value
		}
		return out
	}
	b, err := json.Marshal(map[string]any{
		"source": stage(p.Source), "buffer": stage(p.Buffer), "sink": stage(p.Sink), "dlq": stage(p.DeadLetter),
		"transforms": raws(p.Transforms), "sink_transforms": raws(p.SinkTransforms), "on_error": p.OnError,
		"batch_max_records": p.BatchMaxRecords, "batch_max_bytes": p.BatchMaxBytes, "max_in_flight_bytes": p.MaxInFlightBytes,
		"retry": p.Retry, "open_timeout": p.OpenTimeout, "stall_timeout": p.StallTimeout,
		"ordered": p.Ordered, "lanes": p.Lanes,
	})
	if err != nil {
		// Settings are JSON-ready by construction; should one not be, the pipeline counts as changed.
		return "unencodable: " + err.Error()
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// alertRoutes maps each pipeline to the alerts of its file.
func alertRoutes(files []*config.File) map[string][]alert.Target {
	routes := map[string][]alert.Target{}
	for _, f := range files {
		var targets []alert.Target
		for _, a := range f.Alerts {
			targets = append(targets, a.Target)
		}
		for _, p := range f.Pipelines {
			routes[p.ID] = targets
		}
	}
	return routes
}

// reload reads the connector files again and applies them: pipelines added start, pipelines removed
// drain and stop, pipelines whose fingerprint changed drain and start again (from their stored
// positions), the others run on untouched; alerts and fail_fast take effect at once. Files with any
// problem are rejected as a whole: each problem is logged and nothing changes. why names the trigger.
func (s *supervisor) reload(why string) {
	log := s.g.logger
	if s.draining {
		log.Warn("reload ignored: sluice is stopping", "trigger", why)
		return
	}
	var problems bytes.Buffer
	files, err := s.g.loadFiles(&problems, s.catalog, s.paths)
	if err != nil {
		for _, line := range strings.Split(strings.TrimSpace(problems.String()), "\n") {
			log.Error("reload rejected", "problem", line)
		}
		log.Error("reload rejected: the running pipelines keep running unchanged", "trigger", why, "err", err)
		return
	}
	if len(files) > 0 && len(s.files) > 0 && files[0].DataDir != s.files[0].DataDir {
		log.Warn("data_dir changed; the state store is chosen at start, so the change takes effect when sluice starts again",
			"data_dir", files[0].DataDir)
	}
	if cl := clusterOf(files); !cl.Same(clusterOf(s.files)) {
		log.Warn("cluster: changed; it is read at start, so the change takes effect when sluice starts again")
	}
	s.files = files
	s.alerts.Route(alertRoutes(files))

	var added, removed, changed []string
	unchanged := 0
	seen := map[string]bool{}
	for _, f := range files {
		for _, pc := range f.Pipelines {
			seen[pc.ID] = true
			s.mu.Lock()
			e := s.entries[pc.ID]
			s.mu.Unlock()
			switch {
			case e == nil || e.file == nil && (e.current() == nil || e.current().finished):
				added = append(added, pc.ID)
				s.add(pc, f)
			case e.file == nil:
				// Removed by an earlier reload and still stopping: it starts again once it has stopped.
				added = append(added, pc.ID)
				s.replace(e, pc, f)
			case fingerprint(e.pc) == fingerprint(pc):
				unchanged++
				s.mu.Lock()
				e.file, e.pc = f, pc
				s.mu.Unlock()
			default:
				changed = append(changed, pc.ID)
				s.replace(e, pc, f)
			}
		}
	}
	s.mu.Lock()
	var gone []*entry
	for _, id := range s.order {
		if e := s.entries[id]; !seen[id] && e.file != nil {
			gone = append(gone, e)
		}
	}
	s.mu.Unlock()
	for _, e := range gone {
		removed = append(removed, e.id)
		s.mu.Lock()
		e.file, e.next = nil, nil
		s.mu.Unlock()
		cur := e.current()
		if cur != nil {
			cur.removed, cur.replaced = true, false
			s.stopForReload(cur)
		}
		if s.cluster != nil && e.lease != nil && (cur == nil || cur.finished) {
			s.releaseLease(e) // nothing runs under it
		}
	}
	if s.cluster != nil {
		s.want()
	}
	log.Info("reloaded the connector files", "trigger", why, "added", strings.Join(added, ","), "removed",
		strings.Join(removed, ","), "changed", strings.Join(changed, ","), "unchanged", unchanged)
}

// replace starts pc, now in f, instead of e's current instance: at once when that has ended, else once it
// has drained.
// With cluster:, a pipeline this sluice does not hold only takes the new configuration, which runs when it
// gets the lease; one it holds runs it under the same lease.
func (s *supervisor) replace(e *entry, pc *config.Pipeline, f *config.File) {
	cur := e.current()
	s.mu.Lock()
	e.pc = pc
	s.mu.Unlock()
	if s.cluster != nil && e.lease == nil {
		s.mu.Lock()
		e.file, e.next = f, nil
		s.mu.Unlock()
		return
	}
	if cur == nil || cur.finished {
		s.mu.Lock()
		e.file, e.next = f, nil
		s.mu.Unlock()
		in := s.newInstance(pc, e.lease)
		in.byReload = true
		s.mu.Lock()
		e.runs = append(e.runs, in)
		s.mu.Unlock()
		s.start(in)
		return
	}
	next := s.newInstance(pc, e.lease)
	next.byReload = true
	s.mu.Lock()
	e.file, e.next = f, next
	s.mu.Unlock()
	cur.replaced, cur.removed, cur.handover = true, false, false
	s.stopForReload(cur)
}

// stopForReload drains in, and stops it at once if it has not drained within the drain timeout.
func (s *supervisor) stopForReload(in *instance) {
	if in.finished {
		return
	}
	in.p.Drain()
	t := time.AfterFunc(s.drainTimeout, in.cancel)
	go func() {
		<-in.done
		t.Stop()
	}()
}

// watchFiles reads the files at paths every interval until ctx is done, and sends on out when their
// content changed and then stayed the same for one more interval (an editor may write a file in steps).
// A file that cannot be read counts as content too: a reload then reports it. A change that was sent is
// not sent again, even when the reload it caused was rejected.
func watchFiles(ctx context.Context, paths []string, interval time.Duration, out chan<- string) {
	applied, pending := digest(paths), ""
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d := digest(paths)
		switch {
		case d == applied:
			pending = ""
		case d != pending:
			pending = d
		default:
			applied, pending = d, ""
			select {
			case out <- "a connector file changed":
			case <-ctx.Done():
				return
			}
		}
	}
}

// digest sums the contents of the files at paths.
func digest(paths []string) string {
	h := sha256.New()
	for _, p := range slices.Sorted(slices.Values(paths)) {
		h.Write([]byte(p + "\x00"))
		data, err := os.ReadFile(p)
		if err != nil {
			h.Write([]byte("error: " + err.Error()))
		}
		h.Write(data)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}
