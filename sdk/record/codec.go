package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
)

// The record wire encoding, version 1. A batch crosses a process boundary as one byte string holding its
// records back to back, so that a batch of a thousand records costs one protobuf field, not a thousand
// messages and maps. Each record is:
//
//	op        1 byte
//	encoding  1 byte
//	position  uvarint length, bytes
//	key       uvarint length, bytes
//	meta      uvarint count, then count × (uvarint length, key bytes, uvarint length, value bytes)
//	payload   uvarint length, bytes
//
// The layout is fixed for protocol version 1; a change to it is a new protocol version.
//
// A record's Time travels as the first metadata entry, MetaTime ("sluice.time"), whose value is the time in
// nanoseconds since the Unix epoch, in decimal. Decode takes that entry out of Meta and into Time. So the
// layout did not change: a plugin built before Time existed reads such a record with one more metadata
// entry, and records it writes carry no time. See docs/decisions/2026-11-30-event-time.md.

// ErrCorrupt is returned (wrapped) by Decode when data is not a valid encoding.
var ErrCorrupt = errors.New("record: corrupt batch encoding")

// EncodedSize returns the number of bytes Append will add for r.
func EncodedSize(r *Record) int {
	fields := len(r.Meta)
	n := 2 + uvarintLen(len(r.Position)) + len(r.Position) + uvarintLen(len(r.Key)) + len(r.Key) +
		uvarintLen(len(r.Payload)) + len(r.Payload)
	if ns, ok := timeNanos(r.Time); ok {
		fields++
		n += 1 + len(MetaTime) + 1 + decimalLen(ns)
	}
	n += uvarintLen(fields)
	for _, f := range r.Meta {
		n += uvarintLen(len(f.Key)) + len(f.Key) + uvarintLen(len(f.Value)) + len(f.Value)
	}
	return n
}

// Append appends the encoding of r to dst and returns the extended slice.
func Append(dst []byte, r *Record) []byte {
	dst = append(dst, byte(r.Op), byte(r.Encoding))
	dst = appendBytes(dst, r.Position)
	dst = appendBytes(dst, r.Key)
	if ns, ok := timeNanos(r.Time); ok {
		dst = binary.AppendUvarint(dst, uint64(len(r.Meta)+1))
		dst = append(dst, byte(len(MetaTime)))
		dst = append(dst, MetaTime...)
		dst = append(dst, byte(decimalLen(ns)))
		dst = strconv.AppendInt(dst, ns, 10)
	} else {
		dst = binary.AppendUvarint(dst, uint64(len(r.Meta)))
	}
	for _, f := range r.Meta {
		dst = binary.AppendUvarint(dst, uint64(len(f.Key)))
		dst = append(dst, f.Key...)
		dst = binary.AppendUvarint(dst, uint64(len(f.Value)))
		dst = append(dst, f.Value...)
	}
	return appendBytes(dst, r.Payload)
}

// Encode appends the encoding of every record in recs to dst and returns the extended slice. It grows dst
// at most once.
func Encode(dst []byte, recs []Record) []byte {
	n := 0
	for i := range recs {
		n += EncodedSize(&recs[i])
	}
	if cap(dst)-len(dst) < n {
		grown := make([]byte, len(dst), len(dst)+n)
		copy(grown, dst)
		dst = grown
	}
	for i := range recs {
		dst = Append(dst, &recs[i])
	}
	return dst
}

// Decode decodes count records from data, appends them to dst and returns the extended slice. The records'
// Position, Key and Payload alias data: data must not be modified while they are in use. Metadata strings
// are copied. Decode never panics on bad input; it returns an error wrapping ErrCorrupt.
func Decode(dst []Record, data []byte, count int) ([]Record, error) {
	if count < 0 || count > len(data)/minRecordSize+1 {
		return dst, fmt.Errorf("%w: record count %d does not fit %d bytes", ErrCorrupt, count, len(data))
	}
	dst = slices.Grow(dst, count)
	d := decoder{data: data}
	var meta []Field
	for i := 0; i < count; i++ {
		var r Record
		if len(d.data) < 2 {
			return dst, d.fail(i, "truncated header")
		}
		r.Op, r.Encoding = Op(d.data[0]), Encoding(d.data[1])
		d.data = d.data[2:]
		r.Position = d.bytes()
		r.Key = d.bytes()
		n := d.uvarint()
		if n > uint64(len(d.data)/2) {
			return dst, d.fail(i, "metadata count out of range")
		}
		if n > 0 {
			if cap(meta)-len(meta) < int(n) {
				// Guess the remaining records carry as many fields; each field takes at least two bytes.
				meta = make([]Field, 0, min(int(n)*(count-i), int(n)+len(d.data)/2))
			}
			start := len(meta)
			for j := uint64(0); j < n; j++ {
				k := d.bytes()
				v := d.bytes()
				if len(k) == len(MetaTime) && string(k) == MetaTime {
					if ns, ok := parseNanos(v); ok {
						r.Time = time.Unix(0, ns).UTC()
						continue
					}
				}
				meta = append(meta, Field{Key: internKey(k), Value: string(v)})
			}
			if len(meta) > start {
				r.Meta = meta[start:len(meta):len(meta)]
			}
		}
		r.Payload = d.bytes()
		if d.err != "" {
			return dst, d.fail(i, d.err)
		}
		if r.Op >= opCount {
			return dst, d.fail(i, fmt.Sprintf("unknown op %d", r.Op))
		}
		if r.Encoding >= encodingCount {
			return dst, d.fail(i, fmt.Sprintf("unknown encoding %d", r.Encoding))
		}
		dst = append(dst, r)
	}
	if len(d.data) != 0 {
		return dst, fmt.Errorf("%w: %d bytes left after %d records", ErrCorrupt, len(d.data), count)
	}
	return dst, nil
}

// Scan walks count records encoded in data without decoding them, calling fn with each record's index,
// position, key and whole encoding (all three alias data; raw may be appended to another batch's
// encoding as it is). It checks the lengths only, not the op or encoding bytes: Decode does. It returns
// an error wrapping ErrCorrupt when data does not hold count records.
func Scan(data []byte, count int, fn func(i int, pos, key, raw []byte)) error {
	if count < 0 || count > len(data)/minRecordSize+1 {
		return fmt.Errorf("%w: record count %d does not fit %d bytes", ErrCorrupt, count, len(data))
	}
	d := decoder{data: data}
	for i := 0; i < count; i++ {
		start := d.data
		if len(d.data) < 2 {
			return d.fail(i, "truncated header")
		}
		d.data = d.data[2:]
		pos := d.bytes()
		key := d.bytes()
		n := d.uvarint()
		if n > uint64(len(d.data)/2) {
			return d.fail(i, "metadata count out of range")
		}
		for j := uint64(0); j < n; j++ {
			d.bytes()
			d.bytes()
		}
		d.bytes() // payload
		if d.err != "" {
			return d.fail(i, d.err)
		}
		fn(i, pos, key, start[:len(start)-len(d.data):len(start)-len(d.data)])
	}
	if len(d.data) != 0 {
		return fmt.Errorf("%w: %d bytes left after %d records", ErrCorrupt, len(d.data), count)
	}
	return nil
}

// minRecordSize is the smallest encoding of a record: op, encoding and four zero lengths.
const minRecordSize = 6

type decoder struct {
	data []byte
	err  string
}

func (d *decoder) uvarint() uint64 {
	if d.err != "" {
		return 0
	}
	v, n := binary.Uvarint(d.data)
	if n <= 0 {
		d.err = "bad length"
		d.data = nil
		return 0
	}
	d.data = d.data[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != "" {
		return nil
	}
	if n > uint64(len(d.data)) {
		d.err = "length past end of data"
		d.data = nil
		return nil
	}
	if n == 0 {
		return nil
	}
	b := d.data[:n:n]
	d.data = d.data[n:]
	return b
}

func (d *decoder) fail(i int, msg string) error {
	return fmt.Errorf("%w: record %d: %s", ErrCorrupt, i, msg)
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// The times that nanoseconds since the Unix epoch in an int64 can hold.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// timeNanos returns t in nanoseconds since the Unix epoch, and whether t is carried: set, and in range.
func timeNanos(t time.Time) (int64, bool) {
	if t.IsZero() || t.Before(minTime) || t.After(maxTime) {
		return 0, false
	}
	return t.UnixNano(), true
}

// decimalLen returns the length of n written in decimal.
func decimalLen(n int64) int {
	l, u := 1, uint64(n)
	if n < 0 {
		l, u = 2, uint64(-(n+1))+1
	}
	for u >= 10 {
		u /= 10
		l++
	}
	return l
}

// parseNanos reads a decimal int64 without allocating; ok is false for anything else.
func parseNanos(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var u uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		u = u*10 + uint64(c-'0')
	}
	switch {
	case neg && u <= 1<<63:
		return int64(-u), true
	case !neg && u < 1<<63:
		return int64(u), true
	}
	return 0, false
}

func uvarintLen(n int) int {
	l := 1
	for n >= 0x80 {
		n >>= 7
		l++
	}
	return l
}

// commonKeys are metadata keys that first-party plugins set on nearly every record; decoding them returns a
// shared string instead of allocating one per record.
var commonKeys = map[string]string{}

func init() {
	for _, k := range []string{
		"mongodb.db", "mongodb.coll", "mongodb.cluster_time", "mongodb.wall_time", "mongodb.txn_number",
		"mongodb.lsid", "mongodb.operation_type", "kafka.topic", "kafka.partition", "kafka.offset", "redis.stream",
		"route", "file.path", "file.line",
	} {
		commonKeys[k] = k
	}
}

func internKey(b []byte) string {
	if s, ok := commonKeys[string(b)]; ok { // no allocation: the compiler optimises map lookups by []byte
		return s
	}
	return string(b)
}
