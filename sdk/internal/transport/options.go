package transport

import (
	"os"
	"strconv"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
)

// ProtocolVersion is the plugin protocol version (sdk.ProtocolVersion).
const ProtocolVersion = 1

// Handshake is the go-plugin handshake shared by the host and every plugin. A binary started without the
// magic cookie (for example by a user from a shell) prints a message and exits instead of serving.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "SLUICE_PLUGIN",
	MagicCookieValue: "b9f1c3e2-sluice-connector-plugin",
}

// Names under which a plugin binary serves its parts (go-plugin's plugin set keys): the spec, and one per
// stage kind (the kinds' names).
const (
	PartSpec   = "spec"
	PartSource = "source"
	PartBuffer = "buffer"
	PartSink   = "sink"
)

// EnvMaxMessageBytes names the environment variable through which the host tells a plugin the largest gRPC
// message it may send or receive.
const EnvMaxMessageBytes = "SLUICE_MAX_MESSAGE_BYTES"

// DefaultMaxMessageBytes is the default gRPC message limit: room for a 16 MiB MongoDB document, several
// times over, plus its envelope.
const DefaultMaxMessageBytes = 64 << 20

// MaxMessageBytes returns the gRPC message limit set by the host, or DefaultMaxMessageBytes.
func MaxMessageBytes() int {
	if n, err := strconv.Atoi(os.Getenv(EnvMaxMessageBytes)); err == nil && n > 0 {
		return n
	}
	return DefaultMaxMessageBytes
}

// The ErrorInfo detail that marks a FAILED_PRECONDITION status as sdk.ErrHistoryLost on the wire.
const (
	ErrorDomain       = "sluice"
	ReasonHistoryLost = "HISTORY_LOST"
)

// Flow-control windows and socket buffers sized for batches of hundreds of kilobytes: gRPC's defaults (64 KiB
// windows, 32 KiB buffers) make a 256 KiB batch wait for several window updates per message. A receiver
// may hold a window's worth of messages it has not read yet, on top of the pipeline's in-flight bytes:
// 1 MiB per stream (4 MiB per connection) moved as many records per second as 8 MiB (32 MiB) did on the
// generate → Kafka benchmark, with 12 MiB less in the host.
const (
	streamWindow = 1 << 20
	connWindow   = 4 << 20
	socketBuffer = 256 << 10
)

// ServerOptions are the gRPC server options a plugin serves with, for a message limit of maxMsg bytes.
func ServerOptions(maxMsg int) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxMsg), grpc.MaxSendMsgSize(maxMsg),
		grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow),
		grpc.ReadBufferSize(socketBuffer), grpc.WriteBufferSize(socketBuffer),
		experimental.BufferPool(sharedPool),
		grpc.ForceServerCodecV2(batchCodec{}),
	}
}

// DialOptions are the matching gRPC client options the host connects with.
func DialOptions(maxMsg int) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsg), grpc.MaxCallSendMsgSize(maxMsg),
			grpc.ForceCodecV2(batchCodec{})),
		grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithReadBufferSize(socketBuffer), grpc.WithWriteBufferSize(socketBuffer),
		experimental.WithBufferPool(sharedPool),
	}
}
