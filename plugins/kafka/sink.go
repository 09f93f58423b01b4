package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// Sink writes records to Kafka. Create it with Plugin (or &Sink{}); the SDK calls Open, then Checkpoint,
// then Write from one goroutine, and Close once, as sdk.Sink describes.
//
// A transactional Sink writes each Write's records and the batch's position in one transaction. Its
// producer client lives from Open until the Write stream that uses it ends (or Close): a host that
// vanishes without calling Close leaves nothing running once its streams are gone.
type Sink struct {
	sdk.UnimplementedSink

	cfg        Config
	log        *slog.Logger
	deadLetter bool
	// progressKey is the key of this pipeline's progress messages (the transactional id) and
	// progressPart the progress topic's partition that holds them.
	progressKey  []byte
	progressPart int32

	mu      sync.Mutex      // guards cl, watched and busy
	cl      *kgo.Client     // the producer; nil until needed
	watched context.Context // the context of the last Write: the producer is closed when it ends
	busy    bool            // a Write is running

	topics     topicCache
	unwritable map[string]string // route topic → why records routed there cannot be written, this Write

	recs    []kgo.Record // reused between writes
	pending sync.WaitGroup
	errMu   sync.Mutex
	errs    []error

	// beforeCommit, when set (by tests), runs after a transaction's records are flushed and before it is
	// committed.
	beforeCommit func()

	commitSeconds *sdk.Histogram // metrics (sdk.Metrics)
	producedBytes *sdk.Counter
}

// Open checks the settings, connects, checks that the topic setting names a topic that exists (unless
// auto_create_topics is on), and for a transactional sink creates the progress topic if it is missing
// and initialises the transactional producer, which fences any earlier instance with the same
// transactional id and ends the transaction it left open. Errors about settings wrap
// sdk.ErrInvalidSettings, errors no retry heals (a missing topic, failed authentication, no permission)
// sdk.ErrPermanent; any other error (brokers unreachable) lets the host retry.
func (s *Sink) Open(ctx context.Context, req sdk.OpenRequest) error {
	cfg, err := ParseConfig(req.Settings, req.Pipeline)
	if err != nil {
		return err
	}
	if id, _ := req.Settings["transactional_id"].(string); id != "" && cfg.Transactional && req.Lane > 0 {
		// A lane of a pipeline with ordered: false: lanes must not fence each other. The default id
		// differs already (it is derived from the lane's pipeline id).
		cfg.TransactionalID += fmt.Sprintf(".lane-%d", req.Lane)
	}
	s.cfg, s.log, s.deadLetter = cfg, req.Logger, req.DeadLetter
	s.commitSeconds = req.Metrics.Histogram("transaction_commit_seconds", "Time to commit a write's transaction.", nil)
	s.producedBytes = req.Metrics.Counter("produced_bytes_total", "Bytes (keys, values, headers) of the messages written and, when transactional, committed.")
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if _, err := cfg.connOpts(s.log); err != nil {
		return fmt.Errorf("%w: %w", sdk.ErrInvalidSettings, err)
	}
	octx, cancel := openContext(ctx)
	defer cancel()
	if err := s.open(octx); err != nil {
		s.release() // the host may not call Close after a failed Open
		if octx.Err() != nil && ctx.Err() == nil {
			// The brokers kept the client waiting (a silent address, a server that is not Kafka, no
			// leader): say so while the host still listens, rather than be cut without a word.
			return fmt.Errorf("kafka: brokers %s gave no usable answer while Open could wait (the pipeline's open_timeout): are they Kafka brokers, reachable from here, and is brokers right? (a broker that expects TLS needs tls: true)",
				s.cfg.brokerList())
		}
		return s.classify(err)
	}
	return nil
}

// openContext returns ctx ending a little before ctx's deadline (a tenth of the time left, at most
// openMargin), so that an Open the brokers keep waiting fails with the sink's own words before the host
// cuts the call.
func openContext(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, dl.Add(-min(time.Until(dl)/10, openMargin)))
}

// openMargin is the most time openContext keeps back from the host's deadline for Open.
const openMargin = time.Second

func (s *Sink) open(ctx context.Context) error {
	cl, err := s.client(ctx)
	if err != nil {
		return err
	}
	if err := s.checkTopic(ctx, cl); err != nil {
		return err
	}
	if !s.cfg.Transactional {
		return nil
	}
	s.progressKey = []byte(s.cfg.TransactionalID)
	n, err := ensureProgressTopic(ctx, cl, &s.cfg)
	if err != nil {
		return err
	}
	s.progressPart = progressPartition(s.progressKey, n)
	return fence(ctx, cl, &s.cfg, s.log)
}

// checkTopic checks that the topic setting names a topic that exists, when the sink may not have it
// created; without a topic setting (every record routed) it checks that the brokers answer.
func (s *Sink) checkTopic(ctx context.Context, cl *kgo.Client) error {
	if s.cfg.Topic == "" || s.cfg.AutoCreateTopics {
		if err := cl.Ping(ctx); err != nil {
			return fmt.Errorf("kafka: reaching brokers %s: %w", s.cfg.brokerList(), err)
		}
		return nil
	}
	infos, err := lookupTopics(ctx, cl, []string{s.cfg.Topic})
	if err == nil {
		err = confirmMissing(ctx, cl, infos, func(string) bool { return true })
	}
	if err != nil {
		return fmt.Errorf("kafka: looking up topic %q at %s: %w", s.cfg.Topic, s.cfg.brokerList(), err)
	}
	s.topics.update(infos, time.Now())
	switch err := infos[s.cfg.Topic].err; {
	case err == nil:
		return nil
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		return sdk.Permanent(s.cfg.missingTopicError(s.cfg.Topic))
	default:
		return fmt.Errorf("kafka: topic %q: %w", s.cfg.Topic, err)
	}
}

// client returns the producer, creating it (and, when transactional, not yet initialising it) if needed.
func (s *Sink) client(context.Context) (*kgo.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl != nil {
		return s.cl, nil
	}
	opts, err := s.cfg.connOpts(s.log)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(opts, s.cfg.producerOpts()...)...)
	if err != nil {
		return nil, fmt.Errorf("%w: kafka: %w", sdk.ErrInvalidSettings, err)
	}
	s.cl = cl
	return cl, nil
}

// enter marks a Write as running and returns the producer. The first Write with a new context (the SDK
// passes one per host stream) arranges for the producer to be closed when that context ends, even if
// Close never comes (a host that crashed): nothing keeps running once the host's stream is gone.
func (s *Sink) enter(ctx context.Context) (*kgo.Client, error) {
	cl, err := s.client(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy = true
	if s.watched != ctx {
		s.watched = ctx
		context.AfterFunc(ctx, func() { s.releaseIf(ctx) })
	}
	return cl, nil
}

// leave marks the Write as done, and closes the producer if the Write's context ended meanwhile.
func (s *Sink) leave(ctx context.Context) {
	s.mu.Lock()
	s.busy = false
	s.mu.Unlock()
	if ctx.Err() != nil {
		s.releaseIf(ctx)
	}
}

// releaseIf closes the producer when ctx is still the last Write's context and no Write is running.
func (s *Sink) releaseIf(ctx context.Context) {
	s.mu.Lock()
	if s.watched != ctx || s.busy {
		s.mu.Unlock()
		return
	}
	cl := s.cl
	s.cl, s.watched = nil, nil
	s.mu.Unlock()
	if cl != nil {
		cl.Close()
	}
}

// release closes the producer, if any; the next Write creates a new one.
func (s *Sink) release() {
	s.mu.Lock()
	cl := s.cl
	s.cl, s.watched = nil, nil
	s.mu.Unlock()
	if cl != nil {
		cl.Close()
	}
}

// Checkpoint returns the position of the last committed progress message of this sink's transactional
// id, read with read_committed, or nil when there is none. Open has fenced earlier instances, so no
// transaction of this id can still commit after it returns.
func (s *Sink) Checkpoint(ctx context.Context) (record.Position, error) {
	if !s.cfg.Transactional {
		return nil, nil
	}
	cl, err := s.client(ctx)
	if err != nil {
		return nil, err
	}
	pid, _, err := cl.ProducerID(ctx)
	if err != nil {
		return nil, s.classify(fmt.Errorf("kafka: the producer id of transactional id %s: %w", s.progressKey, err))
	}
	pos, err := readProgress(ctx, cl, &s.cfg, s.log, s.progressPart, s.progressKey, pid)
	if err != nil {
		return nil, s.classify(err)
	}
	return pos, nil
}

// Write writes the batch's records and, when transactional, batch.Position to the progress topic, in one
// transaction. Records that can never be written — larger than max_message_bytes, routed to a name Kafka
// does not allow as a topic or (auto_create_topics false) to a topic that does not exist, or without a
// topic at all — are rejected (returned in a *sdk.RejectError after everything else is committed) when
// the pipeline has a dead-letter sink, and fail the write with a permanent error naming the first such
// record, writing nothing, when it has none. Any other failure returns an error with nothing committed
// (permanent when no retry can heal it, see classify); the host then restarts the sink, which resumes
// from Checkpoint.
func (s *Sink) Write(ctx context.Context, batch record.Batch) error {
	cl, err := s.enter(ctx)
	if err != nil {
		return err
	}
	defer s.leave(ctx)
	if err := s.checkRoutes(ctx, cl, batch); err != nil {
		return s.classify(err)
	}
	msgs, rejects := s.messages(batch)
	if len(rejects) > 0 && !s.deadLetter {
		return unwritable(batch, rejects)
	}
	if err := s.write(ctx, cl, msgs, batch.Position); err != nil {
		// Abort the transaction, so that it does not hold read_committed consumers back until the
		// restarted sink (or, if the pipeline stops, transaction_timeout) ends it. Whatever the client
		// still holds refers to the batch's memory, and a failed transaction leaves the producer in a
		// state only a new one fixes: close it; the host restarts the stage. A topic may have been
		// deleted: look topics up again.
		s.abort(ctx, cl)
		s.release()
		s.pending.Wait()
		s.topics.forgetKnown()
		return s.classify(err)
	}
	n := 0
	for _, m := range msgs {
		n += len(m.Key) + len(m.Value)
		for _, h := range m.Headers {
			n += len(h.Key) + len(h.Value)
		}
	}
	s.producedBytes.Add(float64(n))
	if len(rejects) > 0 {
		return &sdk.RejectError{Rejections: rejects}
	}
	return nil
}

// abortTimeout bounds the abort of a failed transaction: when the brokers do not answer, the restarted
// sink aborts it when it fences this one.
const abortTimeout = 5 * time.Second

// abort drops what the producer still buffers and aborts the open transaction, if any, best effort.
func (s *Sink) abort(ctx context.Context, cl *kgo.Client) {
	if !s.cfg.Transactional {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	if err := cl.AbortBufferedRecords(ctx); err != nil {
		return
	}
	if err := cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
		s.log.Debug("kafka: aborting the failed transaction", "err", err)
	}
}

// unwritable is the error of a Write that cannot write some records and has no dead-letter sink to send
// them to: permanent, naming the first record by its position.
func unwritable(batch record.Batch, rejects []sdk.Rejection) error {
	r := rejects[0]
	more := ""
	switch n := len(rejects) - 1; {
	case n == 1:
		more = " (and 1 more record of the batch cannot be written)"
	case n > 1:
		more = fmt.Sprintf(" (and %d more records of the batch cannot be written)", n)
	}
	return sdk.Permanentf("kafka: record at position %x cannot be written: %s%s; the pipeline has no dead-letter sink (dlq:) to send it to, so the batch is not written",
		[]byte(batch.Records[r.Index].Position), r.Reason, more)
}

// checkRoutes looks up the topics the batch's records are routed to that the sink does not know yet,
// when auto_create_topics is false, and notes in s.unwritable the ones that do not exist (or that it may
// not describe). A topic found missing for the first time is confirmed (confirmMissing); one found
// missing less than missingRecheck ago is not asked about again.
func (s *Sink) checkRoutes(ctx context.Context, cl *kgo.Client, batch record.Batch) error {
	clear(s.unwritable)
	if s.cfg.AutoCreateTopics {
		return nil
	}
	var ask []string
	now := time.Now()
	for i := range batch.Records {
		r := &batch.Records[i]
		route, ok := r.Meta.Get(record.MetaRoute)
		if !ok || r.Op == record.OpHeartbeat || s.topics.isKnown(route) || slices.Contains(ask, route) {
			continue
		}
		if _, noted := s.unwritable[route]; noted || checkTopic(route) != nil { // messages rejects bad names
			continue
		}
		if s.unwritable == nil {
			s.unwritable = map[string]string{}
		}
		if s.topics.recentlyMissing(route, now) {
			s.unwritable[route] = s.cfg.routeProblem(route, topicInfo{err: kerr.UnknownTopicOrPartition})
			continue
		}
		ask = append(ask, route)
	}
	if len(ask) == 0 {
		return nil
	}
	infos, err := lookupTopics(ctx, cl, ask)
	if err == nil {
		err = confirmMissing(ctx, cl, infos, func(t string) bool { _, before := s.topics.missing[t]; return !before })
	}
	if err != nil {
		return fmt.Errorf("kafka: looking up the topics records are routed to (%s): %w", strings.Join(ask, ", "), err)
	}
	s.topics.update(infos, now)
	for _, t := range ask {
		if i := infos[t]; errors.Is(i.err, kerr.UnknownTopicOrPartition) || errors.Is(i.err, kerr.TopicAuthorizationFailed) {
			s.unwritable[t] = s.cfg.routeProblem(t, i)
		}
	}
	return nil
}

// write produces msgs (and the progress message) and commits, or returns an error.
func (s *Sink) write(ctx context.Context, cl *kgo.Client, msgs []kgo.Record, pos record.Position) error {
	if s.cfg.Transactional {
		if err := cl.BeginTransaction(); err != nil {
			return fmt.Errorf("kafka: beginning a transaction: %w", err)
		}
	}
	s.errs = s.errs[:0]
	for i := range msgs {
		s.produce(ctx, cl, &msgs[i])
	}
	var progress kgo.Record
	if s.cfg.Transactional {
		progress = kgo.Record{Topic: s.cfg.ProgressTopic, Partition: s.progressPart, Key: s.progressKey, Value: encodeProgress(pos)}
		s.produce(ctx, cl, &progress)
	}
	if err := cl.Flush(ctx); err != nil {
		return fmt.Errorf("kafka: waiting for the brokers: %w", err)
	}
	s.pending.Wait()
	if len(s.errs) > 0 {
		return fmt.Errorf("kafka: producing: %w", firstErrors(s.errs))
	}
	if !s.cfg.Transactional {
		return nil
	}
	if s.beforeCommit != nil {
		s.beforeCommit()
	}
	start := time.Now()
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("kafka: committing the transaction: %w", err)
	}
	s.commitSeconds.ObserveDuration(time.Since(start))
	return nil
}

func (s *Sink) produce(ctx context.Context, cl *kgo.Client, r *kgo.Record) {
	s.pending.Add(1)
	cl.Produce(ctx, r, func(r *kgo.Record, err error) {
		if err != nil {
			s.errMu.Lock()
			s.errs = append(s.errs, fmt.Errorf("topic %s: %w", r.Topic, err))
			s.errMu.Unlock()
		}
		s.pending.Done()
	})
}

// firstErrors keeps an error message readable when a thousand records failed: each distinct error once,
// with the number of records it concerns, at most three of them.
func firstErrors(errs []error) error {
	var distinct []error
	count := map[string]int{}
	for _, e := range errs {
		if count[e.Error()] == 0 {
			distinct = append(distinct, e)
		}
		count[e.Error()]++
	}
	shown := make([]error, 0, 3)
	for _, e := range distinct[:min(3, len(distinct))] {
		if n := count[e.Error()]; n > 1 {
			e = fmt.Errorf("%w (%d records)", e, n)
		}
		shown = append(shown, e)
	}
	err := errors.Join(shown...)
	if more := len(distinct) - len(shown); more > 0 {
		err = fmt.Errorf("%w (and %d other errors)", err, more)
	}
	return err
}

// messages turns the batch's data records into Kafka messages (aliasing the batch's memory) and lists
// the records that can never be written.
func (s *Sink) messages(batch record.Batch) ([]kgo.Record, []sdk.Rejection) {
	s.recs = s.recs[:0]
	var rejects []sdk.Rejection
	reject := func(i int, reason string) { rejects = append(rejects, sdk.Rejection{Index: i, Reason: reason}) }
	allHeaders := slices.Contains(s.cfg.Headers, "*")
	for i := range batch.Records {
		r := &batch.Records[i]
		if r.Op == record.OpHeartbeat {
			continue
		}
		topic := s.cfg.Topic
		if route, ok := r.Meta.Get(record.MetaRoute); ok {
			if err := checkTopic(route); err != nil {
				reject(i, "route: "+err.Error())
				continue
			}
			if problem, ok := s.unwritable[route]; ok {
				reject(i, problem)
				continue
			}
			topic = route
		}
		if topic == "" {
			reject(i, "it has no route ("+record.MetaRoute+") and the topic setting is empty")
			continue
		}
		m := kgo.Record{Topic: topic, Key: r.Key, Value: r.Payload}
		if len(r.Key) == 0 {
			m.Key = nil
		}
		if len(r.Payload) == 0 {
			m.Value = nil // a tombstone
		}
		size := len(m.Key) + len(m.Value)
		for _, f := range r.Meta {
			if f.Key == record.MetaRoute || !(allHeaders || slices.Contains(s.cfg.Headers, f.Key)) {
				continue
			}
			m.Headers = append(m.Headers, kgo.RecordHeader{Key: f.Key, Value: []byte(f.Value)})
			size += len(f.Key) + len(f.Value)
		}
		if size > s.cfg.MaxMessageBytes {
			reject(i, fmt.Sprintf("message of %d bytes (key + value + headers) is larger than max_message_bytes (%d)", size, s.cfg.MaxMessageBytes))
			continue
		}
		s.recs = append(s.recs, m)
	}
	return s.recs, rejects
}

// Close closes the producer. An open transaction cannot exist here: Write commits or fails.
func (s *Sink) Close(context.Context) error {
	s.release()
	return nil
}
