package mongodb

import (
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

var _ sdk.PositionFormatter = (*Source)(nil)

// TestFormatPosition renders each kind of position this plugin emits, and refuses others.
func TestFormatPosition(t *testing.T) {
	tok := token(t, "826482E5A6000000032B022C0100296E5A1004")
	snap := func(kind byte, d bson.D) record.Position {
		b, err := bson.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		return append(record.Position{kind}, b...)
	}
	at := bson.Timestamp{T: 0x6482E5A6, I: 7}
	for _, tt := range []struct {
		pos  record.Position
		want string
	}{
		{tokenPosition(tok), "2023-06-09T08:41:10Z #3 (resume token 826482E5A6000000032B022C0100296E5A1004)"},
		{tokenPosition(token(t, "6b02cf6900000001")), "resume token 6b02cf6900000001"},
		{snap(posSnapshot, bson.D{{Key: "tok", Value: tok}, {Key: "last", Value: int32(42)}}),
			"snapshot: copied through {\"_id\":42}; then the change stream from 2023-06-09T08:41:10Z #3 (resume token 826482E5A6000000032B022C0100296E5A1004)"},
		{snap(posSnapshot, bson.D{{Key: "tok", Value: tok}, {Key: "db", Value: "shop"}, {Key: "coll", Value: "orders"}, {Key: "last", Value: "a"}}),
			"snapshot: copied through {\"_id\":\"a\"} in shop.orders; then the change stream from 2023-06-09T08:41:10Z #3 (resume token 826482E5A6000000032B022C0100296E5A1004)"},
		{snap(posSnapshot, bson.D{{Key: "t", Value: at}}), "snapshot: nothing copied yet; then the change stream from 2023-06-09T08:41:10Z #7"},
		{snap(posStreamStart, bson.D{{Key: "t", Value: at}}), "snapshot done; the change stream from 2023-06-09T08:41:10Z #7"},
	} {
		got, err := (&Source{}).FormatPosition(tt.pos)
		if err != nil || got != tt.want {
			t.Errorf("FormatPosition(%x) = %q, %v\n want %q", []byte(tt.pos), got, err, tt.want)
		}
	}
	for _, pos := range []record.Position{nil, {9, 1, 2}, {posToken, 1}, {posSnapshot, 5, 0, 0, 0, 0}} {
		if got, err := (&Source{}).FormatPosition(pos); err == nil {
			t.Errorf("FormatPosition(%x) = %q, want an error", []byte(pos), got)
		}
	}
}
