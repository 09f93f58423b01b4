package codec

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// DecodeBSON decodes a BSON document into a map, with the same value types as DecodeJSON (int32 and int64
// both become int). Strings and binary data are copied: the result does not alias data.
func DecodeBSON(data []byte) (map[string]any, error) {
	doc := bsoncore.Document(data)
	if err := doc.Validate(); err != nil {
		return nil, fmt.Errorf("BSON: %w", err)
	}
	return bsonDocument(doc, 0)
}

func bsonDocument(doc bsoncore.Document, depth int) (map[string]any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("BSON: nested more than %d levels deep", maxDepth)
	}
	elems, err := doc.Elements()
	if err != nil {
		return nil, fmt.Errorf("BSON: %w", err)
	}
	m := make(map[string]any, len(elems))
	for _, el := range elems {
		v, err := bsonValue(el.Value(), depth)
		if err != nil {
			return nil, err
		}
		m[el.Key()] = v
	}
	return m, nil
}

func bsonValue(v bsoncore.Value, depth int) (any, error) {
	switch v.Type {
	case bsoncore.TypeDouble:
		return v.Double(), nil
	case bsoncore.TypeString:
		return v.StringValue(), nil
	case bsoncore.TypeEmbeddedDocument:
		return bsonDocument(v.Document(), depth+1)
	case bsoncore.TypeArray:
		vals, err := v.Array().Values()
		if err != nil {
			return nil, fmt.Errorf("BSON: %w", err)
		}
		a := make([]any, len(vals))
		for i, el := range vals {
			if a[i], err = bsonValue(el, depth+1); err != nil {
				return nil, err
			}
		}
		return a, nil
	case bsoncore.TypeBinary:
		st, data := v.Binary()
		return Binary{Subtype: st, Data: slices.Clone(data)}, nil
	case bsoncore.TypeUndefined, bsoncore.TypeNull:
		return nil, nil
	case bsoncore.TypeObjectID:
		return ObjectID(v.ObjectID()), nil
	case bsoncore.TypeBoolean:
		return v.Boolean(), nil
	case bsoncore.TypeDateTime:
		return time.UnixMilli(v.DateTime()).UTC(), nil
	case bsoncore.TypeRegex:
		p, o := v.Regex()
		return Regex{Pattern: p, Options: o}, nil
	case bsoncore.TypeDBPointer:
		ns, id := v.DBPointer()
		return map[string]any{"$ref": ns, "$id": ObjectID(id)}, nil
	case bsoncore.TypeJavaScript:
		return Code(v.JavaScript()), nil
	case bsoncore.TypeSymbol:
		return v.Symbol(), nil
	case bsoncore.TypeCodeWithScope:
		code, scope := v.CodeWithScope()
		s, err := bsonDocument(scope, depth+1)
		if err != nil {
			return nil, err
		}
		return map[string]any{"$code": code, "$scope": s}, nil
	case bsoncore.TypeInt32:
		return int(v.Int32()), nil
	case bsoncore.TypeTimestamp:
		t, i := v.Timestamp()
		return Timestamp{T: t, I: i}, nil
	case bsoncore.TypeInt64:
		return int(v.Int64()), nil
	case bsoncore.TypeDecimal128:
		h, l := v.Decimal128()
		return Decimal{bson.NewDecimal128(h, l)}, nil
	case bsoncore.TypeMinKey:
		return MinKey{}, nil
	case bsoncore.TypeMaxKey:
		return MaxKey{}, nil
	}
	return nil, fmt.Errorf("BSON: unknown type 0x%02x", byte(v.Type))
}

// EncodeBSON appends doc to dst as a BSON document, keys in sorted order. An int that fits in 32 bits is
// written as int32, a larger one as int64.
func EncodeBSON(dst []byte, doc map[string]any) ([]byte, error) {
	return bsonAppendDocument(dst, doc, 0)
}

func bsonAppendDocument(b []byte, m map[string]any, depth int) ([]byte, error) {
	if depth > maxDepth {
		return b, errTooDeep
	}
	idx, b := bsoncore.AppendDocumentStart(b)
	var small [16]string
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		var err error
		if b, err = bsonAppendElement(b, k, m[k], depth); err != nil {
			return b, err
		}
	}
	return bsoncore.AppendDocumentEnd(b, idx)
}

func bsonAppendElement(b []byte, key string, v any, depth int) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return bsoncore.AppendNullElement(b, key), nil
	case bool:
		return bsoncore.AppendBooleanElement(b, key, x), nil
	case string:
		return bsoncore.AppendStringElement(b, key, x), nil
	case int:
		if x >= math.MinInt32 && x <= math.MaxInt32 {
			return bsoncore.AppendInt32Element(b, key, int32(x)), nil
		}
		return bsoncore.AppendInt64Element(b, key, int64(x)), nil
	case float64:
		return bsoncore.AppendDoubleElement(b, key, x), nil
	case float32:
		return bsoncore.AppendDoubleElement(b, key, float64(x)), nil
	case map[string]any:
		idx, b := bsoncore.AppendDocumentElementStart(b, key)
		var small [16]string
		keys := small[:0]
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if depth+1 > maxDepth {
			return b, errTooDeep
		}
		for _, k := range keys {
			var err error
			if b, err = bsonAppendElement(b, k, x[k], depth+1); err != nil {
				return b, err
			}
		}
		return bsoncore.AppendDocumentEnd(b, idx)
	case []any:
		if depth+1 > maxDepth {
			return b, errTooDeep
		}
		idx, b := bsoncore.AppendArrayElementStart(b, key)
		for i, el := range x {
			var err error
			if b, err = bsonAppendElement(b, strconv.Itoa(i), el, depth+1); err != nil {
				return b, err
			}
		}
		return bsoncore.AppendArrayEnd(b, idx)
	case ObjectID:
		return bsoncore.AppendObjectIDElement(b, key, x), nil
	case time.Time:
		return bsoncore.AppendDateTimeElement(b, key, x.UnixMilli()), nil
	case Decimal:
		h, l := x.d.GetBytes()
		return bsoncore.AppendDecimal128Element(b, key, h, l), nil
	case bson.Decimal128:
		h, l := x.GetBytes()
		return bsoncore.AppendDecimal128Element(b, key, h, l), nil
	case Binary:
		return bsoncore.AppendBinaryElement(b, key, x.Subtype, x.Data), nil
	case []byte:
		return bsoncore.AppendBinaryElement(b, key, 0, x), nil
	case Timestamp:
		return bsoncore.AppendTimestampElement(b, key, x.T, x.I), nil
	case Regex:
		return bsoncore.AppendRegexElement(b, key, x.Pattern, x.Options), nil
	case MinKey:
		return bsoncore.AppendMinKeyElement(b, key), nil
	case MaxKey:
		return bsoncore.AppendMaxKeyElement(b, key), nil
	case Code:
		return bsoncore.AppendJavaScriptElement(b, key, string(x)), nil
	case time.Duration:
		return bsoncore.AppendStringElement(b, key, x.String()), nil
	case uint64:
		if x > math.MaxInt64 {
			d, _ := ParseDecimal(strconv.FormatUint(x, 10)) // exact
			return bsonAppendElement(b, key, d, depth)
		}
		return bsoncore.AppendInt64Element(b, key, int64(x)), nil
	case map[string]string:
		m := make(map[string]any, len(x))
		for k, s := range x {
			m[k] = s
		}
		return bsonAppendElement(b, key, m, depth)
	case []string:
		l := make([]any, len(x))
		for i, s := range x {
			l[i] = s
		}
		return bsonAppendElement(b, key, l, depth)
	}
	if n, ok := AsInt(v); ok {
		return bsonAppendElement(b, key, n, depth)
	}
	if s, ok := v.(fmt.Stringer); ok {
		return bsoncore.AppendStringElement(b, key, s.String()), nil
	}
	return b, fmt.Errorf("cannot encode a value of type %T as BSON", v)
}
