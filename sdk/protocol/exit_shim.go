package protocol

// TEMPORARY shim until the protocol branch lands; not to be committed.

import (
	"fmt"
	"time"
)

type Exit struct {
	Code   int
	Signal string
	Panic  string
	Stderr []string
}

func (e *Exit) String() string { return fmt.Sprintf("exited with status %d", e.Code) }

func (c *Conn) Exit() *Exit {
	select {
	case <-c.done:
		return &Exit{Code: -1}
	default:
		return nil
	}
}

func (c *Conn) WaitExit(d time.Duration) *Exit {
	select {
	case <-c.done:
		return &Exit{Code: -1}
	case <-time.After(d):
		return nil
	}
}
