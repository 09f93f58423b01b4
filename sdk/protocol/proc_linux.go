package protocol

import "syscall"

// deathSignal asks the kernel to kill the plugin when the host dies, and puts the plugin in a process group
// of its own so that a terminal's Ctrl-C reaches only the host, which then stops its plugins in order.
func deathSignal() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
