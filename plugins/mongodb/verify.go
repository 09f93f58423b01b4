package mongodb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// verifyBatch is how many records Verify hands to emit at a time, and how many _ids one query of a
// Verify restricted to some keys asks for.
const verifyBatch = 1000

// snapshotReadsWire is the wire version of MongoDB 5.0, the first that reads with readConcern snapshot
// outside transactions (the driver refuses snapshot sessions below it).
const snapshotReadsWire = 13

// Server error codes of a snapshot read whose point in time the server no longer holds.
var snapshotLostCodes = []int{
	239, // SnapshotTooOld
	246, // SnapshotUnavailable
}

// Verify emits, for `sluice verify`, what an initial snapshot started now would: every document of every
// watched collection (collection; or those of database, or of the deployment, that collections and
// namespaces let through), each as the snapshot record the initial snapshot makes of it (copyRecord), in
// batches. With req.Keys, only the documents whose record key is one of them, in whichever watched
// collection they are. It writes nothing and opens no stream it keeps.
//
// The result's Position is where a change stream opened now starts (capture: the post-batch resume token
// of a stream opened with the configured scope, or a cluster time on servers without one), and Time that
// position's cluster time. On MongoDB 5.0+ every collection is read in one snapshot session at that
// cluster time, so the documents are exactly the state at Position; older servers (and mongo-java-server)
// are read with readConcern majority, collection by collection after the position was captured, so a
// document changed during the read shows the change.
func (*Source) Verify(ctx context.Context, req sdk.VerifyRequest, emit func([]record.Record) error) (sdk.VerifyResult, error) {
	cfg, filter, _, err := parseSettings(req.Settings)
	if err != nil {
		return sdk.VerifyResult{}, err
	}
	if cfg.ReplayFile != "" {
		return sdk.VerifyResult{}, invalid("replay_file %q: a source that replays captured events has no database to verify: verify needs uri instead", cfg.ReplayFile)
	}
	// The stream capture opens reads no event: it needs no $changeStreamSplitLargeEvent (nor the warning
	// of a server that refuses it).
	cfg.Oversize = "fail"
	log := req.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{cfg: cfg, filter: filter, log: log,
		dec: decoder{encoding: cfg.Encoding, db: cfg.Database, coll: cfg.Collection, oversize: cfg.Oversize, log: log.Warn}}
	if err := s.connect(); err != nil {
		return sdk.VerifyResult{}, err
	}
	defer func() { _ = s.client.Disconnect(context.WithoutCancel(ctx)) }()
	res, err := s.verify(ctx, req.Keys, emit)
	if err != nil && ctx.Err() == nil {
		err = classify(err)
	}
	return res, err
}

// verifier is one Verify's read: where it is and what it has not emitted yet.
type verifier struct {
	s       *Source
	from    start // the captured position: the records' positions hold it, as the initial snapshot's do
	emit    func([]record.Record) error
	ids     bson.A          // the _ids req.Keys name; nil: every document
	keys    map[string]bool // req.Keys; nil: every key
	out     []record.Record // records not emitted yet
	emitted int             // records handed to emit
}

func (s *Source) verify(ctx context.Context, keys [][]byte, emit func([]record.Record) error) (sdk.VerifyResult, error) {
	var res sdk.VerifyResult
	from, err := s.capture(ctx)
	if err != nil {
		return res, err
	}
	at, hasAt := tokenTimestamp(from.token)
	if from.token != nil {
		res.Position = tokenPosition(from.token)
	} else {
		at, hasAt = *from.at, true
		if res.Position, err = (&snapshot{from: from}).position(posStreamStart); err != nil {
			return res, err
		}
	}
	if hasAt {
		res.Time = time.Unix(int64(at.T), 0).UTC()
	}
	v := &verifier{s: s, from: from, emit: emit}
	if len(keys) > 0 {
		v.ids, v.keys = keyIDs(keys, s.log)
		if len(v.ids) == 0 {
			return res, nil
		}
	}
	colls, err := s.collections(ctx)
	if err != nil {
		return res, err
	}
	snap, wire, err := s.snapshotReads(ctx)
	if err != nil {
		return res, err
	}
	if !snap {
		s.log.Warn("mongodb: the server has no snapshot reads (MongoDB 5.0+): reading each collection with readConcern majority; a document changed during the read shows the change, which the position does not cover",
			"scope", s.scope(), "max_wire_version", wire, "position", from.String())
		return res, v.read(ctx, colls, nil)
	}
	sopts := options.Session().SetSnapshot(true)
	if hasAt {
		sopts.SetSnapshotTime(at)
	}
	sess, err := s.client.StartSession(sopts)
	if err != nil {
		return res, fmt.Errorf("mongodb: starting a snapshot session: %w", err)
	}
	defer sess.EndSession(context.WithoutCancel(ctx))
	s.log.Info("mongodb: reading the watched collections with readConcern snapshot", "scope", s.scope(), "collections", len(colls), "position", from.String())
	err = v.read(ctx, colls, sess)
	var se mongo.ServerError
	if err != nil && v.emitted == 0 && ctx.Err() == nil && errors.As(err, &se) && !sdk.IsPermanent(classify(err)) && !snapshotLost(err) {
		// A server that reports 5.0+ and still refuses the read concern (a standalone, a storage engine
		// without it): the same read without it.
		s.log.Warn("mongodb: the server refused a snapshot read; reading each collection with readConcern majority instead, so a document changed during the read shows the change",
			"scope", s.scope(), "err", err)
		v.out = v.out[:0]
		return res, v.read(ctx, colls, nil)
	}
	return res, err
}

// snapshotReads asks the server whether it reads with readConcern snapshot outside transactions
// (MongoDB 5.0+, wire version 13), and returns its wire version.
func (s *Source) snapshotReads(ctx context.Context) (bool, int32, error) {
	raw, err := s.client.Database("admin").RunCommand(ctx, bson.D{{Key: "isMaster", Value: 1}}).Raw()
	if err != nil {
		return false, 0, fmt.Errorf("mongodb: asking the server its version: %w", unreachable(ctx, err, s.selectTimeout))
	}
	wire64, _ := raw.Lookup("maxWireVersion").AsInt64OK()
	wire := int32(wire64)
	return wire >= snapshotReadsWire, wire, nil
}

// snapshotLost reports whether err is the server no longer holding a snapshot read's point in time.
func snapshotLost(err error) bool {
	var se mongo.ServerError
	if !errors.As(err, &se) {
		return false
	}
	for _, code := range snapshotLostCodes {
		if se.HasErrorCode(code) {
			return true
		}
	}
	return false
}

// read emits the documents of colls (those with v.ids when set), in the snapshot session sess, or, when
// sess is nil, with readConcern majority; then what is left of v.out.
func (v *verifier) read(ctx context.Context, colls []namespace, sess *mongo.Session) error {
	s := v.s
	rctx := ctx
	copts := options.Collection()
	if sess != nil {
		rctx = mongo.NewSessionContext(ctx, sess)
	} else {
		copts.SetReadConcern(readconcern.Majority())
	}
	for _, n := range colls {
		coll := s.client.Database(n.db).Collection(n.coll, copts)
		sn := &snapshot{from: v.from, ns: n}
		if v.ids == nil {
			if err := v.find(rctx, coll, sn, bson.D{}); err != nil {
				return err
			}
			continue
		}
		for i := 0; i < len(v.ids); i += verifyBatch {
			filter := bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: v.ids[i:min(i+verifyBatch, len(v.ids))]}}}}
			if err := v.find(rctx, coll, sn, filter); err != nil {
				return err
			}
		}
	}
	return v.flush()
}

// find reads the documents of sn.ns that match filter, in _id order, into v.out, emitting full batches.
func (v *verifier) find(ctx context.Context, coll *mongo.Collection, sn *snapshot, filter bson.D) error {
	s := v.s
	o := options.Find().SetSort(bson.D{{Key: "_id", Value: 1}})
	if s.cfg.BatchSize > 0 {
		o.SetBatchSize(s.cfg.BatchSize)
	}
	cur, err := coll.Find(ctx, filter, o)
	if err != nil {
		return v.readError(ctx, sn, err)
	}
	defer func() { _ = cur.Close(context.WithoutCancel(ctx)) }()
	for cur.Next(ctx) {
		r, err := s.copyRecord(sn, cur.Current)
		if err != nil {
			return fmt.Errorf("mongodb: verify: a document of %s: %w", sn.ns, err)
		}
		if v.keys != nil && !v.keys[string(r.Key)] {
			continue // $in matched an _id of another type that compares equal (7 and 7.0): not the key asked for
		}
		v.out = append(v.out, r)
		if len(v.out) == verifyBatch {
			if err := v.flush(); err != nil {
				return err
			}
		}
	}
	if err := cur.Err(); err != nil {
		return v.readError(ctx, sn, err)
	}
	return nil
}

// readError says which collection a read failed in, and what to do when the server no longer holds the
// snapshot's point in time.
func (v *verifier) readError(ctx context.Context, sn *snapshot, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if snapshotLost(err) {
		return sdk.Permanentf("mongodb: verify: reading %s after %d documents: the server no longer holds the snapshot the read started at: the read took longer than the server keeps history for (minSnapshotHistoryWindowInSeconds, 300 s by default): raise it for the duration of the verify, or verify fewer collections at a time: %w",
			sn.ns, v.emitted+len(v.out), err)
	}
	return fmt.Errorf("mongodb: verify: reading %s: %w", sn.ns, unreachable(ctx, err, v.s.selectTimeout))
}

// flush hands v.out to emit.
func (v *verifier) flush() error {
	if len(v.out) == 0 {
		return nil
	}
	if err := v.emit(v.out); err != nil {
		return err
	}
	v.emitted += len(v.out)
	clear(v.out)
	v.out = v.out[:0]
	return nil
}

// keyIDs parses record keys (an _id as canonical Extended JSON, as key writes them) back into _id values
// for a query, and returns them with the set of the keys. A key that is not an Extended JSON value names
// no document of this source: it is left out, and logged.
func keyIDs(keys [][]byte, log *slog.Logger) (bson.A, map[string]bool) {
	ids := make(bson.A, 0, len(keys))
	set := make(map[string]bool, len(keys))
	for _, k := range keys {
		if set[string(k)] {
			continue
		}
		doc := append(append([]byte(`{"v":`), k...), '}')
		var raw bson.Raw
		if err := bson.UnmarshalExtJSON(doc, false, &raw); err != nil {
			log.Debug("mongodb: verify: a key that is not an _id as Extended JSON names no document", "key", string(k), "err", err)
			continue
		}
		if elems, err := raw.Elements(); err != nil || len(elems) != 1 {
			log.Debug("mongodb: verify: a key that is not one Extended JSON value names no document", "key", string(k))
			continue
		}
		set[string(k)] = true
		ids = append(ids, raw.Lookup("v"))
	}
	return ids, set
}
