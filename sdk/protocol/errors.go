package protocol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/internal/transport"
)

// Errors returned by the stage clients carry the plugin's message without transport noise, and the
// plugin's class (see sdk.ErrPermanent): test them with errors.Is, never by their text.
//
//	sdk.ErrInvalidSettings   the plugin says its settings are wrong
//	sdk.ErrPermanent         the plugin says no retry can help (also: a breach of the protocol)
//	sdk.ErrHistoryLost       (with sdk.ErrPermanent) the source's stored position can no longer be read
//	ErrConnectionLost        the connection broke: the plugin process exited or stopped answering
//	ErrMessageTooLarge       a message exceeded the gRPC limit (a permanent error)
//	context.Canceled,
//	context.DeadlineExceeded the call was cancelled or timed out
//	anything else            transient: the plugin failed and a retry may succeed
var (
	// ErrConnectionLost: the connection to the plugin broke before the call completed. The plugin's
	// process has most likely exited: Conn.Exit says how.
	ErrConnectionLost = errors.New("the connection to the plugin was lost")
	// ErrMessageTooLarge: a batch (or a single record) did not fit the gRPC message limit.
	ErrMessageTooLarge = errors.New("message larger than the limit between sluice and its plugins")
	// ErrStreamEnded is returned by a stream's Send (or Ack) when the plugin has already ended the
	// stream: the reason is what the stream's receiving side (Recv, RecvAck) returns.
	ErrStreamEnded = errors.New("the plugin ended the stream")
)

// sendErr is fromWire for a stream's send side, where gRPC reports an aborted stream as io.EOF.
func sendErr(err error) error {
	if err == io.EOF {
		return ErrStreamEnded
	}
	return fromWire(err)
}

// remoteError is a plugin's error as the host sees it: the plugin's message and its class.
type remoteError struct {
	msg   string
	class error // nil: transient
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.class }

// fromWire turns what a gRPC call returned into the error the host acts on. io.EOF (the normal end of a
// stream) and nil pass through.
func fromWire(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return &remoteError{msg: err.Error()}
	}
	msg := st.Message()
	switch st.Code() {
	case codes.InvalidArgument:
		return &remoteError{msg: msg, class: sdk.ErrInvalidSettings}
	case codes.FailedPrecondition:
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == transport.ErrorDomain && info.Reason == transport.ReasonHistoryLost {
				return &remoteError{msg: msg, class: errors.Join(sdk.ErrHistoryLost, sdk.ErrPermanent)}
			}
		}
		return &remoteError{msg: msg, class: sdk.ErrPermanent}
	case codes.Canceled:
		return context.Canceled
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: %w", msg, context.DeadlineExceeded)
	case codes.Unavailable:
		return fmt.Errorf("%w (%s)", ErrConnectionLost, msg)
	case codes.ResourceExhausted:
		if strings.Contains(msg, "larger than max") {
			return &remoteError{msg: fmt.Sprintf("%s: %s", ErrMessageTooLarge, msg),
				class: errors.Join(ErrMessageTooLarge, sdk.ErrPermanent)}
		}
	}
	return &remoteError{msg: msg}
}
