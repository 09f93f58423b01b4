package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// sampleEvery is how often the process tree's memory and CPU are read from /proc.
const sampleEvery = 50 * time.Millisecond

// stopGrace is how long a program stopped by the harness (SIGTERM) has to exit before it is killed.
const stopGrace = 30 * time.Second

// procPeak is what the sampler saw of one process of a run.
type procPeak struct {
	Name string
	Peak int64         // the highest VmHWM (else VmRSS) read, in bytes
	CPU  time.Duration // utime + stime at the last reading
}

// sampler reads the memory and CPU of a process and its descendants from /proc.
type sampler struct {
	root      int
	procs     map[int]*procPeak
	peakTotal int64 // the highest sum of VmRSS over the tree at one reading
	peakAnon  int64 // the highest sum of RssAnon over the tree at one reading
}

func newSampler(root int) *sampler { return &sampler{root: root, procs: map[int]*procPeak{}} }

// sample reads the tree once. A process is named by its executable's base name, read at every sample: a
// process the host has just forked runs the host's executable until its exec. One that exits between two
// readings keeps what the last reading saw.
func (s *sampler) sample() {
	var total, anon int64
	for _, pid := range append([]int{s.root}, descendants(s.root)...) {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			continue // exited already, or a zombie
		}
		p := s.procs[pid]
		if p == nil {
			p = &procPeak{}
			s.procs[pid] = p
		}
		p.Name = filepath.Base(exe)
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			if m, err := parseStatus(b); err == nil {
				p.Peak = max(p.Peak, m.HWM, m.RSS)
				total += m.RSS
				anon += m.Anon
			}
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if st, err := parseStat(b); err == nil {
				p.CPU = st.CPU
			}
		}
	}
	s.peakTotal = max(s.peakTotal, total)
	s.peakAnon = max(s.peakAnon, anon)
}

// byName returns the peak RSS per process name: the highest of the processes with that name (a plugin the
// host started twice, for its spec and to run it, is counted once).
func (s *sampler) byName() map[string]int64 {
	out := map[string]int64{}
	for _, p := range s.procs {
		out[p.Name] = max(out[p.Name], p.Peak)
	}
	return out
}

// cpu returns the CPU time of every process seen, at their last readings.
func (s *sampler) cpu() time.Duration {
	var t time.Duration
	for _, p := range s.procs {
		t += p.CPU
	}
	return t
}

// measurement is what one run of a program cost.
type measurement struct {
	// Wall is from just before exec until the program exited by itself or, for a program the harness stops
	// (done is given), until done reported the work complete.
	Wall time.Duration
	// CPU is user + system time of the program and every descendant: the wait4 rusage of the program
	// (which includes the children it reaped), or the sum of the last /proc readings when that is higher
	// (a descendant that outlived its parent is not in the rusage).
	CPU time.Duration
	// Peak is the peak RSS by process name (VmHWM, read every sampleEvery: growth in a process's last
	// sampleEvery is missed); PeakTotal the highest sum of VmRSS over the tree at one reading, PeakAnon
	// that of RssAnon.
	Peak                map[string]int64
	PeakTotal, PeakAnon int64
}

// measure runs cmd in its own process group and samples its tree until it exits. With done, it also calls
// done (in its own goroutine) and, once done returns nil, stops the program with SIGTERM. It kills the group
// when ctx ends or timeout passes, and always before it returns, so that no process of the run outlives it.
// A program that exits non-zero (or, with done, before done returned) is an error.
func measure(ctx context.Context, cmd *exec.Cmd, timeout time.Duration, done func(context.Context) error) (measurement, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return measurement{}, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	pid := cmd.Process.Pid
	killGroup := func(sig syscall.Signal) { _ = syscall.Kill(-pid, sig) }
	defer endGroup(pid)
	s := newSampler(pid)
	s.sample()
	exited := make(chan error, 1)
	var end time.Time
	go func() {
		err := cmd.Wait()
		end = time.Now()
		exited <- err
	}()
	var complete <-chan error
	var doneCtx context.Context
	if done != nil {
		var cancel context.CancelFunc
		doneCtx, cancel = context.WithCancel(ctx)
		defer cancel()
		ch := make(chan error, 1)
		go func() { ch <- done(doneCtx) }()
		complete = ch
	}
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var stoppedAt time.Time
	var waitErr error
loop:
	for {
		select {
		case <-tick.C:
			s.sample()
		case waitErr = <-exited:
			break loop
		case err := <-complete:
			complete = nil
			if err != nil {
				killGroup(syscall.SIGKILL)
				<-exited
				return measurement{}, err
			}
			stoppedAt = time.Now()
			killGroup(syscall.SIGTERM)
			deadline.Reset(stopGrace)
		case <-deadline.C:
			killGroup(syscall.SIGKILL)
			<-exited
			if !stoppedAt.IsZero() {
				return measurement{}, fmt.Errorf("%s had not exited %s after SIGTERM", filepath.Base(cmd.Path), stopGrace)
			}
			return measurement{}, fmt.Errorf("%s had not finished after %s (-timeout)", filepath.Base(cmd.Path), timeout)
		case <-ctx.Done():
			killGroup(syscall.SIGKILL)
			<-exited
			return measurement{}, ctx.Err()
		}
	}
	m := measurement{Wall: end.Sub(start), Peak: s.byName(), PeakTotal: s.peakTotal, PeakAnon: s.peakAnon}
	if !stoppedAt.IsZero() {
		m.Wall = stoppedAt.Sub(start)
	} else if done != nil {
		return m, fmt.Errorf("%s exited (%v) before its work was complete", filepath.Base(cmd.Path), waitErr)
	}
	// Not ru_maxrss: Linux sets it at exec to the peak of the memory the process had before (this harness's,
	// shared until the exec), so only the samples say what the program itself held.
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		m.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	m.CPU = max(m.CPU, s.cpu())
	var exit *exec.ExitError
	if waitErr != nil && !(errors.As(waitErr, &exit) && !stoppedAt.IsZero()) {
		return m, fmt.Errorf("%s: %w", filepath.Base(cmd.Path), waitErr)
	}
	return m, nil
}

// groupGone is how long endGroup waits for the processes of a group to be gone after SIGKILL.
const groupGone = 10 * time.Second

// endGroup kills what is left of process group pgid (a plugin that outlived its host) and waits until
// none of its processes is left, so that nothing of one run takes CPU from the next.
func endGroup(pgid int) {
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	for deadline := time.Now().Add(groupGone); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
	}
}
