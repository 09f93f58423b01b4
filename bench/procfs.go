package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ, 100 on every Linux architecture Go
// supports (the kernel scales its own clock to it for user space).
const clockTick = 10 * time.Millisecond

// procStat is what the harness reads of /proc/PID/stat.
type procStat struct {
	Comm  string
	State byte
	PPID  int
	// CPU is utime + stime: the process's own user and system time (its threads', not its children's).
	CPU time.Duration
}

// parseStat parses the contents of /proc/PID/stat. The command name is in parentheses and may hold spaces
// and parentheses itself, so the fields are counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("/proc stat: no command name in %q", clip(b))
	}
	// After ") ": state(3) ppid(4) pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15).
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("/proc stat: %d fields after the command name, want at least 13: %q", len(f), clip(b))
	}
	if len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("/proc stat: state %q is not one letter", f[0])
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("/proc stat: ppid %q: %w", f[1], err)
	}
	var ticks [2]uint64
	for i, s := range f[11:13] {
		if ticks[i], err = strconv.ParseUint(s, 10, 64); err != nil {
			return procStat{}, fmt.Errorf("/proc stat: field %d (%q): %w", 14+i, s, err)
		}
	}
	return procStat{Comm: string(b[open+1 : end]), State: f[0][0], PPID: ppid,
		CPU: time.Duration(ticks[0]+ticks[1]) * clockTick}, nil
}

// procMem is what the harness reads of /proc/PID/status, in bytes.
type procMem struct {
	// HWM is VmHWM, the peak resident set size; RSS is VmRSS, the resident set size now; Anon is RssAnon,
	// the part of RSS that is the process's own memory (heap, stacks), not pages of files it maps (its
	// binary's code and read-only data, which the kernel may map whole and shares with the page cache).
	HWM, RSS, Anon int64
}

// parseStatus parses VmHWM, VmRSS and RssAnon (in kB) out of the contents of /proc/PID/status. A zombie or a
// kernel thread has none of them: that is an error.
func parseStatus(b []byte) (procMem, error) {
	var m procMem
	var seen int
	for line := range bytes.Lines(b) {
		var dst *int64
		switch {
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			dst = &m.HWM
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			dst = &m.RSS
		case bytes.HasPrefix(line, []byte("RssAnon:")):
			dst = &m.Anon
		default:
			continue
		}
		_, value, _ := bytes.Cut(line, []byte(":"))
		f := strings.Fields(string(value))
		if len(f) != 2 || f[1] != "kB" {
			return procMem{}, fmt.Errorf("/proc status: want %q, got %q", "N kB", strings.TrimSpace(string(line)))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return procMem{}, fmt.Errorf("/proc status: %s: %w", strings.TrimSpace(string(line)), err)
		}
		*dst = kb * 1024
		seen++
	}
	if seen != 3 {
		return procMem{}, fmt.Errorf("/proc status: no VmHWM, VmRSS and RssAnon (a zombie or a kernel thread)")
	}
	return m, nil
}

// parseChildren parses /proc/PID/task/TID/children: pids separated by spaces.
func parseChildren(b []byte) ([]int, error) {
	var out []int
	for _, s := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(s)
		if err != nil {
			return nil, fmt.Errorf("/proc children: %q: %w", s, err)
		}
		out = append(out, pid)
	}
	return out, nil
}

// descendants returns the living descendants of pid, children before grandchildren, from the children
// lists of each of their threads (a child is listed under the thread that forked it).
func descendants(pid int) []int {
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", p))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue // the thread or the process exited
			}
			kids, err := parseChildren(b)
			if err != nil {
				continue
			}
			out = append(out, kids...)
			queue = append(queue, kids...)
		}
	}
	return out
}

func clip(b []byte) []byte {
	if len(b) > 120 {
		return b[:120]
	}
	return b
}
