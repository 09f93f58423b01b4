//go:build !linux

package protocol

import (
	"os"
	"syscall"
)

// deathSignal returns nil where the kernel has no parent-death signal; the SDK's orphan check ends the
// plugin instead.
func deathSignal() *syscall.SysProcAttr { return nil }

// killGroup kills the plugin process (without a process group of its own, its children are left alone).
func killGroup(p *os.Process) { _ = p.Kill() }
