package mongodb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/auth"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

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

// defaultSelectionTimeout is the driver's serverSelectionTimeoutMS when the uri does not set it.
const defaultSelectionTimeout = 30 * time.Second

// unreachableError is the driver's server selection error described for users (see unreachable). It is
// transient, and does not wrap the driver's error: that one wraps context.DeadlineExceeded for the
// driver's own timeout, which the host would take for the end of its call.
type unreachableError struct{ msg string }

func (e *unreachableError) Error() string { return e.msg }

// unreachable describes err when it is the driver giving up on finding a server at serverSelectionTimeoutMS
// (timeout): which servers it tried and what each last did, without the driver's topology dump. Other
// errors, and any error once ctx has ended (the host then reports its own deadline), are returned
// unchanged.
func unreachable(ctx context.Context, err error, timeout time.Duration) error {
	var se topology.ServerSelectionError
	if !errors.As(err, &se) || ctx.Err() != nil {
		return err // not the driver's timeout, or the caller's deadline: the host says which
	}
	var servers []string
	for _, srv := range se.Desc.Servers {
		servers = append(servers, fmt.Sprintf("%s (%s)", srv.Addr, lastError(srv.LastError)))
	}
	if len(servers) == 0 {
		servers = []string{"none known"}
	}
	return &unreachableError{msg: fmt.Sprintf("no MongoDB server could be used within serverSelectionTimeoutMS (%s); servers tried: %s: check uri (hosts, port, tls, replicaSet)",
		timeout, strings.Join(servers, ", "))}
}

// lastError says in a few words what a server last did, from the driver's error for it.
func lastError(err error) string {
	var (
		dns *net.DNSError
		op  *net.OpError
		ne  net.Error
	)
	switch {
	case err == nil:
		return "no answer"
	case errors.As(err, &dns):
		return "the host does not resolve: " + dns.Err
	case errors.As(err, &ne) && ne.Timeout():
		return "no answer in time"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET):
		return "closed the connection: is it a MongoDB server?"
	case errors.As(err, &op) && op.Err != nil:
		return op.Err.Error()
	}
	return err.Error()
}
