package mongodb

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sluicehq/sluice/sdk/record"
)

// FormatPosition renders a position for the host's log and API (sdk.PositionFormatter): a change stream
// position as its event's cluster time and resume token, a snapshot position as the last _id copied and
// where the stream starts after the copy.
func (s *Source) FormatPosition(pos record.Position) (string, error) {
	if len(pos) == 0 {
		return "", fmt.Errorf("an empty position is not one of this plugin's")
	}
	switch pos[0] {
	case posToken:
		tok, err := positionToken(pos)
		if err != nil {
			return "", err
		}
		return describeToken(tok), nil
	case posSnapshot, posStreamStart:
		p, err := parseSnapshotPosition(pos)
		if err != nil {
			return "", err
		}
		last := p.last
		stream := "the change stream from " + describeStart(p.from)
		if pos[0] == posStreamStart {
			return "snapshot done; " + stream, nil
		}
		if last.Type == 0 {
			return "snapshot: nothing copied yet; then " + stream, nil
		}
		id, err := bson.MarshalExtJSON(bson.D{{Key: "_id", Value: last}}, false, false)
		if err != nil {
			return "", fmt.Errorf("position %x: the last _id copied: %w", []byte(pos), err)
		}
		in := ""
		if p.ns.coll != "" {
			in = " in " + p.ns.db + "." + p.ns.coll
		}
		return fmt.Sprintf("snapshot: copied through %s%s; then %s", id, in, stream), nil
	}
	return "", fmt.Errorf("position %x is not one of this plugin's (kind %d)", []byte(pos), pos[0])
}

// describeToken renders a resume token: its cluster time and increment when it holds them, and its _data.
func describeToken(tok bson.Raw) string {
	data, ok := tok.Lookup("_data").StringValueOK()
	if !ok {
		return "resume token " + tok.String()
	}
	var inc [4]byte
	if t := tokenTime(tok); !t.IsZero() {
		// tokenTime read data[2:18] as hex: seconds, then the increment.
		if _, err := hex.Decode(inc[:], []byte(data[10:18])); err == nil {
			return fmt.Sprintf("%s #%d (resume token %s)", t.Format(time.RFC3339), binary.BigEndian.Uint32(inc[:]), data)
		}
	}
	return "resume token " + data
}

// describeStart renders where a snapshot's change stream starts.
func describeStart(from start) string {
	if from.token != nil {
		return describeToken(from.token)
	}
	return fmt.Sprintf("%s #%d", time.Unix(int64(from.at.T), 0).UTC().Format(time.RFC3339), from.at.I)
}
