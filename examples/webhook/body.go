package webhook

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"unicode/utf8"

	"github.com/sluicehq/sluice/sdk/record"
)

// IdempotencyKey returns the Idempotency-Key header value of a request whose first record has position
// first and whose last has position last (the same position when the request carries one record): the
// lower-case hex SHA-256 of
//
//	len(first) as 8 bytes big-endian ‖ first ‖ len(last) as 8 bytes big-endian ‖ last
//
// Positions are unique, so two requests share a key only when they carry the same run of records. It is
// safe for concurrent use.
func IdempotencyKey(first, last record.Position) string {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(first)))
	h.Write(n[:])
	h.Write(first)
	binary.BigEndian.PutUint64(n[:], uint64(len(last)))
	h.Write(n[:])
	h.Write(last)
	return hex.EncodeToString(h.Sum(nil))
}

// document is the request body.
type document struct {
	Records []wireRecord `json:"records"`
}

// wireRecord is one record in the body. Field order is the output order; meta keys come out sorted.
type wireRecord struct {
	Position   []byte            `json:"position"` // []byte encodes as base64
	Op         string            `json:"op"`
	Encoding   string            `json:"encoding"`
	Key        string            `json:"key,omitempty"`
	KeyB64     []byte            `json:"key_b64,omitempty"`
	Meta       map[string]string `json:"meta,omitempty"`
	Payload    json.RawMessage   `json:"payload,omitempty"`
	PayloadB64 []byte            `json:"payload_b64,omitempty"`
}

// encodeBody returns the JSON document for the data records in recs (heartbeats are skipped), how many
// records it holds, and its Idempotency-Key. With no data records it returns n == 0 and no body.
//
// A payload whose encoding is json but whose bytes are not valid JSON is sent base64 under payload_b64
// (its encoding still says json): one malformed record must not stop the pipeline, and nothing is lost.
func encodeBody(recs []record.Record) (body []byte, n int, key string, err error) {
	doc := document{Records: make([]wireRecord, 0, len(recs))}
	var first, last record.Position
	for i := range recs {
		r := &recs[i]
		if r.Op == record.OpHeartbeat {
			continue
		}
		if len(doc.Records) == 0 {
			first = r.Position
		}
		last = r.Position
		w := wireRecord{Position: r.Position, Op: r.Op.String(), Encoding: r.Encoding.String()}
		if utf8.Valid(r.Key) {
			w.Key = string(r.Key)
		} else {
			w.KeyB64 = r.Key
		}
		if len(r.Meta) > 0 {
			w.Meta = make(map[string]string, len(r.Meta))
			for _, f := range r.Meta {
				w.Meta[f.Key] = f.Value
			}
		}
		switch {
		case len(r.Payload) == 0:
		case r.Encoding == record.EncodingJSON && json.Valid(r.Payload):
			w.Payload = r.Payload
		default:
			w.PayloadB64 = r.Payload
		}
		doc.Records = append(doc.Records, w)
	}
	if len(doc.Records) == 0 {
		return nil, 0, "", nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // keep payloads as they are: no \u003c for <
	if err := enc.Encode(&doc); err != nil {
		return nil, 0, "", err
	}
	return b.Bytes(), len(doc.Records), IdempotencyKey(first, last), nil
}
