package mongodb

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// Positions of the initial snapshot. A snapshot first captures where its change stream will start (the
// stream's resume token, or a cluster time on servers that report no token), then copies each watched
// collection in turn (in compareNS order), each in _id order; each copied document's position holds that
// start, the collection and the last _id copied, so a restart continues the copy there. When the copy is
// done the source emits a position that says "stream from that start", then streams. Changes made during
// the copy are in the stream.
const (
	posSnapshot    = 2 // BSON {tok: resume token | t: Timestamp, db, coll, last: _id}; db and coll are absent in positions of version 0.2 of this plugin (the one configured collection)
	posStreamStart = 3 // BSON {tok: resume token | t: Timestamp}
)

type snapshot struct {
	from   start         // where the stream starts when the copy is done
	ns     namespace     // the collection being copied
	queue  []namespace   // the collections to copy after ns
	last   bson.RawValue // the last _id copied from ns; zero before the first
	done   bool
	cur    *mongo.Cursor
	copied int // documents copied by this run
}

func (s *snapshot) position(kind byte) (record.Position, error) {
	var d bson.D
	if s.from.token != nil {
		d = append(d, bson.E{Key: "tok", Value: s.from.token})
	} else {
		d = append(d, bson.E{Key: "t", Value: *s.from.at})
	}
	if kind == posSnapshot {
		d = append(d, bson.E{Key: "db", Value: s.ns.db}, bson.E{Key: "coll", Value: s.ns.coll})
		if s.last.Type != 0 {
			d = append(d, bson.E{Key: "last", Value: s.last})
		}
	}
	b, err := bson.Marshal(d)
	return append(record.Position{kind}, b...), err
}

// snapshotPosition is what a snapshot or stream-start position holds.
type snapshotPosition struct {
	from start
	ns   namespace     // zero in a stream-start position, and in snapshot positions without db and coll
	last bson.RawValue // zero before the first document of ns
}

// parseSnapshotPosition reads a snapshot or stream-start position.
func parseSnapshotPosition(pos record.Position) (snapshotPosition, error) {
	var p snapshotPosition
	doc := bson.Raw(pos[1:])
	if err := doc.Validate(); err != nil {
		return p, fmt.Errorf("position %x is malformed: %w", []byte(pos), err)
	}
	if tok, ok := doc.Lookup("tok").DocumentOK(); ok {
		p.from.token = tok
	} else if t, i, ok := doc.Lookup("t").TimestampOK(); ok {
		p.from.at = &bson.Timestamp{T: t, I: i}
	} else {
		return p, fmt.Errorf("position %x has no stream start", []byte(pos))
	}
	p.ns.db, _ = doc.Lookup("db").StringValueOK()
	p.ns.coll, _ = doc.Lookup("coll").StringValueOK()
	if (p.ns.db == "") != (p.ns.coll == "") {
		return p, fmt.Errorf("position %x names a database without a collection or the reverse", []byte(pos))
	}
	p.last = doc.Lookup("last")
	return p, nil
}

// beginSnapshot starts copying from the first collection to copy, or, when p names one (a stored
// position in the middle of the copy), continues after p.last in p.ns and goes on with the collections
// that sort after it.
func (s *Source) beginSnapshot(ctx context.Context, from start, p *snapshotPosition) error {
	all, err := s.collections(ctx)
	if err != nil {
		return err
	}
	sn := &snapshot{from: from}
	if p == nil {
		if len(all) == 0 {
			sn.done = true
		} else {
			sn.ns, sn.queue = all[0], all[1:]
		}
		s.log.Info("starting the initial snapshot", "scope", s.scope(), "collections", len(all), "stream_from", from.String())
	} else {
		n := p.ns
		if n == (namespace{}) {
			// A position of version 0.2 of this plugin, which copied the one configured collection.
			if s.cfg.Collection == "" {
				return fmt.Errorf("mongodb: the stored position is in the middle of the initial snapshot of one collection (written when the source watched one collection), and the source now watches %s: set collection back until the snapshot is done, or run `sluice reset PIPELINE` to start again: %w", s.scope(), sdk.ErrInvalidSettings)
			}
			n = namespace{s.cfg.Database, s.cfg.Collection}
		}
		if s.cfg.Collection != "" && n != (namespace{s.cfg.Database, s.cfg.Collection}) || s.filter != nil && !s.filter.match(n) ||
			s.cfg.Collection == "" && s.cfg.Database != "" && n.db != s.cfg.Database {
			return errPositionScope(n)
		}
		i, _ := slices.BinarySearchFunc(all, n, compareNS)
		if i < len(all) && all[i] == n {
			i++
		}
		sn.ns, sn.last, sn.queue = n, p.last, all[i:]
		s.log.Info("continuing the initial snapshot", "scope", s.scope(), "collection", n.String(), "collections_left", len(sn.queue), "stream_from", from.String())
	}
	s.snap = sn
	return nil
}

// capture fixes where the snapshot's stream will start: the resume token of a change stream opened now
// (its post-batch resume token), else the server's operation time, else its clock's current second
// (ops earlier in that second are streamed again: duplicates, never a gap), else ours 5 s back.
func (s *Source) capture(ctx context.Context) (start, error) {
	if err := s.watch(ctx, start{}, false); err != nil {
		return start{}, err
	}
	tok := s.stream.ResumeToken()
	_ = s.stream.Close(ctx)
	s.stream = nil
	if tok != nil {
		return start{token: append(bson.Raw(nil), tok...)}, nil
	}
	raw, err := s.client.Database("admin").RunCommand(ctx, bson.D{{Key: "isMaster", Value: 1}}).Raw()
	if err == nil {
		if t, i, ok := raw.Lookup("operationTime").TimestampOK(); ok {
			return start{at: &bson.Timestamp{T: t, I: i}}, nil
		}
		if ms, ok := raw.Lookup("localTime").DateTimeOK(); ok {
			return start{at: &bson.Timestamp{T: uint32(ms / 1000)}}, nil
		}
	}
	return start{at: &bson.Timestamp{T: uint32(time.Now().Unix()) - 5}}, nil
}

// idBrackets lists BSON types in MongoDB's comparison order, as $type aliases, bracketed: values of
// types in one bracket compare with each other; a query like {_id: {$gt: v}} only matches v's bracket.
// (Symbol, deprecated, sorts with strings; it is left out of the aliases because some servers reject it.)
var idBrackets = [][]string{
	{"minKey"}, {"null"}, {"int", "long", "double", "decimal"}, {"string"}, {"object"},
	{"binData"}, {"objectId"}, {"bool"}, {"date"}, {"timestamp"}, {"regex"}, {"maxKey"},
}

func bracketOf(t bson.Type) int {
	switch t {
	case bson.TypeMinKey:
		return 0
	case bson.TypeNull, bson.TypeUndefined:
		return 1
	case bson.TypeInt32, bson.TypeInt64, bson.TypeDouble, bson.TypeDecimal128:
		return 2
	case bson.TypeSymbol, bson.TypeString:
		return 3
	case bson.TypeEmbeddedDocument:
		return 4
	case bson.TypeBinary:
		return 5
	case bson.TypeObjectID:
		return 6
	case bson.TypeBoolean:
		return 7
	case bson.TypeDateTime:
		return 8
	case bson.TypeTimestamp:
		return 9
	case bson.TypeRegex:
		return 10
	case bson.TypeMaxKey:
		return 11
	}
	return -1
}

// afterID is the filter for the documents whose _id sorts after last, across type brackets.
func afterID(last bson.RawValue) bson.D {
	gt := bson.D{{Key: "_id", Value: bson.D{{Key: "$gt", Value: last}}}}
	b := bracketOf(last.Type)
	if b < 0 || b == len(idBrackets)-1 {
		return gt
	}
	var later bson.A
	for _, br := range idBrackets[b+1:] {
		for _, t := range br {
			later = append(later, t)
		}
	}
	return bson.D{{Key: "$or", Value: bson.A{gt, bson.D{{Key: "_id", Value: bson.D{{Key: "$type", Value: later}}}}}}}
}

// copyRecord returns the snapshot record of doc, a document of sn.ns, and notes its _id as the last
// copied: operation snapshot, payload {operationType: "snapshot", ns, documentKey, fullDocument} decoded
// as change events are (key, metadata, encoding), position sn's. The initial snapshot and Verify emit
// documents through it.
func (s *Source) copyRecord(sn *snapshot, doc bson.Raw) (record.Record, error) {
	id := doc.Lookup("_id")
	ev, err := bson.Marshal(bson.D{
		{Key: "operationType", Value: "snapshot"},
		{Key: "ns", Value: bson.D{{Key: "db", Value: sn.ns.db}, {Key: "coll", Value: sn.ns.coll}}},
		{Key: "documentKey", Value: bson.D{{Key: "_id", Value: id}}},
		{Key: "fullDocument", Value: doc},
	})
	if err != nil {
		return record.Record{}, err
	}
	r, err := s.dec.record(ev, record.Position{posSnapshot})
	if err != nil {
		return r, err
	}
	sn.last = bson.RawValue{Type: id.Type, Value: append([]byte(nil), id.Value...)}
	if r.Position, err = sn.position(posSnapshot); err != nil {
		return r, err
	}
	r.Op = record.OpSnapshot
	return r, nil
}

// readSnapshot copies the next documents as snapshot records, going from one collection to the next;
// once the copy is done it returns the stream-start position as a heartbeat and opens the change stream.
func (s *Source) readSnapshot(ctx context.Context) ([]record.Record, error) {
	sn := s.snap
	out := s.out[:0]
	for len(out) == 0 && !sn.done {
		if sn.cur == nil {
			filter := bson.D{}
			if sn.last.Type != 0 {
				filter = afterID(sn.last)
			}
			o := options.Find().SetSort(bson.D{{Key: "_id", Value: 1}})
			if s.cfg.BatchSize > 0 {
				o.SetBatchSize(s.cfg.BatchSize)
			}
			cur, err := s.client.Database(sn.ns.db).Collection(sn.ns.coll).Find(ctx, filter, o)
			if err != nil {
				return nil, fmt.Errorf("mongodb: snapshot of %s: %w", sn.ns, unreachable(ctx, err, s.selectTimeout))
			}
			sn.cur = cur
		}
		for len(out) < s.max && sn.cur.Next(ctx) {
			r, err := s.copyRecord(sn, sn.cur.Current)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		sn.copied += len(out)
		if len(out) == s.max {
			break
		}
		if err := sn.cur.Err(); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("mongodb: snapshot of %s after %d documents: %w", sn.ns, sn.copied, err)
		}
		_ = sn.cur.Close(ctx)
		sn.cur = nil
		if len(sn.queue) == 0 {
			sn.done = true
			break
		}
		// The next collection. Its first record's position names it; until then the stored position
		// still names the collection just finished, whose copy a restart finds complete.
		sn.ns, sn.queue, sn.last = sn.queue[0], sn.queue[1:], bson.RawValue{}
	}
	if len(out) > 0 {
		s.out = out
		return out, nil
	}
	pos, err := sn.position(posStreamStart)
	if err != nil {
		return nil, err
	}
	if err := s.watch(ctx, sn.from, true); err != nil {
		return nil, err
	}
	s.snap = nil
	s.log.Info("initial snapshot copied; streaming the changes made since it began", "scope", s.scope(), "documents", sn.copied)
	hb := record.Record{Position: pos, Op: record.OpHeartbeat, Time: tokenTime(sn.from.token)}
	if sn.from.at != nil {
		hb.Time = time.Unix(int64(sn.from.at.T), 0).UTC()
	}
	return []record.Record{hb}, nil
}
