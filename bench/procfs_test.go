package main

import (
	"os"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// A command name with a space and a parenthesis, as /proc shows it; utime 250, stime 30 ticks.
	line := "4242 (my (odd) prog) S 17 4242 4242 0 -1 4194560 1000 0 0 0 250 30 5 6 20 0 12 0 900 1000000 2000 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.Comm != "my (odd) prog" || st.State != 'S' || st.PPID != 17 || st.CPU != 2800*time.Millisecond {
		t.Errorf("parseStat = %+v, want comm %q, state S, ppid 17, CPU 2.8s", st, "my (odd) prog")
	}
}

func TestParseStatRejects(t *testing.T) {
	for name, in := range map[string]string{
		"no command":  "4242 S 1 2 3",
		"too short":   "4242 (x) S 1 2 3",
		"bad ppid":    "4242 (x) S one 4242 4242 0 -1 0 0 0 0 0 250 30",
		"bad utime":   "4242 (x) S 1 4242 4242 0 -1 0 0 0 0 0 lots 30",
		"long state":  "4242 (x) SS 1 4242 4242 0 -1 0 0 0 0 0 1 30",
		"empty input": "",
	} {
		if st, err := parseStat([]byte(in)); err == nil {
			t.Errorf("%s: parseStat(%q) = %+v, want an error", name, in, st)
		}
	}
}

func TestParseStatus(t *testing.T) {
	in := "Name:\tsluice\nState:\tS (sleeping)\nVmPeak:\t 1500000 kB\nVmHWM:\t  135000 kB\nVmRSS:\t  120000 kB\nRssAnon:\t   70000 kB\nRssFile:\t   50000 kB\nThreads:\t12\n"
	m, err := parseStatus([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if m.HWM != 135000*1024 || m.RSS != 120000*1024 || m.Anon != 70000*1024 {
		t.Errorf("parseStatus = %+v, want HWM %d, RSS %d, Anon %d", m, 135000*1024, 120000*1024, 70000*1024)
	}
	// A zombie has no memory lines; a malformed one is an error, not a zero.
	for _, bad := range []string{"Name:\tx\nState:\tZ (zombie)\n", "VmHWM:\t 12 MB\nVmRSS:\t 1 kB\nRssAnon:\t 1 kB\n", "VmHWM:\t x kB\nVmRSS:\t 1 kB\nRssAnon:\t 1 kB\n", "VmHWM:\t 2 kB\nVmRSS:\t 1 kB\n"} {
		if m, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("parseStatus(%q) = %+v, want an error", bad, m)
		}
	}
}

func TestParseChildren(t *testing.T) {
	got, err := parseChildren([]byte("12 345 6789 \n"))
	if err != nil || len(got) != 3 || got[0] != 12 || got[1] != 345 || got[2] != 6789 {
		t.Errorf("parseChildren = %v, %v; want [12 345 6789]", got, err)
	}
	if got, err := parseChildren(nil); err != nil || len(got) != 0 {
		t.Errorf("parseChildren(empty) = %v, %v; want none", got, err)
	}
	if _, err := parseChildren([]byte("12 x")); err == nil {
		t.Error("parseChildren(12 x): want an error")
	}
}

// TestReadsThisProcess parses the real /proc files of this test process.
func TestReadsThisProcess(t *testing.T) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	st, err := parseStat(b)
	if err != nil {
		t.Fatal(err)
	}
	if st.PPID != os.Getppid() || st.Comm != "bench.test" {
		t.Errorf("parseStat(/proc/self/stat) = %+v, want ppid %d and the test binary's name", st, os.Getppid())
	}
	b, err = os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseStatus(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.HWM < m.RSS {
		t.Errorf("parseStatus(/proc/self/status) = %+v, want 0 < RSS <= HWM", m)
	}
}
