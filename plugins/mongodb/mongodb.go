// Package mongodb is sluice's MongoDB change-stream source.
//
// It watches a collection, a database or a whole deployment and emits one record per change event. A
// record's position is the event's resume token; the host hands the last stored one back on Open and the
// stream resumes with startAfter, so nothing is skipped or repeated across restarts. On a quiet stream the
// source emits heartbeats (position-only records) from the stream's post-batch resume token, so that a
// pipeline that sees no change for a long time still stores a recent position and does not fall off the
// oplog.
//
// The same decoder reads replay files (replay_file: one change event per line in Extended JSON, as
// watch() prints them), so captured events can be replayed through a pipeline's transforms.
package mongodb

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// Plugin returns the mongodb plugin: its spec and its source constructor.
func Plugin() sdk.Plugin {
	return sdk.Plugin{Spec: spec, NewSource: func() sdk.Source { return &Source{} }}
}

var spec = sdk.Spec{
	Name:    "mongodb",
	Version: "0.1.0",
	Summary: "MongoDB change streams as a source: one record per change event, resumable by resume token.",
	Author:  "sluice",
	Source: &sdk.Stage{
		Summary: "Watches a collection, a database or a deployment. Positions are resume tokens; the stream resumes with startAfter. Emits heartbeats on quiet streams. Replays captured events from a file with replay_file.",
		Settings: []sdk.Setting{
			{Name: "uri", Type: sdk.TypeString, Secret: true,
				Doc: "Connection string (mongodb:// or mongodb+srv://), with credentials and TLS options. A replica set or sharded cluster is required for change streams. Required unless replay_file is set."},
			{Name: "database", Type: sdk.TypeString, Doc: "Database to watch. Omit to watch the whole deployment."},
			{Name: "collection", Type: sdk.TypeString, Doc: "Collection to watch. Omit to watch the whole database."},
			{Name: "pipeline", Type: sdk.TypeList,
				Doc: "Extra aggregation stages run by the server on the change stream, as a list of objects ([{$match: {operationType: insert}}]). They must keep _id, the resume token."},
			{Name: "full_document", Type: sdk.TypeString, Default: "updateLookup", Enum: []string{"default", "updateLookup", "whenAvailable", "required"},
				Doc: "fullDocument of update events: updateLookup (the document as it is when the event is read, default), default (none), whenAvailable or required (post-images, MongoDB 6.0+ with changeStreamPreAndPostImages)."},
			{Name: "full_document_before_change", Type: sdk.TypeString, Default: "off", Enum: []string{"off", "whenAvailable", "required"},
				Doc: "Pre-images (fullDocumentBeforeChange): off, whenAvailable or required. Needs MongoDB 6.0+ and changeStreamPreAndPostImages on the collection."},
			{Name: "batch_size", Type: sdk.TypeInt, Default: "0", Doc: "Events per server batch (0: the server's default)."},
			{Name: "max_await", Type: sdk.TypeDuration, Default: "1s", Doc: "How long the server waits for new events before answering an empty batch."},
			{Name: "show_expanded_events", Type: sdk.TypeBool, Default: "false", Doc: "Also emit DDL events such as create and createIndexes (MongoDB 6.0+)."},
			{Name: "start_at", Type: sdk.TypeString, Default: "latest",
				Doc: "Where a pipeline with no stored position starts: latest (changes from now on), an RFC 3339 time (startAtOperationTime), or a resume token as Extended JSON ({\"_data\": \"…\"}, startAfter). A stored position always wins."},
			{Name: "heartbeat_interval", Type: sdk.TypeDuration, Default: "10s",
				Doc: "On a stream with no events, emit a position-only heartbeat at most this often when the resume token has moved (0: never). Keeps the stored position recent so a restart does not fall off the oplog."},
			{Name: "on_history_lost", Type: sdk.TypeString, Default: "fail", Enum: []string{"fail", "latest", "timestamp"},
				Doc: "When the stored resume token is no longer in the oplog: fail (stop the pipeline and explain how to recover, default), latest (restart from now: the changes in between are lost) or timestamp (restart from start_at, which must be a time)."},
			{Name: "oversize", Type: sdk.TypeString, Default: "fail", Enum: []string{"fail", "split", "skip", "dlq"},
				Doc: "Events over MongoDB's 16 MB limit: fail (the server's error stops the pipeline, default), or add $changeStreamSplitLargeEvent (MongoDB 7.0+, 6.0.9+) and split (reassemble the fragments into one record), skip (log and drop it, keeping its position) or dlq (send it to the pipeline's dead-letter sink)."},
			{Name: "snapshot", Type: sdk.TypeString, Default: "never", Enum: []string{"never", "initial"},
				Doc: "initial: when the pipeline has no stored position, first fix the time the stream will start at, copy the collection's documents (as snapshot records shaped like insert events, in _id order, resumable mid-copy), then stream the changes made since that time, so none made during the copy is lost. Needs collection. never (default): stream only."},
			{Name: "encoding", Type: sdk.TypeString, Default: "relaxed", Enum: []string{"relaxed", "canonical", "bson"},
				Doc: "Payload encoding: relaxed Extended JSON (default), canonical Extended JSON, or the event's raw BSON."},
			{Name: "tls_ca_file", Type: sdk.TypeString, Doc: "PEM CA bundle to verify the server with; enables TLS."},
			{Name: "tls_cert_file", Type: sdk.TypeString, Doc: "PEM file with the client certificate and its key, for X.509 authentication or mutual TLS."},
			{Name: "replay_file", Type: sdk.TypeString,
				Doc: "Instead of watching, read change events from this file, one per line in Extended JSON (canonical or relaxed, as watch() prints them), and end after the last. Positions are the events' _id tokens."},
		},
	},
}

// Config holds the source's settings.
type Config struct {
	URI               string        `setting:"uri"`
	Database          string        `setting:"database"`
	Collection        string        `setting:"collection"`
	Pipeline          []any         `setting:"pipeline"`
	FullDocument      string        `setting:"full_document"`
	FullDocumentPre   string        `setting:"full_document_before_change"`
	BatchSize         int32         `setting:"batch_size"`
	MaxAwait          time.Duration `setting:"max_await"`
	ShowExpanded      bool          `setting:"show_expanded_events"`
	StartAt           string        `setting:"start_at"`
	HeartbeatInterval time.Duration `setting:"heartbeat_interval"`
	OnHistoryLost     string        `setting:"on_history_lost"`
	Oversize          string        `setting:"oversize"`
	Snapshot          string        `setting:"snapshot"`
	Encoding          string        `setting:"encoding"`
	TLSCAFile         string        `setting:"tls_ca_file"`
	TLSCertFile       string        `setting:"tls_cert_file"`
	ReplayFile        string        `setting:"replay_file"`
}

// Source is the change-stream source. The SDK calls Open, then Read from one goroutine (Ack is a no-op:
// positions are stored downstream), then Close.
type Source struct {
	sdk.UnimplementedSource
	cfg    Config
	log    *slog.Logger
	dec    decoder
	max    int
	client *mongo.Client
	stream *mongo.ChangeStream
	replay *replay
	snap   *snapshot // the initial snapshot while it is being copied

	out          []record.Record
	lastEmitted  bson.Raw // the resume token of the last record emitted
	lastActivity time.Time
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("mongodb: %s: %w", fmt.Sprintf(format, args...), sdk.ErrInvalidSettings)
}

// Open checks the settings, connects, and opens the change stream after req.After (or at start_at), or
// opens the replay file.
func (s *Source) Open(ctx context.Context, req sdk.OpenRequest) error {
	cfg := Config{FullDocument: "updateLookup", FullDocumentPre: "off", MaxAwait: time.Second, StartAt: "latest",
		HeartbeatInterval: 10 * time.Second, OnHistoryLost: "fail", Oversize: "fail", Snapshot: "never", Encoding: encRelaxed}
	if err := req.Settings.Decode(&cfg); err != nil {
		return err
	}
	if cfg.Collection != "" && cfg.Database == "" {
		return invalid("collection %q needs a database", cfg.Collection)
	}
	if cfg.Snapshot == "initial" && cfg.Collection == "" && cfg.ReplayFile == "" {
		return invalid("snapshot: initial needs a collection")
	}
	s.cfg, s.log, s.max = cfg, req.Logger, max(req.MaxBatchRecords, 1)
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.dec = decoder{encoding: cfg.Encoding, db: cfg.Database, coll: cfg.Collection, oversize: cfg.Oversize,
		deadLetter: req.DeadLetter, log: s.log.Warn}
	var after bson.Raw
	if len(req.After) > 0 && req.After[0] == posToken {
		var err error
		if after, err = positionToken(req.After); err != nil {
			return invalid("%v", err)
		}
		s.lastEmitted = after
	}
	if cfg.ReplayFile != "" {
		r, err := openReplay(cfg.ReplayFile, after)
		if err != nil {
			return err
		}
		s.replay = r
		return nil
	}
	if cfg.URI == "" {
		return invalid("uri is required (or replay_file)")
	}
	copts := options.Client().ApplyURI(cfg.URI)
	if cfg.TLSCAFile != "" || cfg.TLSCertFile != "" {
		tc, err := tlsConfig(cfg)
		if err != nil {
			return invalid("%v", err)
		}
		copts.SetTLSConfig(tc)
	}
	if err := copts.Validate(); err != nil {
		return invalid("uri: %v", err)
	}
	client, err := mongo.Connect(copts)
	if err != nil {
		return fmt.Errorf("mongodb: connecting: %w", err)
	}
	s.client = client
	if err := s.start(ctx, req.After, after); err != nil {
		_ = client.Disconnect(context.Background())
		return err
	}
	s.lastActivity = time.Now()
	return nil
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSCAFile != "" {
		pem, err := os.ReadFile(cfg.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls_ca_file %s holds no PEM certificate", cfg.TLSCAFile)
		}
		tc.RootCAs = pool
	}
	if cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSCertFile)
		if err != nil {
			return nil, fmt.Errorf("tls_cert_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// pipeline converts the pipeline setting into aggregation stages.
func (s *Source) pipeline() (mongo.Pipeline, error) {
	var p mongo.Pipeline
	for i, st := range s.cfg.Pipeline {
		b, err := json.Marshal(st)
		if err != nil {
			return nil, invalid("pipeline[%d]: %v", i, err)
		}
		var d bson.D
		if err := bson.UnmarshalExtJSON(b, false, &d); err != nil {
			return nil, invalid("pipeline[%d] is not a stage object: %v", i, err)
		}
		p = append(p, d)
	}
	if s.cfg.Oversize != "fail" {
		p = append(p, bson.D{{Key: "$changeStreamSplitLargeEvent", Value: bson.D{}}})
	}
	return p, nil
}

// start resumes from the position the host handed over: a resume token, a snapshot in progress or a
// finished snapshot's start time; without one it begins a snapshot or starts the stream at start_at.
func (s *Source) start(ctx context.Context, pos record.Position, tok bson.Raw) error {
	coll := func() *mongo.Collection { return s.client.Database(s.cfg.Database).Collection(s.cfg.Collection) }
	switch {
	case tok != nil:
		return s.watch(ctx, tok)
	case len(pos) > 0 && (pos[0] == posSnapshot || pos[0] == posStreamStart):
		t, last, err := parseStart(pos)
		if err != nil {
			return invalid("%v", err)
		}
		if pos[0] == posStreamStart {
			return s.watchFrom(ctx, nil, &t)
		}
		s.snap = &snapshot{start: t, last: last, coll: coll()}
		s.log.Info("continuing the snapshot", "collection", s.scope())
		return nil
	case len(pos) > 0:
		return invalid("position %x is not a MongoDB position from this plugin", []byte(pos))
	case s.cfg.Snapshot == "initial":
		s.snap = &snapshot{start: s.serverTime(ctx), coll: coll()}
		s.log.Info("starting the initial snapshot", "collection", s.scope(), "stream_from", s.snap.start)
		return nil
	}
	return s.watch(ctx, nil)
}

// watch opens the change stream: after the token when there is one, else at start_at.
func (s *Source) watch(ctx context.Context, after bson.Raw) error {
	return s.watchFrom(ctx, after, nil)
}

// watchFrom opens the change stream after the token, else at the time at, else at start_at.
func (s *Source) watchFrom(ctx context.Context, after bson.Raw, at *bson.Timestamp) error {
	pipe, err := s.pipeline()
	if err != nil {
		return err
	}
	o := options.ChangeStream().SetMaxAwaitTime(s.cfg.MaxAwait).SetShowExpandedEvents(s.cfg.ShowExpanded)
	if s.cfg.FullDocument != "default" {
		o.SetFullDocument(options.FullDocument(s.cfg.FullDocument))
	}
	if s.cfg.FullDocumentPre != "off" {
		o.SetFullDocumentBeforeChange(options.FullDocument(s.cfg.FullDocumentPre))
	}
	if s.cfg.BatchSize > 0 {
		o.SetBatchSize(s.cfg.BatchSize)
	}
	from := "latest"
	switch {
	case after != nil:
		o.SetStartAfter(after)
		from = "after the stored position"
	case at != nil:
		o.SetStartAtOperationTime(at)
		from = fmt.Sprintf("at the snapshot's start (%d.%d)", at.T, at.I)
	case s.cfg.StartAt == "latest" || s.cfg.StartAt == "":
	default:
		if t, err := time.Parse(time.RFC3339, s.cfg.StartAt); err == nil {
			o.SetStartAtOperationTime(&bson.Timestamp{T: uint32(t.Unix())})
			from = "at " + s.cfg.StartAt
		} else {
			var tok bson.Raw
			if err := bson.UnmarshalExtJSON([]byte(s.cfg.StartAt), false, &tok); err != nil {
				return invalid(`start_at %q is not "latest", an RFC 3339 time or a resume token ({"_data": "…"})`, s.cfg.StartAt)
			}
			o.SetStartAfter(tok)
			from = "after the start_at token"
		}
	}
	var cs *mongo.ChangeStream
	switch {
	case s.cfg.Collection != "":
		cs, err = s.client.Database(s.cfg.Database).Collection(s.cfg.Collection).Watch(ctx, pipe, o)
	case s.cfg.Database != "":
		cs, err = s.client.Database(s.cfg.Database).Watch(ctx, pipe, o)
	default:
		cs, err = s.client.Watch(ctx, pipe, o)
	}
	if err != nil {
		if historyLost(err) && after != nil {
			return s.historyLost(ctx, err)
		}
		return fmt.Errorf("mongodb: opening the change stream (%s): %w", from, err)
	}
	s.stream = cs
	s.log.Info("change stream open", "scope", s.scope(), "from", from)
	return nil
}

func (s *Source) scope() string {
	switch {
	case s.cfg.Collection != "":
		return s.cfg.Database + "." + s.cfg.Collection
	case s.cfg.Database != "":
		return s.cfg.Database
	}
	return "(deployment)"
}

// historyLost reports whether err says the resume token is no longer in the oplog.
func historyLost(err error) bool {
	var se mongo.ServerError
	if errors.As(err, &se) {
		// ChangeStreamHistoryLost, ChangeStreamFatalError, CappedPositionLost, OplogQueryMinTsMissing.
		return se.HasErrorCode(286) || se.HasErrorCode(280) || se.HasErrorCode(136) || se.HasErrorCode(326)
	}
	return false
}

// historyLost applies on_history_lost.
func (s *Source) historyLost(ctx context.Context, cause error) error {
	switch s.cfg.OnHistoryLost {
	case "latest":
		s.log.Error("the stored resume token is no longer in the oplog; restarting from the latest change as on_history_lost: latest says. Changes made since the stored position are NOT delivered.", "err", cause)
		s.lastEmitted = nil
		return s.watch(ctx, nil)
	case "timestamp":
		if _, err := time.Parse(time.RFC3339, s.cfg.StartAt); err != nil {
			return status.Errorf(codes.FailedPrecondition, "mongodb: the stored resume token is no longer in the oplog, and on_history_lost: timestamp needs start_at to be an RFC 3339 time (it is %q): %v", s.cfg.StartAt, cause)
		}
		s.log.Error("the stored resume token is no longer in the oplog; restarting at start_at as on_history_lost: timestamp says", "start_at", s.cfg.StartAt, "err", cause)
		s.lastEmitted = nil
		return s.watch(ctx, nil)
	}
	return status.Errorf(codes.FailedPrecondition, "mongodb: the change stream cannot resume: the stored position is no longer in the oplog of %s (%v). "+
		"Changes between the stored position and now can no longer be read from the change stream. To recover: "+
		"(1) copy the current state of the data another way if those changes matter (or use a snapshot); "+
		"(2) restart from now with `sluice reset PIPELINE` (or set on_history_lost: latest), or from a time with start_at: TIME and on_history_lost: timestamp; "+
		"(3) to keep this from happening again, enlarge the oplog (replSetResizeOplog) or its retention (oplogMinRetentionHours) and keep heartbeat_interval on",
		s.scope(), cause)
}

// Read returns the next change events, up to the batch size, or a heartbeat when the stream has been
// quiet for heartbeat_interval and its resume token has moved. It waits (max_await per round trip) until
// it has one of the two.
func (s *Source) Read(ctx context.Context) ([]record.Record, error) {
	if s.replay != nil {
		return s.replay.read(&s.dec, s.max)
	}
	if s.snap != nil {
		return s.readSnapshot(ctx)
	}
	out := s.out[:0]
	for {
		for len(out) < s.max && s.stream.TryNext(ctx) {
			r, ok, err := s.dec.add(s.stream.Current)
			if err != nil {
				return nil, fmt.Errorf("mongodb: %w", err)
			}
			if ok {
				out = append(out, r)
				s.lastEmitted = bson.Raw(r.Position[1:])
			}
		}
		if err := s.stream.Err(); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var se mongo.ServerError
			if errors.As(err, &se) && se.HasErrorCode(10334) && s.cfg.Oversize == "fail" {
				return nil, fmt.Errorf("mongodb: a change event is over MongoDB's 16 MB limit (BSONObjectTooLarge); set oversize to split, skip or dlq (MongoDB 6.0.9+ or 7.0+): %w", err)
			}
			return nil, fmt.Errorf("mongodb: change stream: %w", err)
		}
		if len(out) > 0 {
			s.out, s.lastActivity = out, time.Now()
			return out, nil
		}
		if hb, ok := s.heartbeat(); ok {
			return append(out, hb), nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond): // a server that does not wait max_await must not spin us
		}
	}
}

// heartbeat returns a position-only record when the stream has been quiet long enough and its resume
// token (the post-batch resume token on servers that have one) is past the last position emitted.
func (s *Source) heartbeat() (record.Record, bool) { return s.heartbeatAt(s.stream.ResumeToken()) }

// heartbeatAt is heartbeat with the stream's current resume token.
func (s *Source) heartbeatAt(tok bson.Raw) (record.Record, bool) {
	if s.cfg.HeartbeatInterval <= 0 || time.Since(s.lastActivity) < s.cfg.HeartbeatInterval {
		return record.Record{}, false
	}
	if tok == nil || tok.String() == s.lastEmitted.String() {
		return record.Record{}, false
	}
	s.lastEmitted, s.lastActivity = append(bson.Raw(nil), tok...), time.Now()
	return record.Record{Position: tokenPosition(tok), Op: record.OpHeartbeat}, true
}

// Close closes the stream and the connection.
func (s *Source) Close(ctx context.Context) error {
	if s.replay != nil {
		return s.replay.close()
	}
	if s.stream != nil {
		_ = s.stream.Close(ctx)
	}
	if s.client != nil {
		return s.client.Disconnect(ctx)
	}
	return nil
}
