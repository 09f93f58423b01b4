package transport

import (
	"context"
	"net"
	"sync"
)

// PipeListener is a net.Listener in memory: DialContext makes a synchronous in-memory connection
// (net.Pipe), hands one end to Accept and returns the other. The host serves in-process plugins on one.
type PipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

// ListenPipe returns a new PipeListener.
func ListenPipe() *PipeListener {
	return &PipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

// Accept waits for the next connection. After Close it fails with net.ErrClosed.
func (l *PipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: pipeNetwork, Addr: pipeAddr{}, Err: net.ErrClosed}
	}
}

// Close stops the listener: Accept and DialContext fail from then on. Connections already made stay open.
func (l *PipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr returns the listener's address, which names nothing outside the process.
func (l *PipeListener) Addr() net.Addr { return pipeAddr{} }

// DialContext connects to the listener: it waits until Accept takes the other end, the listener is
// closed, or ctx ends.
func (l *PipeListener) DialContext(ctx context.Context) (net.Conn, error) {
	select {
	case <-l.done:
		return nil, dialError(net.ErrClosed)
	default:
	}
	client, server := net.Pipe()
	var err error
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		err = net.ErrClosed
	case <-ctx.Done():
		err = ctx.Err()
	}
	client.Close()
	server.Close()
	return nil, dialError(err)
}

func dialError(err error) error {
	return &net.OpError{Op: "dial", Net: pipeNetwork, Addr: pipeAddr{}, Err: err}
}

const pipeNetwork = "pipe"

type pipeAddr struct{}

func (pipeAddr) Network() string { return pipeNetwork }
func (pipeAddr) String() string  { return "in-process" }
