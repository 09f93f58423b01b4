package mongodb

import "go.mongodb.org/mongo-driver/v2/mongo"

// CursorID returns the server-side cursor id of the source's change stream, for tests that kill it.
func CursorID(s *Source) int64 { return s.stream.ID() }

func mongoErr(code int32, labels []string) error {
	return mongo.CommandError{Code: code, Labels: labels, Message: "test"}
}
