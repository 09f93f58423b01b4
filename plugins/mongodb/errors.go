package mongodb

import (
	"errors"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/auth"

	"github.com/sluicehq/sluice/sdk"
)

// Server error codes no retry can fix.
var permanentCodes = []int{
	13,    // Unauthorized: the user may not open a change stream here
	18,    // AuthenticationFailed
	10334, // BSONObjectTooLarge: a change event over 16 MB the server cannot split
	40573, // change streams are only supported on replica sets and sharded clusters
}

// classify marks the errors no retry can fix as permanent (sdk.ErrPermanent): an authentication failure
// (wrong credentials, or a mechanism the server does not offer), a user without the privileges to watch,
// a deployment that cannot run change streams, an event too large to split. Everything else keeps its
// class: network errors and elections are transient.
func classify(err error) error {
	if err == nil || sdk.IsPermanent(err) {
		return err
	}
	if errors.As(err, new(*auth.Error)) {
		return sdk.Permanent(err)
	}
	var se mongo.ServerError
	if errors.As(err, &se) {
		for _, code := range permanentCodes {
			if se.HasErrorCode(code) {
				return sdk.Permanent(err)
			}
		}
	}
	return err
}
