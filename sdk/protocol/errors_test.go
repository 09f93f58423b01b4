package protocol

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// failSink fails Open or Write with the errors it is given.
type failSink struct {
	sdk.UnimplementedSink
	open, write error
}

func (s *failSink) Open(context.Context, sdk.OpenRequest) error { return s.open }
func (s *failSink) Write(context.Context, record.Batch) error   { return s.write }

func TestErrorClassesCrossTheWire(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		is       error // the class the host sees (nil: transient)
		wantText string
	}{
		{"invalid settings", fmt.Errorf("%w: path: not a directory", sdk.ErrInvalidSettings), sdk.ErrInvalidSettings, "invalid settings: path: not a directory"},
		{"invalid settings, marked", sdk.InvalidSettings(errors.New("port: out of range")), sdk.ErrInvalidSettings, "port: out of range"},
		{"permanent", sdk.Permanentf("kafka: topic %q does not exist", "orders"), sdk.ErrPermanent, `kafka: topic "orders" does not exist`},
		{"permanent, wrapped", fmt.Errorf("redis: auth: %w", sdk.Permanent(errors.New("WRONGPASS"))), sdk.ErrPermanent, "redis: auth: WRONGPASS"},
		{"transient", errors.New("dial tcp 127.0.0.1:9: connection refused"), nil, "dial tcp 127.0.0.1:9: connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := Local(sdk.Plugin{
				Spec:    sdk.Spec{Name: "fail", Version: "1", Summary: "fails", Sink: &sdk.Stage{Summary: "fails"}},
				NewSink: func() sdk.Sink { return &failSink{open: tc.err} },
			})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Kill()
			err = conn.Sink().Open(context.Background(), OpenRequest{Pipeline: "p"})
			if err == nil {
				t.Fatal("Open succeeded")
			}
			if err.Error() != tc.wantText {
				t.Errorf("message %q, want %q", err.Error(), tc.wantText)
			}
			if strings.Contains(err.Error(), "rpc error") || strings.Contains(err.Error(), "desc =") {
				t.Errorf("message %q carries transport noise", err.Error())
			}
			for _, class := range []error{sdk.ErrInvalidSettings, sdk.ErrPermanent} {
				if got := errors.Is(err, class); got != (class == tc.is) {
					t.Errorf("errors.Is(err, %v) = %v", class, got)
				}
			}
			if got := sdk.IsPermanent(err); got != (tc.is != nil) {
				t.Errorf("sdk.IsPermanent = %v", got)
			}
		})
	}
}

// A sink that rejects a record when the pipeline has no dead-letter sink fails the stream permanently:
// retrying would reject it again.
func TestRejectWithoutDeadLetterIsPermanent(t *testing.T) {
	conn, err := Local(sdk.Plugin{
		Spec: sdk.Spec{Name: "reject", Version: "1", Summary: "rejects", Sink: &sdk.Stage{Summary: "rejects"}},
		NewSink: func() sdk.Sink {
			return &failSink{write: &sdk.RejectError{Rejections: []sdk.Rejection{{Index: 0, Reason: "too large"}}}}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Kill()
	ctx := context.Background()
	sink := conn.Sink()
	if err := sink.Open(ctx, OpenRequest{Pipeline: "p"}); err != nil {
		t.Fatal(err)
	}
	out, err := sink.Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recs := []record.Record{{Position: record.Position("1"), Op: record.OpInsert, Payload: []byte("x")}}
	b := &Batch{Position: record.Position("1")}
	b.SetRecords(recs)
	if err := out.Send(b); err != nil && !errors.Is(err, ErrStreamEnded) {
		t.Fatal(err)
	}
	_, err = out.RecvAck()
	if !errors.Is(err, sdk.ErrPermanent) || !strings.Contains(err.Error(), "too large") || !strings.Contains(err.Error(), "dead-letter") {
		t.Fatalf("RecvAck = %v, want a permanent error naming the reason and the missing dead-letter sink", err)
	}
}

// A source's error marked sdk.HistoryLost reaches the host permanent and history-lost, with its message.
func TestHistoryLostCrossesTheWire(t *testing.T) {
	for _, tc := range []struct {
		err  error
		lost bool
	}{
		{sdk.HistoryLost(errors.New("mongodb: resume point no longer in the oplog")), true},
		{fmt.Errorf("opening: %w", sdk.HistoryLost(errors.New("mongodb: resume point no longer in the oplog"))), true},
		{sdk.Permanentf("mongodb: resume point no longer in the oplog"), false},
	} {
		conn, err := Local(sdk.Plugin{
			Spec:    sdk.Spec{Name: "fail", Version: "1", Summary: "fails", Sink: &sdk.Stage{Summary: "fails"}},
			NewSink: func() sdk.Sink { return &failSink{open: tc.err} },
		})
		if err != nil {
			t.Fatal(err)
		}
		err = conn.Sink().Open(context.Background(), OpenRequest{Pipeline: "p"})
		conn.Kill()
		if err == nil || err.Error() != tc.err.Error() {
			t.Fatalf("Open: %v, want %q", err, tc.err)
		}
		if !errors.Is(err, sdk.ErrPermanent) || errors.Is(err, sdk.ErrHistoryLost) != tc.lost {
			t.Errorf("%q: permanent %v, history lost %v, want true, %v", err, errors.Is(err, sdk.ErrPermanent),
				errors.Is(err, sdk.ErrHistoryLost), tc.lost)
		}
	}
	if sdk.HistoryLost(nil) != nil {
		t.Error("HistoryLost(nil) is not nil")
	}
}
