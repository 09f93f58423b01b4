package mongodb

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/sluicehq/sluice/sdk/record"
)

// Positions of the initial snapshot. A snapshot first captures where its change stream will start (the
// stream's resume token, or a cluster time on servers that report no token), then copies the collection
// in _id order; each copied document's position holds that start and the last _id copied, so a restart
// continues the copy. When the copy is done the source emits a position that says "stream from that
// start", then streams. Changes made during the copy are in the stream.
const (
	posSnapshot    = 2 // BSON {tok: resume token | t: Timestamp, last: _id}
	posStreamStart = 3 // BSON {tok: resume token | t: Timestamp}
)

type snapshot struct {
	from   start         // where the stream starts when the copy is done
	last   bson.RawValue // the last _id copied; zero before the first
	done   bool
	coll   *mongo.Collection
	cur    *mongo.Cursor
	copied int
}

func (s *snapshot) position(kind byte) (record.Position, error) {
	var d bson.D
	if s.from.token != nil {
		d = append(d, bson.E{Key: "tok", Value: s.from.token})
	} else {
		d = append(d, bson.E{Key: "t", Value: *s.from.at})
	}
	if kind == posSnapshot && s.last.Type != 0 {
		d = append(d, bson.E{Key: "last", Value: s.last})
	}
	b, err := bson.Marshal(d)
	return append(record.Position{kind}, b...), err
}

// parseSnapshotPosition reads a snapshot or stream-start position.
func parseSnapshotPosition(pos record.Position) (start, bson.RawValue, error) {
	doc := bson.Raw(pos[1:])
	if err := doc.Validate(); err != nil {
		return start{}, bson.RawValue{}, fmt.Errorf("position %x is malformed: %w", []byte(pos), err)
	}
	var from start
	if tok, ok := doc.Lookup("tok").DocumentOK(); ok {
		from.token = tok
	} else if t, i, ok := doc.Lookup("t").TimestampOK(); ok {
		from.at = &bson.Timestamp{T: t, I: i}
	} else {
		return start{}, bson.RawValue{}, fmt.Errorf("position %x has no stream start", []byte(pos))
	}
	return from, doc.Lookup("last"), nil
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

// readSnapshot copies the next documents as snapshot records; once the copy is done it returns the
// stream-start position as a heartbeat and opens the change stream.
func (s *Source) readSnapshot(ctx context.Context) ([]record.Record, error) {
	sn := s.snap
	if sn.done {
		pos, err := sn.position(posStreamStart)
		if err != nil {
			return nil, err
		}
		if err := s.watch(ctx, sn.from, true); err != nil {
			return nil, err
		}
		s.snap = nil
		s.log.Info("initial snapshot copied; streaming the changes made since it began", "collection", s.scope(), "documents", sn.copied)
		hb := record.Record{Position: pos, Op: record.OpHeartbeat, Time: tokenTime(sn.from.token)}
		if sn.from.at != nil {
			hb.Time = time.Unix(int64(sn.from.at.T), 0).UTC()
		}
		return []record.Record{hb}, nil
	}
	if sn.cur == nil {
		filter := bson.D{}
		if sn.last.Type != 0 {
			filter = afterID(sn.last)
		}
		o := options.Find().SetSort(bson.D{{Key: "_id", Value: 1}})
		if s.cfg.BatchSize > 0 {
			o.SetBatchSize(s.cfg.BatchSize)
		}
		cur, err := sn.coll.Find(ctx, filter, o)
		if err != nil {
			return nil, fmt.Errorf("mongodb: snapshot of %s: %w", s.scope(), unreachable(ctx, err, s.selectTimeout))
		}
		sn.cur = cur
	}
	out := s.out[:0]
	for len(out) < s.max && sn.cur.Next(ctx) {
		doc := sn.cur.Current
		id := doc.Lookup("_id")
		ev, err := bson.Marshal(bson.D{
			{Key: "operationType", Value: "snapshot"},
			{Key: "ns", Value: bson.D{{Key: "db", Value: s.cfg.Database}, {Key: "coll", Value: s.cfg.Collection}}},
			{Key: "documentKey", Value: bson.D{{Key: "_id", Value: id}}},
			{Key: "fullDocument", Value: doc},
		})
		if err != nil {
			return nil, err
		}
		r, err := s.dec.record(ev, record.Position{posSnapshot})
		if err != nil {
			return nil, err
		}
		sn.last = bson.RawValue{Type: id.Type, Value: append([]byte(nil), id.Value...)}
		if r.Position, err = sn.position(posSnapshot); err != nil {
			return nil, err
		}
		r.Op = record.OpSnapshot
		out = append(out, r)
	}
	if len(out) < s.max {
		if err := sn.cur.Err(); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("mongodb: snapshot of %s after %d documents: %w", s.scope(), sn.copied, err)
		}
		_ = sn.cur.Close(ctx)
		sn.cur, sn.done = nil, true
	}
	sn.copied += len(out)
	if len(out) == 0 {
		return s.readSnapshot(ctx)
	}
	s.out = out
	return out, nil
}
