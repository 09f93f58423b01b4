package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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

// Open checks the settings, connects, and for a transactional sink creates the progress topic if it is
// missing and initialises the transactional producer, which fences any earlier instance with the same
// transactional id and aborts the transaction it left open. Errors about settings wrap
// sdk.ErrInvalidSettings; any other error (brokers unreachable) lets the host retry.
func (s *Sink) Open(ctx context.Context, req sdk.OpenRequest) error {
	cfg, err := ParseConfig(req.Settings, req.Pipeline)
	if err != nil {
		return err
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
	if err := s.open(ctx); err != nil {
		s.release() // the host may not call Close after a failed Open
		return err
	}
	return nil
}

func (s *Sink) open(ctx context.Context) error {
	cl, err := s.client(ctx)
	if err != nil {
		return err
	}
	if !s.cfg.Transactional {
		if err := cl.Ping(ctx); err != nil {
			return fmt.Errorf("kafka: reaching brokers %v: %w", s.cfg.Brokers, err)
		}
		return nil
	}
	s.progressKey = []byte(s.cfg.TransactionalID)
	n, err := ensureProgressTopic(ctx, cl, s.cfg.ProgressTopic)
	if err != nil {
		return err
	}
	s.progressPart = progressPartition(s.progressKey, n)
	if _, _, err := cl.ProducerID(ctx); err != nil {
		return s.describe(fmt.Errorf("kafka: initialising the transactional producer %q: %w", s.cfg.TransactionalID, err))
	}
	return nil
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
	pos, err := readProgress(ctx, cl, &s.cfg, s.log, s.progressPart, s.progressKey)
	if err != nil {
		return nil, s.describe(err)
	}
	return pos, nil
}

// Write writes the batch's records and, when transactional, batch.Position to the progress topic, in one
// transaction. Records larger than max_message_bytes, or routed to an impossible topic name, are
// rejected (returned in a *sdk.RejectError after everything else is committed) when the pipeline has a
// dead-letter sink, and fail the write, writing nothing, when it has none. Any other failure returns an
// error with nothing committed; the host then restarts the sink, which resumes from Checkpoint.
func (s *Sink) Write(ctx context.Context, batch record.Batch) error {
	msgs, rejects, err := s.messages(batch)
	if err != nil {
		return err
	}
	if len(rejects) > 0 && !s.deadLetter {
		r := rejects[0]
		return fmt.Errorf("kafka: record at position %x cannot be written: %s (the pipeline has no dead-letter sink, so the batch is not written)",
			[]byte(batch.Records[r.Index].Position), r.Reason)
	}
	cl, err := s.enter(ctx)
	if err != nil {
		return err
	}
	defer s.leave(ctx)
	if err := s.write(ctx, cl, msgs, batch.Position); err != nil {
		// Whatever the client still holds refers to the batch's memory, and a failed transaction leaves
		// the producer in a state only a new one fixes: close it; the host restarts the stage.
		s.release()
		s.pending.Wait()
		return s.describe(err)
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

// firstErrors keeps an error message readable when a thousand records failed the same way.
func firstErrors(errs []error) error {
	if len(errs) <= 3 {
		return errors.Join(errs...)
	}
	return fmt.Errorf("%w (and %d more)", errors.Join(errs[:3]...), len(errs)-3)
}

// messages turns the batch's data records into Kafka messages (aliasing the batch's memory) and lists
// the records that can never be written.
func (s *Sink) messages(batch record.Batch) ([]kgo.Record, []sdk.Rejection, error) {
	s.recs = s.recs[:0]
	var rejects []sdk.Rejection
	allHeaders := slices.Contains(s.cfg.Headers, "*")
	for i := range batch.Records {
		r := &batch.Records[i]
		if r.Op == record.OpHeartbeat {
			continue
		}
		topic := s.cfg.Topic
		if route, ok := r.Meta.Get(record.MetaRoute); ok {
			if err := checkTopic(route); err != nil {
				rejects = append(rejects, sdk.Rejection{Index: i, Reason: "route: " + err.Error()})
				continue
			}
			topic = route
		}
		if topic == "" {
			return nil, nil, fmt.Errorf("kafka: record at position %x has no route and the topic setting is empty", []byte(r.Position))
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
			rejects = append(rejects, sdk.Rejection{Index: i,
				Reason: fmt.Sprintf("message of %d bytes (key + value + headers) is larger than max_message_bytes (%d)", size, s.cfg.MaxMessageBytes)})
			continue
		}
		s.recs = append(s.recs, m)
	}
	return s.recs, rejects, nil
}

// describe turns the errors a fenced producer gets into one that says what happened.
func (s *Sink) describe(err error) error {
	if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) {
		return fmt.Errorf("kafka: fenced: another sink with transactional id %q (another instance of this pipeline) has started, so this one stops: %w",
			s.cfg.TransactionalID, err)
	}
	return err
}

// Close closes the producer. An open transaction cannot exist here: Write commits or fails.
func (s *Sink) Close(context.Context) error {
	s.release()
	return nil
}
