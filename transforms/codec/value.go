// Package codec reads and writes the payloads transform steps work on: JSON, MongoDB Extended JSON
// (relaxed and canonical) and BSON, all decoded into the same Go values (listed below). JSON payloads can be
// decoded sparsely and written back patched (tree.go), so that what no step changed keeps its bytes.
package codec

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// The values a decoded payload holds. JSON, MongoDB Extended JSON (relaxed and canonical) and BSON all
// decode to the same set:
//
//	null, undefined            nil
//	true, false                bool
//	integers                   int: JSON numbers without fraction or exponent that fit in 64 bits,
//	                           $numberInt, $numberLong, BSON int32 and int64
//	other numbers              float64: JSON numbers with a fraction or exponent (or beyond 64 bits),
//	                           $numberDouble (also "Infinity", "-Infinity", "NaN"), BSON double
//	strings, $symbol           string
//	arrays                     []any
//	objects                    map[string]any
//	$oid                       ObjectID
//	$date                      time.Time (UTC, millisecond precision)
//	$numberDecimal             Decimal
//	$binary, $uuid             Binary
//	$timestamp                 Timestamp
//	$regularExpression         Regex
//	$minKey, $maxKey           MinKey, MaxKey
//	$code                      Code
//
// An object that has "$" keys but is not a well-formed wrapper ({"$oid": 5}, {"$set": …}) stays an object.

// ObjectID is a MongoDB ObjectId. It prints, and equals strings, as its 24-character lowercase hex form.
type ObjectID [12]byte

// String returns the hex form.
func (id ObjectID) String() string { return hex.EncodeToString(id[:]) }

// Time returns the creation time the ObjectID holds (its first four bytes, in seconds).
func (id ObjectID) Time() time.Time {
	return time.Unix(int64(binary.BigEndian.Uint32(id[:4])), 0).UTC()
}

// ParseObjectID parses the 24-character hex form.
func ParseObjectID(s string) (ObjectID, error) {
	var id ObjectID
	if len(s) != 24 {
		return id, fmt.Errorf("ObjectID %q: want 24 hex digits", truncate(s, 40))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("ObjectID %q: want 24 hex digits", truncate(s, 40))
	}
	return id, nil
}

// Decimal is a MongoDB Decimal128 value, kept exactly.
type Decimal struct{ d bson.Decimal128 }

// NewDecimal returns the Decimal holding d.
func NewDecimal(d bson.Decimal128) Decimal { return Decimal{d} }

// Decimal128 returns the value in the driver's representation.
func (d Decimal) Decimal128() bson.Decimal128 { return d.d }

// ParseDecimal parses a decimal number ("19.99", "-1.5E+3", "NaN", "Infinity").
func ParseDecimal(s string) (Decimal, error) {
	d, err := bson.ParseDecimal128(s)
	if err != nil {
		return Decimal{}, fmt.Errorf("decimal %q: %w", truncate(s, 40), err)
	}
	return Decimal{d}, nil
}

// String returns the value's canonical text.
func (d Decimal) String() string { return d.d.String() }

// Rat returns the exact value, or nil for NaN and the infinities.
func (d Decimal) Rat() *big.Rat {
	r, ok := new(big.Rat).SetString(d.d.String())
	if !ok {
		return nil
	}
	return r
}

// Float64 returns the nearest float.
func (d Decimal) Float64() float64 {
	f, err := strconv.ParseFloat(d.d.String(), 64)
	if err != nil && !math.IsInf(f, 0) {
		return math.NaN()
	}
	return f
}

// Binary is BSON binary data with its subtype.
type Binary struct {
	Subtype byte
	Data    []byte
}

// String returns the UUID form for subtype 4 (and 3) of 16 bytes, base64 otherwise.
func (b Binary) String() string {
	if (b.Subtype == 4 || b.Subtype == 3) && len(b.Data) == 16 {
		h := hex.EncodeToString(b.Data)
		return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	}
	return base64.StdEncoding.EncodeToString(b.Data)
}

// Timestamp is a BSON timestamp (a change event's clusterTime): seconds and an increment, ordered by T
// then I.
type Timestamp struct{ T, I uint32 }

// Time returns the Timestamp's seconds as a date.
func (t Timestamp) Time() time.Time { return time.Unix(int64(t.T), 0).UTC() }

// String returns "Timestamp(T, I)".
func (t Timestamp) String() string { return fmt.Sprintf("Timestamp(%d, %d)", t.T, t.I) }

// Regex is a BSON regular expression.
type Regex struct{ Pattern, Options string }

// String returns "/pattern/options".
func (r Regex) String() string { return "/" + r.Pattern + "/" + r.Options }

// MinKey and MaxKey are BSON's lowest and highest values.
type (
	MinKey struct{}
	MaxKey struct{}
)

// Code is BSON JavaScript code.
type Code string

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// maxDepth bounds the nesting of decoded and encoded documents.
const maxDepth = 200

// AsInt converts Go's integer types other than int (which expressions may produce through builtins) to
// int; ok is false for other types and for values beyond int.
func AsInt(v any) (int, bool) {
	switch n := v.(type) {
	case int8:
		return int(n), true
	case int16:
		return int(n), true
	case int32:
		return int(n), true
	case int64:
		return int(n), true
	case uint8:
		return int(n), true
	case uint16:
		return int(n), true
	case uint32:
		return int(n), true
	case uint64:
		if n <= math.MaxInt64 {
			return int(n), true
		}
	case uint:
		if n <= math.MaxInt64 {
			return int(n), true
		}
	}
	return 0, false
}
