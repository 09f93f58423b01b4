package transport

import "testing"

func TestBufferPool(t *testing.T) {
	for _, size := range []int{0, 1, 255, 256, 257, 16 << 10, 1<<20 + 1, 4 << 20, 4<<20 + 1} {
		b := sharedPool.Get(size)
		if len(*b) != size {
			t.Fatalf("Get(%d) has length %d", size, len(*b))
		}
		for i := range *b {
			(*b)[i] = 0xaa
		}
		sharedPool.Put(b)
		again := sharedPool.Get(size)
		if len(*again) != size {
			t.Fatalf("Get(%d) after Put has length %d", size, len(*again))
		}
		sharedPool.Put(again)
	}
	// A foreign buffer (not a power of two) is not pooled.
	odd := make([]byte, 300)
	sharedPool.Put(&odd)
}
