// Package mongodb is sluice's MongoDB change-stream source.
//
// It watches a collection, a database or a whole deployment — the last two optionally narrowed to some
// collections by name or regular expression, filtered by the server — and emits one record per change
// event. A record's position is the event's resume token; the host hands the last stored one back on
// Open and the stream resumes with startAfter, so nothing is skipped or repeated across restarts, and a
// stream that was invalidated (its collection dropped or renamed) continues after the invalidate event.
// It can copy the watched collections first (an initial snapshot, resumable by collection and _id). On
// a quiet stream the source emits heartbeats (position-only records) from the stream's post-batch resume
// token, so that a pipeline that sees no change for a long time still stores a recent position and does
// not fall off the oplog.
//
// The same decoder reads replay files (replay_file: one change event per line in Extended JSON, as
// watch() prints them), so captured events can be replayed through a pipeline's transforms.
package mongodb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// Plugin returns the mongodb plugin: its spec and its source constructor.
func Plugin() sdk.Plugin {
	return sdk.Plugin{Spec: spec, NewSource: func() sdk.Source { return &Source{} }}
}

var spec = sdk.Spec{
	Name:    "mongodb",
	Version: "0.4.0",
	Summary: "MongoDB change streams as a source: one record per change event, resumable by resume token.",
	Author:  "sluice",
	Source: &sdk.Stage{
		Summary:  "Watches a collection, a database or a deployment, optionally filtered to some collections (collections, namespaces) on one stream. Record positions are resume tokens; a restarted pipeline resumes with startAfter right after the last stored one. Emits heartbeats on quiet streams, can copy the watched collections first (snapshot: initial), and replays captured events from a file (replay_file). Record key: the document's _id as canonical Extended JSON; metadata mongodb.db, mongodb.coll, mongodb.operation, mongodb.cluster_time, mongodb.wall_time, mongodb.txn_number, mongodb.lsid; payload: the change event. sluice verify reads every watched document as a snapshot record (a snapshot read on MongoDB 5.0+).",
		Settings: sdk.MustSettingsOf[Config](),
		// What Open refuses across settings, checked when the connector file loads.
		Rules: append([]sdk.Rule{
			{Expr: `(uri ?? "") != "" || (replay_file ?? "") != ""`, Settings: []string{"uri", "replay_file"},
				Message: "uri is required (or replay_file, to replay captured events instead of connecting)"},
			{Expr: `(collection ?? "") == "" || (database ?? "") != ""`, Settings: []string{"collection", "database"},
				Message: "collection needs a database: set database, or remove collection to watch the whole deployment"},
			{Expr: `collections == nil || (database ?? "") != ""`, Settings: []string{"collections", "database"},
				Message: "collections needs a database: set database (collections are names in it), or use namespaces to filter the whole deployment by \"db.coll\""},
			{Expr: `(collection ?? "") == "" || (collections == nil && namespaces == nil)`, Settings: []string{"collections", "namespaces", "collection"},
				Message: "collection watches one collection and cannot be combined with collections or namespaces: list every collection in collections (or filter with namespaces) and remove collection"},
			{Expr: `collections == nil || len(collections) > 0`, Settings: []string{"collections"},
				Message: "collections is empty: list the collections to watch, or remove it to watch every collection of database"},
			{Expr: `namespaces == nil || all(keys(namespaces), # in ["include", "exclude"])`, Settings: []string{"namespaces"},
				Message: "namespaces takes include and exclude, lists of regular expressions matched against \"db.coll\""},
			{Expr: `namespaces == nil || len(namespaces) > 0`, Settings: []string{"namespaces"},
				Message: "namespaces has neither include nor exclude: give regular expressions matched against \"db.coll\", or remove namespaces"},
			{Expr: `on_history_lost != "timestamp" || start_at matches "^[0-9]{4}-[0-9]{2}-[0-9]{2}T"`, Settings: []string{"on_history_lost", "start_at"},
				Message: "on_history_lost: timestamp restarts at start_at, which must then be an RFC 3339 time such as 2024-05-01T00:00:00Z"},
		}, sdk.TLSRules...),
	},
}

// Config holds the source's settings; its tags declare them (sdk.SettingsOf). The shared TLS group
// (sdk.TLS) comes before replay_file; the driver dials with its configuration when any tls setting is
// given, and with the uri's TLS options otherwise.
type Config struct {
	URI               string         `setting:"uri,secret" doc:"Connection string (mongodb:// or mongodb+srv://) with credentials, replicaSet, readPreference and TLS options (tls=true, authMechanism=MONGODB-X509, …). Change streams need a replica set or a sharded cluster (connect to mongos). Required unless replay_file is set."`
	Database          string         `setting:"database" doc:"Database to watch. Omit (with collection and collections) to watch every database of the deployment but admin, local and config (needs the changeStream privilege on the cluster)."`
	Collection        string         `setting:"collection" doc:"Collection to watch, in database. Omit to watch every collection of database, or several with collections or namespaces."`
	Collections       []string       `setting:"collections" doc:"Collections of database to watch, e.g. [orders, customers], on one database-wide change stream (one stream, one position) that the server filters with a $match on ns.coll put in front of pipeline, so the changes of other collections never reach the source. Needs database; not with collection. Records carry their collection in the mongodb.coll metadata (route with the route transform). Combined with namespaces, a collection must also pass namespaces."`
	Namespaces        map[string]any `setting:"namespaces" doc:"Filter by namespace on a database-wide (with database) or deployment-wide (without) stream: {include: [regex, …], exclude: [regex, …]}, regular expressions in RE2 syntax (no lookaround or backreferences; MongoDB's PCRE reads them the same) matched against \"db.coll\", unanchored (write ^shop\\.orders$ for one collection). A change is delivered when its namespace matches one include expression (or include is absent) and no exclude expression. The server filters with $regexMatch (MongoDB 4.2+) in a $match put in front of pipeline. invalidate and dropDatabase events always pass. Not with collection."`
	Pipeline          []any          `setting:"pipeline" doc:"Aggregation stages the server runs on the change stream, as a list of stage objects in YAML or JSON, e.g. [{$match: {operationType: {$in: [insert, update]}}}], or of strings holding a stage in Extended JSON ('{\"$match\": {\"fullDocument.at\": {\"$gt\": {\"$date\": \"2024-01-01T00:00:00Z\"}}}}'), which keep their key order (objects from YAML or JSON settings do not, which matters only when a stage compares a whole embedded document). Extended JSON values ({$date: …}, {$oid: …}) work in both. Allowed stages: $match, $project, $addFields, $set, $unset, $replaceRoot, $redact. Keep _id (the resume token) unchanged: the source needs it for positions. Filtering server-side saves bandwidth; filtered-out events still advance the position through heartbeats. Not applied to snapshot records."`
	FullDocument      string         `setting:"full_document" default:"updateLookup" enum:"default,updateLookup,whenAvailable,required" doc:"fullDocument of update events. updateLookup (default): the server looks the document up when it reads the event, so it shows the document's current state, which may include later changes, or null if it was deleted since. default: update events carry only updateDescription. whenAvailable / required: the post-image as of the change (MongoDB 6.0+, collections with changeStreamPreAndPostImages enabled; required fails the stream when one is missing)."`
	FullDocumentPre   string         `setting:"full_document_before_change" default:"off" enum:"off,whenAvailable,required" doc:"Pre-images (fullDocumentBeforeChange) of update, replace and delete events: off (default), whenAvailable, or required (the stream fails when one is missing, for example after the pre-image expired). Needs MongoDB 6.0+ and changeStreamPreAndPostImages enabled on the collection."`
	BatchSize         int32          `setting:"batch_size" default:"0" min:"0" max:"2147483647" doc:"Events (or, during a snapshot, documents) per server reply; 0 uses the server's default. Records reach the host in batches of the pipeline's batch_max_records either way."`
	MaxAwait          time.Duration  `setting:"max_await" default:"1s" min:"0s" doc:"How long the server holds a getMore open waiting for new events before it answers with an empty batch. Lower means quicker heartbeats and shutdown, higher means fewer round trips on quiet streams."`
	ShowExpanded      bool           `setting:"show_expanded_events" default:"false" doc:"Also emit DDL events such as create, createIndexes, dropIndexes, modify and shardCollection (MongoDB 6.0+). They arrive as records with operation other."`
	StartAt           string         "setting:\"start_at\" default:\"latest\" doc:\"Where a pipeline with no stored position starts: latest (changes made from now on, default), an RFC 3339 time such as 2024-05-01T00:00:00Z (startAtOperationTime; must still be in the oplog), or a resume token as Extended JSON, {\\\"_data\\\": \\\"8265…\\\"} (startAfter). A stored position always wins; `sluice reset PIPELINE` forgets it.\""
	HeartbeatInterval time.Duration  `setting:"heartbeat_interval" default:"10s" min:"0s" doc:"When no event has been emitted for this long and the stream's post-batch resume token has moved (the server advances it on quiet streams and past events the pipeline filtered out), emit a position-only heartbeat record so the stored position stays recent and a restart does not fall off the oplog. 0 turns heartbeats off. Needs a server that reports post-batch resume tokens (MongoDB 4.0.7+)."`
	OnHistoryLost     string         `setting:"on_history_lost" default:"fail" enum:"fail,latest,timestamp" doc:"When the stored resume token is no longer in the oplog (ChangeStreamHistoryLost and kin), at open or while streaming: fail (default) stops the pipeline for good with an error that explains the recovery steps; latest restarts from now and logs an error (the changes in between are NOT delivered); timestamp restarts at start_at, which must then be an RFC 3339 time."`
	Oversize          string         `setting:"oversize" default:"split" enum:"split,skip,dlq,fail" doc:"Change events over MongoDB's 16 MB limit (a large document with its pre- or post-image). split (default): append $changeStreamSplitLargeEvent (MongoDB 7.0+ and 6.0.9+) and reassemble the fragments into one record; skip: reassemble, then emit only the event's position and log a warning with the document key; dlq: emit the reassembled event as a dead letter (needs the pipeline's dlq: sink; without one the pipeline does not start). On a server without $changeStreamSplitLargeEvent the source logs a warning and an oversize event stops the pipeline with an error naming this setting. fail: never add the stage."`
	Snapshot          string         `setting:"snapshot" default:"never" enum:"never,initial" doc:"initial: when the pipeline has no stored position, first capture the stream's current resume token (or, on servers without one, the cluster time), then copy each watched collection in turn — collection; or the collections of database (every database but admin, local and config without one) that collections and namespaces let through, views and system collections left out, ordered by database then name — each in _id order, as records with operation snapshot (payload {operationType: snapshot, ns, documentKey, fullDocument}), then stream the changes made since the capture, so none made during the copy is lost (a document changed during the copy may arrive both as a snapshot record and as a change). The copy is resumable: each record's position records the collection and the last _id copied. start_at is not used. never (default): stream only."`
	Encoding          string         `setting:"encoding" default:"relaxed" enum:"relaxed,canonical,bson" doc:"Payload encoding: relaxed (default) is MongoDB Extended JSON v2 relaxed mode (numbers as JSON numbers, {\"$oid\"}, {\"$date\": \"…\"}); canonical keeps every type ({\"$numberInt\"}, {\"$numberLong\"}, {\"$date\": {\"$numberLong\"}}); bson is the event's raw BSON."`
	sdk.TLS           `setting:",squash"`
	ReplayFile        string `setting:"replay_file" doc:"Instead of connecting, read change events from this file, one per line in MongoDB Extended JSON (canonical or relaxed, as watch() or mongosh print them), and end after the last one. The records are exactly those the live source would emit, positions being the events' _id tokens; database and collection only fill in a missing ns. For testing transforms on captured events."`
}

// Source is the change-stream source. The SDK calls Open, then Read from one goroutine (Ack is a no-op:
// positions are stored downstream), then Close. Cancelling Read's context makes it return ctx.Err().
type Source struct {
	sdk.UnimplementedSource
	cfg Config
	// selectTimeout is the uri's serverSelectionTimeoutMS, or the driver's default.
	selectTimeout time.Duration
	log           *slog.Logger
	dec           decoder
	max           int
	client        *mongo.Client
	stream        *mongo.ChangeStream
	replay        *replay
	snap          *snapshot // the initial snapshot while it is being copied
	filter        *nsFilter // collections and namespaces; nil: every collection of the scope
	metrics       *sdk.Metrics
	emitted       map[namespace]*sdk.Counter // records_total by namespace

	startAt      start // where a stream with no stored position begins (start_at)
	from         start // where the current stream was opened
	noSplit      bool  // the server refused $changeStreamSplitLargeEvent
	reopen       bool  // the stream was invalidated: open a new one after lastEmitted
	out          []record.Record
	lastEmitted  bson.Raw // the resume token of the last record emitted
	lastActivity time.Time
	// tokenAt is the latest time (Unix nanoseconds) among the resume tokens the source has seen: those
	// of the records it emitted and the stream's post-batch tokens; 0 while none had one. The host's
	// metrics read it from another goroutine (resume_token_age_seconds).
	tokenAt atomic.Int64
}

// start is where a change stream begins: after a token (startAfter), at a cluster time
// (startAtOperationTime), or, when both are empty, at the latest change.
type start struct {
	token bson.Raw
	at    *bson.Timestamp
}

func (st start) String() string {
	switch {
	case st.token != nil:
		return "after resume token " + st.token.String()
	case st.at != nil:
		return fmt.Sprintf("at cluster time %d.%d", st.at.T, st.at.I)
	}
	return "at the latest change"
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("mongodb: %s: %w", fmt.Sprintf(format, args...), sdk.ErrInvalidSettings)
}

// parseStartAt reads the start_at setting.
func parseStartAt(v string) (start, error) {
	if v == "" || v == "latest" {
		return start{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return start{at: &bson.Timestamp{T: uint32(t.Unix())}}, nil
	}
	var tok bson.Raw
	if err := bson.UnmarshalExtJSON([]byte(v), false, &tok); err != nil || tok.Lookup("_data").Type == 0 {
		return start{}, invalid(`start_at %q is not "latest", an RFC 3339 time (2024-05-01T00:00:00Z) or a resume token ({"_data": "…"})`, v)
	}
	return start{token: tok}, nil
}

// Open checks the settings, connects, and opens the change stream after req.After (or at start_at, or
// begins the initial snapshot), or opens the replay file. It fails with sdk.ErrInvalidSettings (or a
// FailedPrecondition status for lost history) when no retry can help.
func (s *Source) Open(ctx context.Context, req sdk.OpenRequest) error {
	cfg, filter, st, err := parseSettings(req.Settings)
	if err != nil {
		return err
	}
	if cfg.Oversize == "dlq" && !req.DeadLetter {
		return invalid("oversize: dlq sends events over 16 MB to the pipeline's dead-letter sink, and the pipeline has none (add dlq:, or choose split, skip or fail)")
	}
	s.cfg, s.startAt, s.log, s.max, s.filter = cfg, st, req.Logger, max(req.MaxBatchRecords, 1), filter
	s.metrics, s.emitted = req.Metrics, map[namespace]*sdk.Counter{}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.dec = decoder{encoding: cfg.Encoding, db: cfg.Database, coll: cfg.Collection, oversize: cfg.Oversize,
		deadLetter: req.DeadLetter, log: s.log.Warn,
		skippedTotal: req.Metrics.Counter("oversize_events_skipped_total",
			"Change events over 16 MB skipped with oversize: skip (only their position was emitted).")}
	req.Metrics.GaugeFunc("resume_token_age_seconds",
		"Now minus the cluster time of the latest resume token the source has seen, post-batch tokens of quiet streams included; absent until one was seen.",
		s.tokenAge)
	var after bson.Raw
	if len(req.After) > 0 && req.After[0] == posToken {
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
		s.replay, s.dec.filter = r, filter
		return nil
	}
	if err := s.connect(); err != nil {
		return err
	}
	if err := s.begin(ctx, req.After, after); err != nil {
		_ = s.client.Disconnect(context.Background())
		s.client = nil
		return classify(err)
	}
	s.lastActivity = time.Now()
	return nil
}

// parseSettings decodes and checks the settings, as Open and Verify read them: the configuration, the
// namespace filter (nil: none) and start_at. Every mistake is an sdk.ErrInvalidSettings error that names
// the setting at fault.
func parseSettings(settings sdk.Settings) (Config, *nsFilter, start, error) {
	var cfg Config
	if err := settings.Decode(&cfg); err != nil {
		return cfg, nil, start{}, err
	}
	if cfg.Collection != "" && cfg.Database == "" {
		return cfg, nil, start{}, invalid("collection %q needs a database", cfg.Collection)
	}
	filter, err := parseFilter(cfg)
	if err != nil {
		return cfg, nil, start{}, err
	}
	st, err := parseStartAt(cfg.StartAt)
	if err != nil {
		return cfg, nil, start{}, err
	}
	if cfg.OnHistoryLost == "timestamp" && st.at == nil {
		return cfg, nil, start{}, invalid("on_history_lost: timestamp restarts at start_at, which must then be an RFC 3339 time (it is %q)", cfg.StartAt)
	}
	if err := cfg.TLS.Check(); err != nil {
		return cfg, nil, start{}, fmt.Errorf("mongodb: %w", err)
	}
	return cfg, filter, st, nil
}

// connect checks the uri and the pipeline setting and creates the client (the driver connects lazily),
// with s.cfg and s.filter set.
func (s *Source) connect() error {
	if s.cfg.URI == "" {
		return invalid("uri is required (or replay_file)")
	}
	if _, err := s.pipeline(); err != nil {
		return err
	}
	copts, err := clientOptions(s.cfg)
	if err != nil {
		return err
	}
	s.selectTimeout = defaultSelectionTimeout
	if copts.ServerSelectionTimeout != nil {
		s.selectTimeout = *copts.ServerSelectionTimeout
	}
	client, err := mongo.Connect(copts)
	if err != nil {
		return fmt.Errorf("mongodb: connecting: %w", err)
	}
	s.client = client
	return nil
}

// clientOptions are the driver's options for cfg: the uri's, with the TLS settings' configuration in
// place of the uri's TLS options when any tls setting is given (the driver then verifies each server
// against its own host name unless tls_server_name is set).
func clientOptions(cfg Config) (*options.ClientOptions, error) {
	copts := options.Client().ApplyURI(cfg.URI)
	if cfg.TLS.On() {
		tc, err := cfg.TLS.Config()
		if err != nil {
			return nil, fmt.Errorf("mongodb: %w", err)
		}
		copts.SetTLSConfig(tc)
	}
	if err := copts.Validate(); err != nil {
		return nil, invalid("uri: %v", err)
	}
	return copts, nil
}

// pipeline converts the pipeline setting into aggregation stages, behind the namespace filter's $match
// when there is one, and appends $changeStreamSplitLargeEvent unless oversize is fail or the server
// refused it.
func (s *Source) pipeline() (mongo.Pipeline, error) {
	var p mongo.Pipeline
	if s.filter != nil {
		p = append(p, s.filter.stage())
	}
	for i, st := range s.cfg.Pipeline {
		// A string is a stage in Extended JSON, kept as written (key order matters when a stage matches
		// a whole embedded document); an object is converted through JSON.
		var b []byte
		if text, ok := st.(string); ok {
			b = []byte(text)
		} else if j, err := json.Marshal(st); err == nil {
			b = j
		} else {
			return nil, invalid("pipeline[%d]: %v", i, err)
		}
		var d bson.D
		if err := bson.UnmarshalExtJSON(b, false, &d); err != nil || len(d) != 1 || !strings.HasPrefix(d[0].Key, "$") {
			return nil, invalid("pipeline[%d] is not a stage object with one $stage key: %s", i, b)
		}
		p = append(p, d)
	}
	if s.cfg.Oversize != "fail" && !s.noSplit {
		p = append(p, bson.D{{Key: "$changeStreamSplitLargeEvent", Value: bson.D{}}})
	}
	return p, nil
}

// begin resumes from the position the host handed over: a resume token, a snapshot in progress or a
// finished snapshot's stream start; without one it begins a snapshot or starts the stream at start_at.
func (s *Source) begin(ctx context.Context, pos record.Position, tok bson.Raw) error {
	switch {
	case tok != nil:
		return s.watch(ctx, start{token: tok}, true)
	case len(pos) > 0 && (pos[0] == posSnapshot || pos[0] == posStreamStart):
		p, err := parseSnapshotPosition(pos)
		if err != nil {
			return invalid("%v", err)
		}
		if pos[0] == posStreamStart {
			return s.watch(ctx, p.from, true)
		}
		return s.beginSnapshot(ctx, p.from, &p)
	case len(pos) > 0:
		return invalid("position %x is not a MongoDB position from this plugin", []byte(pos))
	case s.cfg.Snapshot == "initial":
		from, err := s.capture(ctx)
		if err != nil {
			return err
		}
		return s.beginSnapshot(ctx, from, nil)
	}
	return s.watch(ctx, s.startAt, false)
}

// watch opens the change stream at from. stored says from is a position the pipeline stored (or one
// derived from it), whose loss from the oplog on_history_lost handles.
func (s *Source) watch(ctx context.Context, from start, stored bool) error {
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
	switch {
	case from.token != nil:
		o.SetStartAfter(from.token)
	case from.at != nil:
		o.SetStartAtOperationTime(from.at)
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
		if splitRefused(err) && !s.noSplit && s.cfg.Oversize != "fail" {
			s.noSplit = true
			s.log.Warn("the server does not support $changeStreamSplitLargeEvent (MongoDB 7.0+ and 6.0.9+ do): a change event over 16 MB will stop the pipeline", "oversize", s.cfg.Oversize, "err", err)
			return s.watch(ctx, from, stored)
		}
		if historyLost(err) && (stored || from.at != nil) {
			return s.historyLost(ctx, from, err)
		}
		return fmt.Errorf("mongodb: opening the change stream on %s %s: %w", s.scope(), from, unreachable(ctx, err, s.selectTimeout))
	}
	s.stream, s.from = cs, from
	s.log.Info("change stream open", "scope", s.scope(), "from", from.String())
	return nil
}

// splitRefused reports whether err is the server refusing the $changeStreamSplitLargeEvent stage.
func splitRefused(err error) bool {
	var se mongo.ServerError
	return errors.As(err, &se) && strings.Contains(err.Error(), "$changeStreamSplitLargeEvent") &&
		(se.HasErrorCode(40324) || strings.Contains(err.Error(), "Unrecognized pipeline stage"))
}

func (s *Source) scope() string {
	var scope string
	switch {
	case s.cfg.Collection != "":
		return s.cfg.Database + "." + s.cfg.Collection
	case s.cfg.Database != "":
		scope = "database " + s.cfg.Database
	default:
		scope = "the deployment"
	}
	if s.filter != nil {
		scope += " (" + s.filter.String() + ")"
	}
	return scope
}

// historyLost reports whether err says the resume point is no longer in the oplog.
func historyLost(err error) bool {
	var se mongo.ServerError
	if errors.As(err, &se) {
		// ChangeStreamHistoryLost, ChangeStreamFatalError, CappedPositionLost, OplogQueryMinTsMissing.
		return se.HasErrorCode(286) || se.HasErrorCode(280) || se.HasErrorCode(136) || se.HasErrorCode(326)
	}
	return false
}

// historyLost applies on_history_lost after the stream could not resume at from.
func (s *Source) historyLost(ctx context.Context, from start, cause error) error {
	if s.stream != nil {
		_ = s.stream.Close(ctx)
		s.stream = nil
	}
	switch s.cfg.OnHistoryLost {
	case "latest":
		s.log.Error("the stored position is no longer in the oplog; restarting from the latest change as on_history_lost: latest says. Changes made since the stored position are NOT delivered.",
			"scope", s.scope(), "lost_from", from.String(), "err", cause)
		s.lastEmitted = nil
		return s.watch(ctx, start{}, false)
	case "timestamp":
		s.log.Error("the stored position is no longer in the oplog; restarting at start_at as on_history_lost: timestamp says. Changes between the stored position and start_at are NOT delivered.",
			"scope", s.scope(), "lost_from", from.String(), "start_at", s.cfg.StartAt, "err", cause)
		s.lastEmitted = nil
		if from.at != nil && s.startAt.at != nil && *from.at == *s.startAt.at {
			return sdk.HistoryLost(fmt.Errorf("mongodb: start_at %s is no longer in the oplog of %s either (%v); set a later start_at or on_history_lost: latest", s.cfg.StartAt, s.scope(), cause))
		}
		return s.watch(ctx, s.startAt, false)
	}
	return sdk.HistoryLost(fmt.Errorf("mongodb: the change stream on %s cannot resume %s: that point is no longer in the oplog (%v). "+
		"The changes made between it and the oldest oplog entry can no longer be read from a change stream, so the pipeline stopped instead of skipping them. To recover: "+
		"(1) if those changes matter, re-copy the data: run `sluice reset PIPELINE` with snapshot: initial, or copy it another way; "+
		"(2) to continue from now, run `sluice reset PIPELINE` (or set on_history_lost: latest), or from a time still in the oplog with start_at: TIME and on_history_lost: timestamp; "+
		"(3) so it does not happen again, enlarge the oplog (replSetResizeOplog, or oplogMinRetentionHours), keep heartbeat_interval on, and alert on pipeline lag",
		s.scope(), from, cause))
}

// Read returns the next change events, up to the batch size, or a heartbeat when the stream has been
// quiet for heartbeat_interval and its resume token has moved. It waits (max_await per round trip) until
// it has one of the two, or ctx is cancelled. During an initial snapshot it returns the next copied
// documents instead.
func (s *Source) Read(ctx context.Context) ([]record.Record, error) {
	recs, err := s.read(ctx)
	var latest time.Time
	for i := range recs {
		if recs[i].Time.After(latest) {
			latest = recs[i].Time
		}
		if recs[i].Op != record.OpHeartbeat {
			s.count(recs[i].Meta)
		}
	}
	s.noteToken(latest)
	return recs, err
}

// count adds a record of the namespace meta names to records_total.
func (s *Source) count(meta record.Meta) {
	var n namespace
	n.db, _ = meta.Get("mongodb.db")
	n.coll, _ = meta.Get("mongodb.coll")
	c, ok := s.emitted[n]
	if !ok {
		label := n.db
		if n.coll != "" {
			label = n.String()
		}
		c = s.metrics.Counter("records_total", "Records emitted (changes and snapshot records, not heartbeats), by namespace: \"db.coll\", or the database alone for a dropped database.",
			sdk.Label{Name: "namespace", Value: label})
		s.emitted[n] = c
	}
	c.Inc()
}

// noteToken records t as the time of a resume token the source has seen, if it is the latest.
func (s *Source) noteToken(t time.Time) {
	if t.IsZero() {
		return
	}
	if ns := t.UnixNano(); ns > s.tokenAt.Load() {
		s.tokenAt.Store(ns) // only Read's goroutine stores
	}
}

// tokenAge is the resume_token_age_seconds gauge: now minus the latest token time seen.
func (s *Source) tokenAge() (float64, bool) {
	ns := s.tokenAt.Load()
	if ns == 0 {
		return 0, false
	}
	return max(0, time.Since(time.Unix(0, ns)).Seconds()), true
}

// read is Read without keeping the token time.
func (s *Source) read(ctx context.Context) ([]record.Record, error) {
	if s.replay != nil {
		return s.replay.read(&s.dec, s.max)
	}
	if s.snap != nil {
		return s.readSnapshot(ctx)
	}
	out := s.out[:0]
	for {
		if s.reopen {
			// The server ended the stream with an invalidate event (its collection or database was dropped
			// or renamed). startAfter that event opens a new stream that sees what comes next.
			s.reopen = false
			_ = s.stream.Close(ctx)
			s.stream = nil
			if err := s.watch(ctx, start{token: s.lastEmitted}, true); err != nil {
				return nil, classify(err)
			}
		}
		for len(out) < s.max && !s.reopen && s.stream.TryNext(ctx) {
			r, ok, err := s.dec.add(s.stream.Current)
			if err != nil {
				return nil, fmt.Errorf("mongodb: %w", err)
			}
			if !ok {
				continue
			}
			out = append(out, r)
			s.lastEmitted = bson.Raw(r.Position[1:])
			if op, _ := s.stream.Current.Lookup("operationType").StringValueOK(); op == "invalidate" {
				s.log.Warn("the change stream was invalidated (its collection or database was dropped or renamed); continuing after the invalidate event", "scope", s.scope())
				s.reopen = true
			}
		}
		s.noteToken(tokenTime(s.stream.ResumeToken())) // a quiet stream's post-batch token moves too
		if err := s.stream.Err(); err != nil && !s.reopen {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if historyLost(err) && s.lastEmitted != nil {
				// The driver resumed after a network error or failover and the server no longer has the token.
				if err := s.historyLost(ctx, start{token: s.lastEmitted}, err); err != nil {
					return nil, err
				}
				continue
			}
			if transient(err) {
				// The driver resumes once by itself; a longer outage (an election, a restarted server) is
				// retried here for a while before the pipeline restarts.
				if err := s.resume(ctx, err); err != nil {
					return nil, classify(err)
				}
				continue
			}
			var se mongo.ServerError
			if errors.As(err, &se) && se.HasErrorCode(10334) {
				return nil, sdk.Permanentf("mongodb: a change event is over MongoDB's 16 MB limit (BSONObjectTooLarge) and the server cannot split it; upgrade to MongoDB 7.0+ or 6.0.9+ and use oversize: split, skip or dlq, or drop large fields with a $project in pipeline: %w", err)
			}
			return nil, classify(fmt.Errorf("mongodb: change stream on %s: %w", s.scope(), err))
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

// retryFor bounds how long resume retries a change stream that fails with transient errors.
var retryFor = 30 * time.Second

// transient reports whether err is a network error, a timeout, a cleared connection pool or a server
// error labelled resumable: worth opening the stream again.
func transient(err error) bool {
	var retryable interface{ Retryable() bool }
	var le mongo.LabeledError
	return mongo.IsNetworkError(err) || mongo.IsTimeout(err) ||
		errors.As(err, &retryable) && retryable.Retryable() ||
		errors.As(err, &le) && (le.HasErrorLabel("ResumableChangeStreamError") || le.HasErrorLabel("RetryableError")) ||
		errors.As(err, &topology.ServerSelectionError{})
}

// resume opens the stream again after a transient error: after the driver's resume token (the last
// event or post-batch token it saw), or, while a split event is half read, after the last record
// emitted. It retries transient errors with backoff for retryFor.
func (s *Source) resume(ctx context.Context, cause error) error {
	from := s.from
	if tok := s.stream.ResumeToken(); tok != nil && len(s.dec.fragments) == 0 {
		from = start{token: append(bson.Raw(nil), tok...)}
	} else if s.lastEmitted != nil {
		from = start{token: s.lastEmitted}
	}
	s.dec.fragments = s.dec.fragments[:0]
	_ = s.stream.Close(ctx)
	s.stream = nil
	deadline, wait := time.Now().Add(retryFor), 100*time.Millisecond
	for {
		s.log.Warn("change stream interrupted; resuming", "scope", s.scope(), "from", from.String(), "err", cause)
		err := s.watch(ctx, from, true)
		if err == nil || !transient(err) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mongodb: change stream on %s: still failing after %s of retries: %w", s.scope(), retryFor, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait, cause = min(2*wait, 5*time.Second), err
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
	return record.Record{Position: tokenPosition(tok), Op: record.OpHeartbeat, Time: tokenTime(tok)}, true
}

// Close closes the stream (or the snapshot's cursor) and the connection. It may be called after a
// failed Open.
func (s *Source) Close(ctx context.Context) error {
	if s.replay != nil {
		return s.replay.close()
	}
	if s.stream != nil {
		_ = s.stream.Close(ctx)
	}
	if s.snap != nil && s.snap.cur != nil {
		_ = s.snap.cur.Close(ctx)
	}
	if s.client != nil {
		return s.client.Disconnect(ctx)
	}
	return nil
}
