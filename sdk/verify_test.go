package sdk_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
)

// verifySink holds n keys and answers Verify with them, in chunks, filtered by req.Keys.
type verifySink struct {
	sdk.UnimplementedSink
	n     int
	got   *sdk.VerifyRequest
	fails error
}

func (s *verifySink) Verify(_ context.Context, req sdk.VerifyRequest, emit func([]record.Record) error) (sdk.VerifyResult, error) {
	*s.got = req
	if s.fails != nil {
		return sdk.VerifyResult{}, s.fails
	}
	want := map[string]bool{}
	for _, k := range req.Keys {
		want[string(k)] = true
	}
	var chunk []record.Record
	for i := range s.n {
		key := fmt.Sprintf("k%05d", i)
		if len(want) > 0 && !want[key] {
			continue
		}
		r := record.Record{Key: []byte(key), Payload: bytes.Repeat([]byte{'x'}, 300)}
		if i%10 == 0 {
			r = record.Record{Key: []byte(key), Op: record.OpDelete}
		}
		chunk = append(chunk, r)
		if len(chunk) == 1000 {
			if err := emit(chunk); err != nil {
				return sdk.VerifyResult{}, err
			}
			chunk = chunk[:0]
		}
	}
	if err := emit(chunk); err != nil {
		return sdk.VerifyResult{}, err
	}
	return sdk.VerifyResult{Position: record.Position("p9"), Time: time.Unix(1700000000, 5), Destination: "orders"}, nil
}

// TestVerifyRoundTrip checks that a sink's Verify reaches the host whole: every record (more than one
// message's worth), deletions, the request's fields, the result, a plugin error with its class, and
// ErrNoVerify for a stage without a Verifier.
func TestVerifyRoundTrip(t *testing.T) {
	var got sdk.VerifyRequest
	impl := &verifySink{n: 5000, got: &got}
	p := sdk.Plugin{Spec: sdk.Spec{Name: "v", Version: "0", Summary: "test", Sink: &sdk.Stage{Summary: "s"}},
		NewSink: func() sdk.Sink { return impl }}
	c, err := protocol.Local(p)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	keys, deleted := map[string]bool{}, 0
	res, err := c.Sink().Verify(ctx, protocol.VerifyRequest{Pipeline: "p", Settings: map[string]any{"topic": "orders"}, Routes: []string{"a", "b"}},
		func(recs []record.Record) error {
			for _, r := range recs {
				if keys[string(r.Key)] {
					return fmt.Errorf("key %s twice", r.Key)
				}
				keys[string(r.Key)] = true
				if r.Op == record.OpDelete {
					deleted++
					if r.Payload != nil {
						return fmt.Errorf("deleted key %s has a payload", r.Key)
					}
				} else if len(r.Payload) != 300 {
					return fmt.Errorf("key %s: payload of %d bytes", r.Key, len(r.Payload))
				}
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 5000 || deleted != 500 {
		t.Fatalf("got %d keys, %d deleted; want 5000, 500", len(keys), deleted)
	}
	if string(res.Position) != "p9" || res.Time.UnixNano() != 1700000000_000000005 || res.Destination != "orders" {
		t.Fatalf("result %+v", res)
	}
	if got.Pipeline != "p" || got.Settings["topic"] != "orders" || len(got.Routes) != 2 || got.Routes[1] != "b" || got.Logger == nil {
		t.Fatalf("the plugin got %+v", got)
	}

	n := 0
	if _, err := c.Sink().Verify(ctx, protocol.VerifyRequest{Keys: [][]byte{[]byte("k00003"), []byte("k04000")}},
		func(recs []record.Record) error { n += len(recs); return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 2 || len(got.Keys) != 2 || string(got.Keys[1]) != "k04000" {
		t.Fatalf("a re-check of 2 keys returned %d records (the plugin got keys %q)", n, got.Keys)
	}

	impl.fails = sdk.InvalidSettings(errors.New("topic orders does not exist"))
	_, err = c.Sink().Verify(ctx, protocol.VerifyRequest{}, func([]record.Record) error { return nil })
	if !errors.Is(err, sdk.ErrInvalidSettings) || err.Error() != "topic orders does not exist" {
		t.Fatalf("a plugin's error arrived as %v", err)
	}

	plain := sdk.Plugin{Spec: sdk.Spec{Name: "p", Version: "0", Summary: "test", Sink: &sdk.Stage{Summary: "s"}},
		NewSink: func() sdk.Sink { return &slowSink{slowStage: &slowStage{}} }}
	c2, err := protocol.Local(plain)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Kill()
	if _, err := c2.Sink().Verify(ctx, protocol.VerifyRequest{}, func([]record.Record) error { return nil }); !errors.Is(err, protocol.ErrNoVerify) {
		t.Fatalf("a sink without Verifier: %v, want ErrNoVerify", err)
	}
}

func TestVerifyRequestKeySet(t *testing.T) {
	if set := (sdk.VerifyRequest{}).KeySet(); set != nil {
		t.Errorf("KeySet without keys = %v, want nil (every key)", set)
	}
	set := sdk.VerifyRequest{Keys: [][]byte{[]byte("a"), []byte(""), []byte("a")}}.KeySet()
	if len(set) != 2 || !set["a"] || !set[""] || set["b"] {
		t.Errorf("KeySet = %v, want a and the empty key", set)
	}
}
