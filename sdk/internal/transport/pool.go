package transport

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
)

// bufferPool is the gRPC buffer pool for plugin connections. gRPC's default pool zeroes every buffer it
// hands out; on a connection that moves hundreds of megabytes a second that zeroing was the largest single
// cost in the host's profile (18% of CPU). Every buffer gRPC takes from a pool is filled before it is read,
// so this pool hands buffers out as they were returned. Sizes are powers of two from 256 B to 4 MiB;
// larger buffers are allocated and left to the garbage collector.
type bufferPool struct {
	tiers [minTier + numTiers]sync.Pool
}

const (
	minTier  = 8  // 256 B
	numTiers = 15 // up to 2^22 = 4 MiB
)

var sharedPool = &bufferPool{}

var setDefaultPool sync.Once

// UseBufferPool makes the non-zeroing buffer pool gRPC's default in this process, for the buffers that
// per-connection options do not reach. sdk.Serve calls it in plugin processes; the host calls it before it
// connects to plugins. It affects every gRPC connection of the process.
func UseBufferPool() {
	setDefaultPool.Do(func() { experimental.SetDefaultBufferPool(sharedPool) })
}

var _ mem.BufferPool = sharedPool

func tierOf(size int) int {
	if size <= 1<<minTier {
		return minTier
	}
	return bits.Len(uint(size - 1))
}

// Get returns a buffer of length size. Its contents are undefined.
func (p *bufferPool) Get(size int) *[]byte {
	t := tierOf(size)
	if t >= minTier+numTiers {
		b := make([]byte, size)
		return &b
	}
	if b, ok := p.tiers[t].Get().(*[]byte); ok {
		*b = (*b)[:size]
		return b
	}
	b := make([]byte, size, 1<<t)
	return &b
}

// Put returns a buffer obtained from Get.
func (p *bufferPool) Put(b *[]byte) {
	c := cap(*b)
	if c == 0 || c&(c-1) != 0 { // not one of ours (or from the oversize path)
		return
	}
	t := bits.Len(uint(c)) - 1
	if t < minTier || t >= minTier+numTiers {
		return
	}
	*b = (*b)[:0]
	p.tiers[t].Put(b)
}
