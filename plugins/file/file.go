// Package file is a sluice plugin for JSON Lines files: a source that reads a file line by line (and can
// follow it as it grows), and a sink that appends one line per record.
//
// Source positions are byte offsets, so a pipeline resumes exactly after the last line stored downstream.
// The sink is at-least-once: it does not store positions itself (the host's state store does), and after
// a crash the batches written but not yet acknowledged are written again.
package file

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// Plugin returns the file plugin: its spec and its source and sink constructors.
func Plugin() sdk.Plugin {
	return sdk.Plugin{
		Spec: sdk.Spec{
			Name:    "file",
			Version: "0.1.0",
			Summary: "JSON Lines files: read a file (optionally following it as it grows), or append records to one.",
			Author:  "sluice",
			Source: &sdk.Stage{
				Summary:  "Reads a JSON Lines file: one record per non-empty line, payload = the line, op insert, metadata file.path. The position is the byte offset after the line, so a restart resumes exactly after the last line stored downstream.",
				Settings: sdk.MustSettingsOf[SourceConfig](),
			},
			Sink: &sdk.Stage{
				Summary:  "Appends one line per record to a file (heartbeats write nothing), creating it and its directory. At-least-once: after a crash, a torn last line is cut off and unacknowledged batches are written again.",
				Settings: sdk.MustSettingsOf[SinkConfig](),
			},
		},
		NewSource: func() sdk.Source { return &Source{} },
		NewSink:   func() sdk.Sink { return &Sink{} },
	}
}

// Format is how a sink writes a record as a line.
type Format string

// The line formats.
const (
	// FormatPayload writes the record's payload. A JSON payload spanning several lines is compacted onto
	// one; any other payload containing a newline is an error.
	FormatPayload Format = "payload"
	// FormatRecord writes a JSON envelope:
	//
	//	{"position":"<base64>","op":"insert","key":"k1","meta":{"k":"v"},"encoding":"json","payload":{…}}
	//
	// The key is a string when it is valid UTF-8, else key_b64 holds it in base64. The payload is
	// embedded as JSON when the encoding is json and as a base64 string otherwise; key, meta and payload
	// are left out when empty.
	FormatRecord Format = "record"
)

// ParseFormat returns the Format named s.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case FormatPayload, FormatRecord:
		return f, nil
	}
	return "", fmt.Errorf("format %q: want %q or %q", s, FormatPayload, FormatRecord)
}

// envelope is the FormatRecord line. Field order is the output order; meta keys come out sorted.
type envelope struct {
	Position []byte            `json:"position"`
	Op       string            `json:"op"`
	Key      string            `json:"key,omitempty"`
	KeyB64   []byte            `json:"key_b64,omitempty"`
	Meta     map[string]string `json:"meta,omitempty"`
	Encoding string            `json:"encoding"`
	Payload  json.RawMessage   `json:"payload,omitempty"`
}

// AppendLines appends the batch's records to dst as lines in format f, skipping heartbeats (they carry no
// data), and returns the extended slice. An error names the record's position.
func AppendLines(dst []byte, recs []record.Record, f Format) ([]byte, error) {
	for i := range recs {
		r := &recs[i]
		if r.Op == record.OpHeartbeat {
			continue
		}
		var err error
		if dst, err = AppendLine(dst, r, f); err != nil {
			return dst, fmt.Errorf("record at position %x: %w", []byte(r.Position), err)
		}
	}
	return dst, nil
}

// AppendLine appends r to dst as one line in format f, newline included, and returns the extended slice.
// In FormatPayload a record without payload appends nothing. It is safe for concurrent use.
func AppendLine(dst []byte, r *record.Record, f Format) ([]byte, error) {
	switch f {
	case FormatPayload:
		p := r.Payload
		if len(p) == 0 {
			return dst, nil
		}
		if bytes.ContainsAny(p, "\r\n") {
			if r.Encoding != record.EncodingJSON {
				return dst, errors.New("the payload contains a newline and is not JSON; use format record")
			}
			var b bytes.Buffer
			if err := json.Compact(&b, p); err != nil {
				return dst, fmt.Errorf("the payload spans lines and is not valid JSON: %w", err)
			}
			p = b.Bytes()
		}
		dst = append(dst, p...)
		return append(dst, '\n'), nil
	case FormatRecord:
		e := envelope{Position: r.Position, Op: r.Op.String(), Encoding: r.Encoding.String()}
		if utf8.Valid(r.Key) {
			e.Key = string(r.Key)
		} else {
			e.KeyB64 = r.Key
		}
		if len(r.Meta) > 0 {
			e.Meta = make(map[string]string, len(r.Meta))
			for _, m := range r.Meta {
				e.Meta[m.Key] = m.Value
			}
		}
		switch {
		case len(r.Payload) == 0:
		case r.Encoding == record.EncodingJSON:
			if !json.Valid(r.Payload) {
				return dst, errors.New("the payload is marked JSON but is not valid JSON")
			}
			e.Payload = r.Payload
		default:
			b, _ := json.Marshal(r.Payload) // a base64 string
			e.Payload = b
		}
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)               // keep payloads as they are: no \u003c for <
		if err := enc.Encode(&e); err != nil { // Encode compacts the payload and ends the line
			return dst, err
		}
		return append(dst, b.Bytes()...), nil
	}
	return dst, fmt.Errorf("unknown format %q", f)
}
