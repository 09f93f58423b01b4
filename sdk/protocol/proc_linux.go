package protocol

import (
	"os"
	"syscall"
)

// deathSignal asks the kernel to kill the plugin when the host dies, and puts the plugin in a process group
// of its own so that a terminal's Ctrl-C reaches only the host, which then stops its plugins in order.
func deathSignal() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// killGroup sends SIGKILL to the plugin process and to its process group (deathSignal made it the group's
// leader): children it started die too and release the stdout and stderr pipes they inherited, which
// go-plugin reads to the end before it reaps the plugin. SIGKILL also ends a stopped (SIGSTOPped) process.
func killGroup(p *os.Process) {
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
	_ = p.Kill()
}
