//go:build unix

package protocol

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// signalName names a signal as people write it: "SIGKILL".
func signalName(s syscall.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return n
	}
	return fmt.Sprintf("signal %d", int(s))
}
