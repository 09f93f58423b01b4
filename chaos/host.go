package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// host runs `sluice run` on the harness's connector file, one process at a time, each run logging (JSON)
// to its own file in dir: host-01.log, host-02.log, …
type host struct {
	bin, dir string

	mu       sync.Mutex
	runs     int
	proc     *proc // the current process
	intended bool  // the harness killed or stopped the current process
	logs     []string
}

// proc is one host process.
type proc struct {
	cmd     *exec.Cmd
	log     string
	done    chan struct{} // closed when it exited
	err     error         // how it exited, once done is closed
	started bool          // its log says a pipeline started: plugin discovery is over
}

func newHost(bin, dir string) *host { return &host{bin: bin, dir: dir} }

// start starts a new host process. The caller holds h.mu.
func (h *host) start() error {
	h.runs++
	path := filepath.Join(h.dir, fmt.Sprintf("host-%02d.log", h.runs))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(h.bin, "sluice"), "run", "--data-dir", "state", "--log-format", "json", "chaos.yaml")
	cmd.Dir, cmd.Stdout, cmd.Stderr = h.dir, f, f
	// The host dies with the harness; its plugins die with the host.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	p := &proc{cmd: cmd, log: path, done: make(chan struct{})}
	h.proc, h.intended = p, false
	h.logs = append(h.logs, path)
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return nil
}

// Start starts the first host process.
func (h *host) Start() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.start()
}

// Pid is the running host's process id.
func (h *host) Pid() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.proc.cmd.Process.Pid
}

// Crash kills the host with SIGKILL (its plugins die with it: parent-death signal) and starts it again at
// once, as a supervisor would. It returns the killed pid.
func (h *host) Crash() (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.proc
	h.intended = true
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	return p.cmd.Process.Pid, h.start()
}

// Stop asks the host to drain (SIGTERM) and waits up to grace for it to exit, then kills it. It reports
// how the process ended when that was not a clean exit.
func (h *host) Stop(grace time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.proc
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		return nil // stopped before, or exited by itself (Revive reports that)
	default:
	}
	h.intended = true
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("sluice (pid %d) had not exited %s after SIGTERM; killed it", p.cmd.Process.Pid, grace)
	}
	if p.err != nil {
		return fmt.Errorf("sluice (pid %d) after SIGTERM: %v", p.cmd.Process.Pid, p.err)
	}
	return nil
}

// Revive restarts the host when it exited without the harness killing or stopping it, which a host
// running an endless pipeline with `retry: forever` never should. It returns a description of that exit,
// or "" when the host is running.
func (h *host) Revive() (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.proc
	select {
	case <-p.done:
	default:
		return "", nil
	}
	if h.intended {
		return "", nil
	}
	what := fmt.Sprintf("sluice (pid %d) exited by itself (%v); log %s", p.cmd.Process.Pid, p.err, h.logs[len(h.logs)-1])
	return what, h.start()
}

// Logs returns the log files of every host process so far.
func (h *host) Logs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.logs...)
}

// Plugins returns the running plugin processes of the host by plugin name (the binary's name in
// bin/plugins): the host's children whose executable is there. It returns none until the host has started
// a pipeline: before that its children are the plugins it starts briefly to read their specs (discovery).
// Killing one of those makes sluice skip the plugin and exit 2, "plugin has no binary", which is not what
// this harness tests; see README "Reliability".
func (h *host) Plugins() map[string][]int {
	h.mu.Lock()
	p := h.proc
	if !p.started {
		b, _ := os.ReadFile(p.log)
		p.started = bytes.Contains(b, []byte(`"msg":"pipeline started"`))
	}
	started := p.started
	h.mu.Unlock()
	if !started {
		return nil
	}
	pid := p.cmd.Process.Pid
	dir := filepath.Join(h.bin, "plugins")
	out := map[string][]int{}
	for _, c := range children(pid) {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", c))
		if err != nil || filepath.Dir(exe) != dir {
			continue // exited (a zombie has no exe), or not a plugin
		}
		out[filepath.Base(exe)] = append(out[filepath.Base(exe)], c)
	}
	return out
}

// children returns the pids of the processes whose parent is pid, from /proc.
func children(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// After the command name, which is in parentheses and may hold spaces: state, then ppid.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 || i+2 > len(stat) {
			continue
		}
		fields := strings.Fields(string(stat[i+2:]))
		if len(fields) > 1 && fields[0] != "Z" && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}
