//go:build !linux

package protocol

import "syscall"

// deathSignal returns nil where the kernel has no parent-death signal; the SDK's orphan check ends the
// plugin instead.
func deathSignal() *syscall.SysProcAttr { return nil }
