package mongodb

import (
	"bufio"
	"bytes"
	"fmt"
	"os"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// replay reads change events from a file, one per line in Extended JSON.
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
			return nil, fmt.Errorf("mongodb: %s:%d: not a change event in Extended JSON: %v", r.path, r.line, err)
		}
		return ev, nil
	}
	if err := r.sc.Err(); err != nil {
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
			return nil, fmt.Errorf("mongodb: %s:%d: %w", r.path, r.line, err)
		}
		if ok {
			out = append(out, rec)
		}
	}
	r.out = out
	if len(out) == 0 {
		if len(d.fragments) > 0 {
			return nil, fmt.Errorf("mongodb: %s ends inside a split event (%d fragments read)", r.path, len(d.fragments))
		}
		return nil, sdk.ErrDone
	}
	return out, nil
}

func (r *replay) close() error { return r.f.Close() }
