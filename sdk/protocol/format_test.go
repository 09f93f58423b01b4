package protocol

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// seqSource renders its positions, 8-byte sequence numbers, as numbers.
type seqSource struct{ sdk.UnimplementedSource }

func (seqSource) FormatPosition(pos record.Position) (string, error) {
	if len(pos) != 8 {
		return "", fmt.Errorf("a position is 8 bytes, not %d", len(pos))
	}
	return fmt.Sprintf("record %d", binary.BigEndian.Uint64(pos)), nil
}

type plainSource struct{ sdk.UnimplementedSource }

func TestFormatPosition(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := func(src sdk.Source) *Source {
		c, err := Local(sdk.Plugin{Spec: sdk.Spec{Name: "seq", Version: "0", Summary: "test", Source: &sdk.Stage{Summary: "s"}},
			NewSource: func() sdk.Source { return src }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Kill)
		return c.Source()
	}
	src := start(seqSource{})
	// Before Open: a formatter depends on the position alone.
	got, err := src.FormatPosition(ctx, binary.BigEndian.AppendUint64(nil, 42))
	if err != nil || got != "record 42" {
		t.Fatalf("FormatPosition = %q, %v; want record 42", got, err)
	}
	if _, err := src.FormatPosition(ctx, record.Position("xyz")); err == nil || errors.Is(err, ErrNoFormat) {
		t.Fatalf("FormatPosition of a foreign position: %v, want the plugin's error", err)
	}
	if _, err := start(plainSource{}).FormatPosition(ctx, record.Position("p")); !errors.Is(err, ErrNoFormat) {
		t.Fatalf("FormatPosition of a source without a formatter: %v, want ErrNoFormat", err)
	}
}
