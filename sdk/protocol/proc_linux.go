package protocol

import "syscall"

// deathSignal asks the kernel to kill the plugin when the host dies.
func deathSignal() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
