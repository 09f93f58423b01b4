package mongodb

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// posToken marks a position that is a change stream resume token (the rest of the position is the token
// document's BSON). The first byte leaves room for other kinds of position (a snapshot's progress).
const posToken = 1

// tokenPosition returns the position for a resume token document.
func tokenPosition(tok bson.Raw) record.Position {
	return append(record.Position{posToken}, tok...)
}

// tokenTime returns the cluster time a resume token holds (its seconds), or the zero time when it holds
// none this plugin can read. A token's _data is hex of MongoDB's KeyString encoding, which starts with the
// event's cluster time: the type byte 0x82 (a Timestamp), then 4 bytes of seconds and 4 of increment, big
// endian. Events and post-batch (high-water-mark) tokens of MongoDB 4.2 and later look like that.
func tokenTime(tok bson.Raw) time.Time {
	ts, ok := tokenTimestamp(tok)
	if !ok {
		return time.Time{}
	}
	return time.Unix(int64(ts.T), 0).UTC()
}

// tokenTimestamp returns the cluster time (seconds and increment) a resume token holds, read as tokenTime
// reads it, and whether it holds one.
func tokenTimestamp(tok bson.Raw) (bson.Timestamp, bool) {
	data, ok := tok.Lookup("_data").StringValueOK()
	if !ok || len(data) < 18 || !strings.EqualFold(data[:2], "82") {
		return bson.Timestamp{}, false
	}
	var ts [8]byte
	if _, err := hex.Decode(ts[:], []byte(data[2:18])); err != nil {
		return bson.Timestamp{}, false
	}
	return bson.Timestamp{T: binary.BigEndian.Uint32(ts[:4]), I: binary.BigEndian.Uint32(ts[4:])}, true
}

// positionToken returns the resume token in a position this plugin emitted.
func positionToken(pos record.Position) (bson.Raw, error) {
	if len(pos) < 6 || pos[0] != posToken {
		return nil, fmt.Errorf("position %x is not a MongoDB resume token from this plugin", []byte(pos))
	}
	tok := bson.Raw(pos[1:])
	if err := tok.Validate(); err != nil {
		return nil, fmt.Errorf("position %x holds a malformed resume token: %w", []byte(pos), err)
	}
	return tok, nil
}

// Encoding of the payload.
const (
	encRelaxed   = "relaxed"
	encCanonical = "canonical"
	encBSON      = "bson"
)

// decoder turns change events into records. It is the same code for live streams and replay files.
type decoder struct {
	encoding string
	// db and coll are the configured scope, used when an event has no ns (some servers omit it).
	db, coll string
	// oversize is what to do with an event that arrived in fragments ($changeStreamSplitLargeEvent).
	oversize string
	// deadLetter: the pipeline has a dead-letter sink.
	deadLetter bool
	// fragments of the split event being reassembled.
	fragments []bson.Raw
	// skipped counts the oversize events skipped (oversize: skip), for the log, and skippedTotal for the
	// host's metrics (nil: not counted).
	skipped      int
	skippedTotal *sdk.Counter
	log          func(msg string, args ...any)
	// filter, in replay mode, drops the events the server's namespace $match would have (collections,
	// namespaces); nil on live streams, which the server filters.
	filter *nsFilter
}

// add takes one event from the stream. It returns the record to emit, or ok false when the event is a
// fragment of a split event whose other fragments have not arrived yet, or one the filter drops.
func (d *decoder) add(ev bson.Raw) (r record.Record, ok bool, err error) {
	split, isSplit := ev.Lookup("splitEvent").DocumentOK()
	if !isSplit {
		if len(d.fragments) > 0 {
			return r, false, fmt.Errorf("an event arrived before the last %d fragments of a split event", len(d.fragments))
		}
		if d.filter != nil && !d.filter.passes(ev) {
			return r, false, nil
		}
		r, err = d.record(ev, nil)
		return r, err == nil, err
	}
	n, _ := split.Lookup("fragment").AsInt64OK()
	of, _ := split.Lookup("of").AsInt64OK()
	if n != int64(len(d.fragments))+1 || of < n {
		return r, false, fmt.Errorf("split event fragment %d of %d arrived after %d fragments", n, of, len(d.fragments))
	}
	d.fragments = append(d.fragments, append(bson.Raw(nil), ev...))
	if n < of {
		return r, false, nil
	}
	whole, err := reassemble(d.fragments)
	d.fragments = d.fragments[:0]
	if err != nil {
		return r, false, err
	}
	if d.filter != nil && !d.filter.passes(whole) {
		return r, false, nil
	}
	if r, err = d.record(whole, nil); err != nil {
		return r, false, err
	}
	switch d.oversize {
	case "skip":
		d.skipped++
		if d.skippedTotal != nil {
			d.skippedTotal.Inc()
		}
		db, _ := r.Meta.Get("mongodb.db")
		coll, _ := r.Meta.Get("mongodb.coll")
		ct, _ := r.Meta.Get("mongodb.cluster_time")
		d.log("skipped a change event over 16 MB (oversize: skip)", "key", string(r.Key), "bytes", len(whole),
			"ns", db+"."+coll, "cluster_time", ct, "skipped_total", d.skipped)
		return record.Record{Position: r.Position, Op: record.OpHeartbeat, Time: r.Time}, true, nil
	case "dlq":
		if !d.deadLetter {
			return r, false, errors.New("an event over 16 MB arrived and oversize is dlq, but the pipeline has no dead-letter sink (dlq:)")
		}
		r.Meta = r.Meta.Set(record.MetaError, fmt.Sprintf("change event of %d bytes is over MongoDB's 16 MB limit (oversize: dlq)", len(whole)))
	}
	return r, true, nil
}

// reassemble joins the fragments of a split event into one event: each fragment holds some of the
// event's top-level fields; the whole event's _id is the last fragment's.
func reassemble(frags []bson.Raw) (bson.Raw, error) {
	var d bson.D
	for i, f := range frags {
		elems, err := f.Elements()
		if err != nil {
			return nil, err
		}
		for _, e := range elems {
			switch e.Key() {
			case "splitEvent":
				continue
			case "_id":
				if i < len(frags)-1 {
					continue
				}
			}
			d = append(d, bson.E{Key: e.Key(), Value: e.Value()})
		}
	}
	return bson.Marshal(d)
}

var ops = map[string]record.Op{
	"insert": record.OpInsert, "update": record.OpUpdate, "replace": record.OpReplace, "delete": record.OpDelete,
	"snapshot": record.OpSnapshot, // the source's own snapshot records, as a replay file may hold them
}

// record decodes one change event. Its position is pos, or, when pos is nil, the event's resume token
// (its _id), which must be there.
func (d *decoder) record(ev bson.Raw, pos record.Position) (record.Record, error) {
	var r record.Record
	var err error
	r.Position = pos
	if pos == nil {
		idv, err := ev.LookupErr("_id")
		if err != nil {
			return r, errors.New("change event has no _id (its resume token): a pipeline stage must not remove or change _id")
		}
		tok, ok := idv.DocumentOK()
		if !ok {
			return r, fmt.Errorf("change event _id is a %s, not a resume token document", idv.Type)
		}
		r.Position = tokenPosition(tok)
	}
	opType, _ := ev.Lookup("operationType").StringValueOK()
	if op, ok := ops[opType]; ok {
		r.Op = op
	} else {
		r.Op = record.OpOther
	}
	if r.Key, err = key(ev); err != nil {
		return r, err
	}
	db, coll := d.db, d.coll
	if ns, ok := ev.Lookup("ns").DocumentOK(); ok {
		// An event with ns names its own namespace; a database-level event (dropDatabase) has no coll.
		db, _ = ns.Lookup("db").StringValueOK()
		coll, _ = ns.Lookup("coll").StringValueOK()
	}
	if db != "" {
		r.Meta = r.Meta.Set("mongodb.db", db)
	}
	if coll != "" {
		r.Meta = r.Meta.Set("mongodb.coll", coll)
	}
	r.Meta = r.Meta.Set("mongodb.operation", opType)
	// The event time: wallTime (milliseconds, MongoDB 6.0+), else clusterTime (seconds), else the time in
	// the resume token; both come from the primary's clock when it made the change.
	if t, i, ok := ev.Lookup("clusterTime").TimestampOK(); ok {
		r.Meta = r.Meta.Set("mongodb.cluster_time", strconv.FormatUint(uint64(t), 10)+"."+strconv.FormatUint(uint64(i), 10))
		r.Time = time.Unix(int64(t), 0).UTC()
	}
	if ms, ok := ev.Lookup("wallTime").DateTimeOK(); ok {
		r.Time = time.UnixMilli(ms).UTC()
		r.Meta = r.Meta.Set("mongodb.wall_time", r.Time.Format(time.RFC3339Nano))
	}
	if r.Time.IsZero() && pos == nil {
		r.Time = tokenTime(bson.Raw(r.Position[1:]))
	}
	if v, err := ev.LookupErr("txnNumber"); err == nil {
		if n, ok := v.AsInt64OK(); ok {
			r.Meta = r.Meta.Set("mongodb.txn_number", strconv.FormatInt(n, 10))
		}
	}
	if v, err := ev.LookupErr("lsid"); err == nil {
		if doc, ok := v.DocumentOK(); ok {
			if b, err := bson.MarshalExtJSON(doc, true, false); err == nil {
				r.Meta = r.Meta.Set("mongodb.lsid", string(b))
			}
		}
	}
	switch d.encoding {
	case encBSON:
		r.Payload, r.Encoding = append([]byte(nil), ev...), record.EncodingBSON
	case encCanonical:
		r.Payload, err = bson.MarshalExtJSON(ev, true, false)
		r.Encoding = record.EncodingJSON
	default:
		r.Payload, err = bson.MarshalExtJSON(ev, false, false)
		r.Encoding = record.EncodingJSON
	}
	return r, err
}

// key is the record key of a change event: documentKey._id as canonical Extended JSON. Servers that omit
// it (or, like mongo-java-server, put something else in documentKey) fall back to the _id of fullDocument
// or fullDocumentBeforeChange, then to the whole documentKey. Events without a document (drop, rename,
// invalidate) have no key.
func key(ev bson.Raw) ([]byte, error) {
	for _, path := range [][]string{{"documentKey", "_id"}, {"fullDocument", "_id"}, {"fullDocumentBeforeChange", "_id"}} {
		if id, err := ev.LookupErr(path...); err == nil {
			return canonicalValue(id)
		}
	}
	if doc, ok := ev.Lookup("documentKey").DocumentOK(); ok {
		return bson.MarshalExtJSON(doc, true, false)
	}
	return nil, nil
}

// canonicalValue is a value as canonical Extended JSON: the stable text of a document key.
func canonicalValue(v bson.RawValue) ([]byte, error) {
	b, err := bson.MarshalExtJSON(bson.D{{Key: "v", Value: v}}, true, false)
	if err != nil {
		return nil, err
	}
	s := strings.TrimSuffix(strings.TrimPrefix(string(b), `{"v":`), "}")
	return []byte(s), nil
}
