package sdk

import (
	"errors"
	"fmt"
)

// The error classes a plugin returns. The host decides what a stage's error means by its class alone,
// never by its text or by how it travelled:
//
//   - an error wrapping ErrInvalidSettings: the stage's settings are wrong (a value out of range, a file
//     that does not exist). The pipeline fails at once; the message should name the setting.
//   - an error wrapping ErrPermanent: retrying cannot help (wrong credentials, a topic that does not exist,
//     a path that is not a directory, a record the destination will never accept and no dead-letter sink).
//     The pipeline fails at once, with the message.
//   - any other error is transient (a broker restarting, a connection reset): the host restarts the stage
//     from stored positions with backoff, and gives up only when the failure persists with no progress
//     (unless the pipeline says retry: forever).
//
// Wrap once, where the error arises, and say what and where: "kafka: topic \"orders\" does not exist and
// auto_create_topics is false". A plugin never needs gRPC to report an error.
var (
	// ErrInvalidSettings marks an error that no retry can fix because the settings are wrong. Wrap it
	// (fmt.Errorf("%w: …", sdk.ErrInvalidSettings)) or use InvalidSettings. Settings.Decode errors wrap it.
	ErrInvalidSettings = errors.New("invalid settings")
	// ErrPermanent marks an error that no retry can fix although the settings are well formed. Use
	// Permanent to mark an error without changing its message.
	ErrPermanent = errors.New("permanent error")
	// ErrHistoryLost marks a permanent error of a source whose stored position can no longer be read from
	// (a MongoDB resume token that has left the oplog): records are lost unless someone acts. The host
	// reports it as a history_lost alert. Use HistoryLost to mark an error.
	ErrHistoryLost = errors.New("history lost")
)

// Permanent marks err as permanent: errors.Is(Permanent(err), ErrPermanent) is true and its message is
// err's message. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return classified{err, ErrPermanent}
}

// Permanentf is Permanent(fmt.Errorf(format, args...)).
func Permanentf(format string, args ...any) error {
	return Permanent(fmt.Errorf(format, args...))
}

// HistoryLost marks err as permanent and as history lost (ErrHistoryLost) without changing its message.
// HistoryLost(nil) is nil.
func HistoryLost(err error) error {
	if err == nil {
		return nil
	}
	return classified{Permanent(err), ErrHistoryLost}
}

// InvalidSettings marks err as a settings error (ErrInvalidSettings) without changing its message.
// InvalidSettings(nil) is nil.
func InvalidSettings(err error) error {
	if err == nil {
		return nil
	}
	return classified{err, ErrInvalidSettings}
}

// classified is an error with a class added: the message is the error's own.
type classified struct {
	err   error
	class error
}

func (c classified) Error() string   { return c.err.Error() }
func (c classified) Unwrap() []error { return []error{c.err, c.class} }

// IsPermanent reports whether err is of a class that no retry can fix: ErrInvalidSettings or
// ErrPermanent.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrPermanent) || errors.Is(err, ErrInvalidSettings)
}
