package sdktest

import (
	"bytes"
	"sync"
)

// Output collects what a plugin writes — its log through a logger built on it, or a sink's output — for a
// test to inspect. It is safe for concurrent use: the plugin writes from its goroutines while the test
// reads. The zero value is ready to use.
type Output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

// String returns everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}
