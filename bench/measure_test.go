package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the processes measured: with BENCH_TEST_CHILD set it is a child that touches
// childMiB of memory, starts a grandchild doing the same when BENCH_TEST_SPAWN is set, writes a file named
// by its pid into BENCH_TEST_READY and then waits for SIGTERM (mode "hold") or exits 3 (mode "fail").
const childMiB = 64

func TestMain(m *testing.M) {
	if mode := os.Getenv("BENCH_TEST_CHILD"); mode != "" {
		child(mode)
	}
	os.Exit(m.Run())
}

var held []byte

func child(mode string) {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	held = make([]byte, childMiB<<20)
	for i := range held {
		if i%4096 == 0 {
			held[i] = 1
		}
	}
	if os.Getenv("BENCH_TEST_SPAWN") != "" {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "BENCH_TEST_SPAWN=")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			os.Exit(4)
		}
	}
	if mode == "fail" {
		os.Exit(3)
	}
	_ = os.WriteFile(filepath.Join(os.Getenv("BENCH_TEST_READY"), strconv.Itoa(os.Getpid())), nil, 0o644)
	<-term
	os.Exit(0)
}

func childCmd(t *testing.T, mode string, spawn bool) (*exec.Cmd, string) {
	ready := t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "BENCH_TEST_CHILD="+mode, "BENCH_TEST_READY="+ready)
	if spawn {
		cmd.Env = append(cmd.Env, "BENCH_TEST_SPAWN=1")
	}
	return cmd, ready
}

// waitReady waits until n processes have written their ready files.
func waitReady(ctx context.Context, dir string, n int) error {
	for {
		if entries, _ := os.ReadDir(dir); len(entries) >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestSampler reads a real process and its child, each holding childMiB.
func TestSampler(t *testing.T) {
	cmd, ready := childCmd(t, "hold", true)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := waitReady(ctx, ready, 2); err != nil {
		t.Fatal(err)
	}
	s := newSampler(cmd.Process.Pid)
	s.sample()
	if len(s.procs) != 2 {
		t.Fatalf("sampled %d processes, want the child and its own child: %+v", len(s.procs), s.procs)
	}
	for pid, p := range s.procs {
		if p.Name != filepath.Base(os.Args[0]) || p.Peak < childMiB<<20 {
			t.Errorf("process %d: %+v, want name %s and a peak of at least %d MiB", pid, p, filepath.Base(os.Args[0]), childMiB)
		}
	}
	if s.peakTotal < 2*childMiB<<20 {
		t.Errorf("peak of the tree %d MiB, want at least %d", s.peakTotal>>20, 2*childMiB)
	}
	// What the children hold is heap they wrote to: anonymous memory, not pages of their binary.
	if s.peakAnon < 2*childMiB<<20 || s.peakAnon > s.peakTotal {
		t.Errorf("anonymous peak of the tree %d MiB, want at least %d and at most the RSS peak %d", s.peakAnon>>20, 2*childMiB, s.peakTotal>>20)
	}
	if by := s.byName(); len(by) != 1 {
		t.Errorf("byName = %v, want one name", by)
	}
}

// TestMeasureStops measures a program that runs until stopped: done reports the work complete, measure
// stops the program with SIGTERM and leaves no process of its group behind.
func TestMeasureStops(t *testing.T) {
	cmd, ready := childCmd(t, "hold", true)
	m, err := measure(context.Background(), cmd, time.Minute, func(ctx context.Context) error { return waitReady(ctx, ready, 2) })
	if err != nil {
		t.Fatal(err)
	}
	if m.Wall <= 0 || m.CPU <= 0 || m.Peak[filepath.Base(os.Args[0])] <= 0 {
		t.Errorf("measurement %+v: want wall time, CPU and a peak of the program", m)
	}
	if m.PeakAnon <= 0 || m.PeakAnon > m.PeakTotal {
		t.Errorf("measurement %+v: want an anonymous peak above 0 and at most the RSS peak", m)
	}
	if err := syscall.Kill(-cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d after measure: kill 0 = %v, want ESRCH (no process left)", cmd.Process.Pid, err)
	}
}

// TestMeasureFails: a program exiting non-zero is an error, as is one exiting before done said complete.
func TestMeasureFails(t *testing.T) {
	cmd, _ := childCmd(t, "fail", false)
	if _, err := measure(context.Background(), cmd, time.Minute, nil); err == nil {
		t.Error("measure of a program exiting 3: want an error")
	}
	cmd, _ = childCmd(t, "fail", false)
	never := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	if _, err := measure(context.Background(), cmd, time.Minute, never); err == nil {
		t.Error("measure of a program exiting before its work was complete: want an error")
	}
}

// TestMeasureCancel: cancelling kills the program's whole group.
func TestMeasureCancel(t *testing.T) {
	cmd, ready := childCmd(t, "hold", true)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		if waitReady(ctx, ready, 2) == nil {
			cancel()
		}
	}()
	if _, err := measure(ctx, cmd, time.Minute, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("measure after cancel: %v, want context.Canceled", err)
	}
	if err := syscall.Kill(-cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d after cancel: kill 0 = %v, want ESRCH", cmd.Process.Pid, err)
	}
}
