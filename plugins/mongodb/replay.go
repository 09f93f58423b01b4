package mongodb

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// replay reads change events from a file, one per line in Extended JSON. A line that is not a change
// event fails the read permanently (sdk.ErrPermanent), naming the file and the line: reading it again
// cannot help.
type replay struct {
	f    *os.File
	sc   *bufio.Scanner
	path string
	line int
	out  []record.Record
}

// maxEventLine bounds a replay line: a 16 MB event in Extended JSON is larger than 16 MB.
const maxEventLine = 64 << 20

// openReplay opens path and, when after is set, skips the events up to and including the one whose _id
// is after.
func openReplay(path string, after bson.Raw) (*replay, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("mongodb: replay_file: %v: %w", err, sdk.ErrInvalidSettings)
	}
	r := &replay{f: f, sc: bufio.NewScanner(f), path: path}
	r.sc.Buffer(make([]byte, 0, 64<<10), maxEventLine)
	if after == nil {
		return r, nil
	}
	for {
		ev, err := r.next()
		if err != nil {
			f.Close()
			return nil, err
		}
		if ev == nil {
			f.Close()
			return nil, fmt.Errorf("mongodb: replay_file %s has no event with the stored position %s: %w", path, after, sdk.ErrInvalidSettings)
		}
		if id, err := ev.LookupErr("_id"); err == nil && bytes.Equal(id.Value, after) {
			return r, nil
		}
	}
}

// next returns the next event, or nil at the end of the file. Blank lines are skipped.
func (r *replay) next() (bson.Raw, error) {
	for r.sc.Scan() {
		r.line++
		line := bytes.TrimSpace(r.sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var ev bson.Raw
		if err := bson.UnmarshalExtJSON(line, false, &ev); err != nil {
			return nil, sdk.Permanentf("mongodb: %s:%d: not a change event in Extended JSON: %s", r.path, r.line, lineProblem(line, err))
		}
		return ev, nil
	}
	if err := r.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, sdk.Permanentf("mongodb: %s:%d: the line is longer than %d MB, more than any change event in Extended JSON", r.path, r.line+1, maxEventLine>>20)
		}
		return nil, fmt.Errorf("mongodb: reading %s: %w", r.path, err)
	}
	return nil, nil
}

func (r *replay) read(d *decoder, max int) ([]record.Record, error) {
	out := r.out[:0]
	for len(out) < max {
		ev, err := r.next()
		if err != nil {
			return nil, err
		}
		if ev == nil {
			break
		}
		rec, ok, err := d.add(ev)
		if err != nil {
			return nil, sdk.Permanentf("mongodb: %s:%d: %w", r.path, r.line, err)
		}
		if ok {
			out = append(out, rec)
		}
	}
	r.out = out
	if len(out) == 0 {
		if len(d.fragments) > 0 {
			return nil, sdk.Permanentf("mongodb: %s ends inside a split event (%d fragments read)", r.path, len(d.fragments))
		}
		return nil, sdk.ErrDone
	}
	return out, nil
}

func (r *replay) close() error { return r.f.Close() }

// lineProblem says in plain words what is wrong with a replay line that bson.UnmarshalExtJSON rejected
// with err: not JSON (and where), not a JSON object, or which field holds which value the Extended JSON
// rules reject. The driver's own words name neither the field nor, for numbers, the value's fault.
func lineProblem(line []byte, err error) string {
	var v any
	if jerr := json.Unmarshal(line, &v); jerr != nil {
		var se *json.SyntaxError
		if errors.As(jerr, &se) {
			return fmt.Sprintf("not JSON: %s at byte %d", se.Error(), se.Offset)
		}
		return "not JSON: " + jerr.Error()
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return valueProblem(err)
	}
	if _, ok := v.(map[string]any); !ok {
		return "a JSON " + jsonKind(v) + ", not an object"
	}
	if path, val, why := badField("", v); path != "" {
		return fmt.Sprintf("field %s holds %s: %s", path, val, why)
	}
	return valueProblem(err)
}

// badField finds the first value under v (keys in sorted order) that is an Extended JSON wrapper
// ({"$numberInt": …}, {"$oid": …}, …) the driver rejects: its dotted path, its JSON and why.
func badField(path string, v any) (at, val, why string) {
	join := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		wrapper := false
		for k := range v {
			keys = append(keys, k)
			wrapper = wrapper || strings.HasPrefix(k, "$")
		}
		if wrapper && path != "" {
			doc, _ := json.Marshal(map[string]any{"v": v})
			var raw bson.Raw
			if err := bson.UnmarshalExtJSON(doc, false, &raw); err != nil {
				b, _ := json.Marshal(v)
				return path, string(b), valueProblem(err)
			}
			return "", "", ""
		}
		slices.Sort(keys)
		for _, k := range keys {
			if at, val, why := badField(join(k), v[k]); at != "" {
				return at, val, why
			}
		}
	case []any:
		for i, e := range v {
			if at, val, why := badField(join(strconv.Itoa(i)), e); at != "" {
				return at, val, why
			}
		}
	}
	return "", "", ""
}

// valueProblem is the driver's reason for rejecting a value, with a number that does not parse said in
// plain words.
func valueProblem(err error) string {
	var ne *strconv.NumError
	if errors.As(err, &ne) {
		if errors.Is(ne.Err, strconv.ErrRange) {
			return strconv.Quote(ne.Num) + " is out of range"
		}
		return strconv.Quote(ne.Num) + " is not a number"
	}
	return strings.Replace(err.Error(), "$invalid ", "invalid ", 1)
}

// jsonKind names the JSON type of a value encoding/json decoded.
func jsonKind(v any) string {
	switch v.(type) {
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	case nil:
		return "null"
	default:
		return "number"
	}
}
