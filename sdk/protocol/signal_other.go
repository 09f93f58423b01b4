//go:build !unix

package protocol

import (
	"fmt"
	"syscall"
)

// signalName names a signal; without Unix signal names it gives the number.
func signalName(s syscall.Signal) string { return fmt.Sprintf("signal %d", int(s)) }
