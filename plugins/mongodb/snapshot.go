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

// Positions of the initial snapshot. A snapshot first fixes the time its change stream will start at,
// then copies the collection in _id order; each copied document's position records that time and the
// last _id copied, so a restart continues the copy. When the copy is done the source emits a position
// that says "stream from that time", then streams. Changes made during the copy are in the stream.
const (
	posSnapshot    = 2 // BSON {t: Timestamp, last: _id}
	posStreamStart = 3 // BSON {t: Timestamp}
)

type snapshot struct {
	start bson.Timestamp
	last  bson.RawValue // the last _id copied; zero before the first
	done  bool
	coll  *mongo.Collection
}

func (s *snapshot) position(kind byte) (record.Position, error) {
	d := bson.D{{Key: "t", Value: s.start}}
	if kind == posSnapshot && s.last.Type != 0 {
		d = append(d, bson.E{Key: "last", Value: s.last})
	}
	b, err := bson.Marshal(d)
	return append(record.Position{kind}, b...), err
}

// parseStart reads a snapshot or stream-start position.
func parseStart(pos record.Position) (bson.Timestamp, bson.RawValue, error) {
	doc := bson.Raw(pos[1:])
	if err := doc.Validate(); err != nil {
		return bson.Timestamp{}, bson.RawValue{}, fmt.Errorf("position %x is malformed: %w", []byte(pos), err)
	}
	t, i, ok := doc.Lookup("t").TimestampOK()
	if !ok {
		return bson.Timestamp{}, bson.RawValue{}, fmt.Errorf("position %x has no start time", []byte(pos))
	}
	return bson.Timestamp{T: t, I: i}, doc.Lookup("last"), nil
}

// serverTime is the time a snapshot's stream starts at: the server's operationTime when it reports one
// (replica sets do), else its clock a second back, else ours five seconds back.
func (s *Source) serverTime(ctx context.Context) bson.Timestamp {
	raw, err := s.client.Database("admin").RunCommand(ctx, bson.D{{Key: "isMaster", Value: 1}}).Raw()
	if err == nil {
		if t, i, ok := raw.Lookup("operationTime").TimestampOK(); ok {
			return bson.Timestamp{T: t, I: i}
		}
		if ms, ok := raw.Lookup("localTime").DateTimeOK(); ok {
			return bson.Timestamp{T: uint32(ms/1000) - 1}
		}
	}
	return bson.Timestamp{T: uint32(time.Now().Unix()) - 5}
}

// readSnapshot copies the next batch of documents as snapshot records; once the copy is done it returns
// the stream-start position as a heartbeat and opens the change stream.
func (s *Source) readSnapshot(ctx context.Context) ([]record.Record, error) {
	sn := s.snap
	if sn.done {
		pos, err := sn.position(posStreamStart)
		if err != nil {
			return nil, err
		}
		s.snap = nil
		if err := s.watchFrom(ctx, nil, &sn.start); err != nil {
			return nil, err
		}
		s.log.Info("snapshot copied; streaming changes made since it began", "collection", s.scope())
		return []record.Record{{Position: pos, Op: record.OpHeartbeat}}, nil
	}
	filter := bson.D{}
	if sn.last.Type != 0 {
		filter = bson.D{{Key: "_id", Value: bson.D{{Key: "$gt", Value: sn.last}}}}
	}
	cur, err := sn.coll.Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}).SetLimit(int64(s.max)))
	if err != nil {
		return nil, fmt.Errorf("mongodb: snapshot of %s: %w", s.scope(), err)
	}
	defer cur.Close(ctx)
	out := s.out[:0]
	for cur.Next(ctx) {
		id := cur.Current.Lookup("_id")
		ev, err := bson.Marshal(bson.D{
			{Key: "operationType", Value: "snapshot"},
			{Key: "ns", Value: bson.D{{Key: "db", Value: s.cfg.Database}, {Key: "coll", Value: s.cfg.Collection}}},
			{Key: "documentKey", Value: bson.D{{Key: "_id", Value: id}}},
			{Key: "fullDocument", Value: cur.Current},
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
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("mongodb: snapshot of %s: %w", s.scope(), err)
	}
	if len(out) < s.max {
		sn.done = true
	}
	if len(out) == 0 {
		return s.readSnapshot(ctx)
	}
	s.out = out
	return out, nil
}
