// Package transport is the gRPC plumbing shared by the two ends of a plugin connection: the plugin side
// (package sdk) and the host side (package protocol). Plugin authors never see it: it holds the go-plugin
// handshake, the gRPC server and dial options, the buffer pool and batch codec those options install, and
// an in-memory listener for plugins served in the host's process.
//
// # Experimental gRPC APIs
//
// Every experimental gRPC API the SDK uses is used here, for the throughput of record batches, and nowhere
// else:
//
//   - google.golang.org/grpc/mem (BufferPool, BufferSlice, SliceBuffer) and the experimental package's
//     BufferPool, WithBufferPool and SetDefaultBufferPool: gRPC's default pool zeroes every buffer it hands
//     out, which was the largest single cost in the host's profile (18% of CPU at hundreds of megabytes a
//     second). pool.go hands buffers out as they were returned.
//   - encoding.CodecV2 with grpc.ForceServerCodecV2 and grpc.ForceCodecV2: the batch codec (codec.go)
//     writes a batch's record data to the wire without copying it into a marshalling buffer and reads it
//     with one copy instead of two. The bytes on the wire are ordinary protobuf.
//
// If a gRPC release changes them, only this package changes; the wire does not.
package transport
