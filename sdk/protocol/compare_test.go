package protocol

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// seqBuffer orders its positions, 8-byte sequence numbers, as bytes.
type seqBuffer struct{ sdk.UnimplementedBuffer }

func (seqBuffer) ComparePositions(a, b record.Position) (int, error) {
	if len(a) != 8 || len(b) != 8 {
		return 0, errors.New("want 8-byte positions")
	}
	return bytes.Compare(a, b) * 7, nil // any sign will do; the SDK sends -1, 0 or 1
}

type plainBuffer struct{ sdk.UnimplementedBuffer }

func TestComparePositions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := func(buf sdk.Buffer) *Buffer {
		c, err := Local(sdk.Plugin{Spec: sdk.Spec{Name: "seq", Version: "0", Summary: "test", Buffer: &sdk.Stage{Summary: "b"}},
			NewBuffer: func() sdk.Buffer { return buf }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Kill)
		return c.Buffer()
	}
	buf := start(seqBuffer{})
	pos := func(n byte) record.Position { return record.Position{0, 0, 0, 0, 0, 0, 0, n} }
	for _, c := range []struct {
		a, b record.Position
		want int
	}{{pos(1), pos(2), -1}, {pos(2), pos(2), 0}, {pos(3), pos(2), 1}, {nil, nil, 0}} {
		// Before Open: a comparer depends on the positions alone.
		got, err := buf.ComparePositions(ctx, c.a, c.b)
		if err != nil || got != c.want {
			t.Errorf("ComparePositions(%x, %x) = %d, %v; want %d", c.a, c.b, got, err, c.want)
		}
	}
	if _, err := buf.ComparePositions(ctx, record.Position("x"), pos(1)); err == nil || errors.Is(err, ErrNoCompare) {
		t.Errorf("ComparePositions of a foreign position: %v, want the plugin's error", err)
	}
	if _, err := start(plainBuffer{}).ComparePositions(ctx, nil, nil); !errors.Is(err, ErrNoCompare) {
		t.Errorf("ComparePositions of a buffer without a comparer: %v, want ErrNoCompare", err)
	}
}
