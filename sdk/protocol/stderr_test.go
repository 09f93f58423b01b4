package protocol

import (
	"fmt"
	"strings"
	"testing"
)

func TestPanicParser(t *testing.T) {
	for _, tc := range []struct {
		name, stderr, want string
	}{
		{"panic", `{"@level":"info","@message":"opened"}
panic: misbehave: panic in open

goroutine 23 [running]:
main.(*config).act(0xc000120000, {0x8c1c9f, 0x5}, {0x8c1ad4, 0x4})
	/src/misbehave/main.go:92 +0x3a5
main.(*sink).Open(...)
	/src/misbehave/main.go:170
`, "misbehave: panic in open (main.(*config).act at /src/misbehave/main.go:92)"},
		{"re-panicked, runtime frames skipped", `panic: first [recovered, repanicked]
	panic: second

goroutine 1 [running]:
panic({0x4a5f20?, 0x4ef4b0?})
	/usr/local/go/src/runtime/panic.go:792 +0x132
runtime.gopanic(0x1)
	/usr/local/go/src/runtime/panic.go:700 +0x10
example.com/p.F[...](0x0)
	/src/p/f.go:7 +0x25
`, "first (example.com/p.F[...] at /src/p/f.go:7)"},
		{"runtime error", `panic: runtime error: invalid memory address or nil pointer dereference
[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x48f0b6]

goroutine 7 [running]:
main.(*sink).Write(0x0, {0x0, 0x0})
	/src/main.go:12 +0x16
`, "runtime error: invalid memory address or nil pointer dereference (main.(*sink).Write at /src/main.go:12)"},
		{"fatal error", `fatal error: concurrent map writes

goroutine 9 [running]:
internal/runtime/maps.fatal({0x4bd6a5?, 0x0?})
	/usr/local/go/src/runtime/panic.go:1058 +0x18
main.main.func1()
	/src/main.go:9 +0x45
created by main.main in goroutine 1
	/src/main.go:7 +0x25
`, "fatal error: concurrent map writes (main.main.func1 at /src/main.go:9)"},
		{"no frame before the goroutine ends", `fatal error: all goroutines are asleep - deadlock!

goroutine 1 [select (no cases)]:
runtime.block()
	/usr/local/go/src/runtime/select.go:104 +0x26

goroutine 2 [running]:
main.other()
	/src/main.go:3
`, "fatal error: all goroutines are asleep - deadlock!"},
		{"signal", `SIGQUIT: quit
PC=0x46d0a1 m=0 sigcode=0

goroutine 0 gp=0x5a1e40 m=0 mp=0x5a2ca0 [idle]:
main.loop()
	/src/main.go:5 +0x1
`, "SIGQUIT: quit (main.loop at /src/main.go:5)"},
		{"message only", "panic: cut short\n", "cut short"},
		{"no panic", "just a line\n{\"@message\":\"x\"}\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reports []string
			tail := newStderrTail(func(s string) { reports = append(reports, s) })
			fmt.Fprint(tail.raw(), tc.stderr)
			tail.finish()
			got, _ := tail.snapshot()
			if got != tc.want {
				t.Errorf("panic %q, want %q", got, tc.want)
			}
			if tc.want == "" && len(reports) != 0 || tc.want != "" && (len(reports) != 1 || reports[0] != tc.want) {
				t.Errorf("reported %q, want %q once", reports, tc.want)
			}
		})
	}
}

func TestStderrTailBounds(t *testing.T) {
	tail := newStderrTail(nil)
	w := tail.raw()
	for i := range 50 {
		fmt.Fprintf(w, "line %d\n", i)
	}
	// A long line arrives in pieces, as go-plugin passes lines longer than its buffer, and ends in "\r\n".
	long := strings.Repeat("x", 3*MaxStderrLine)
	_, _ = w.Write([]byte(long[:MaxStderrLine+10]))
	_, _ = w.Write([]byte(long[MaxStderrLine+10:] + "\r\n"))
	fmt.Fprint(w, "unfinished")
	_, lines := tail.snapshot()
	if len(lines) != StderrLines {
		t.Fatalf("%d lines kept, want %d", len(lines), StderrLines)
	}
	if lines[0] != "line 31" || lines[StderrLines-2] != "line 49" {
		t.Errorf("kept %q … %q, want the last lines", lines[0], lines[StderrLines-2])
	}
	if last := lines[StderrLines-1]; last != strings.Repeat("x", MaxStderrLine)+"…" {
		t.Errorf("long line kept as %d bytes %q…", len(last), last[:20])
	}
}

func TestExitString(t *testing.T) {
	for _, tc := range []struct {
		e    *Exit
		want string
	}{
		{&Exit{Code: 7, Stderr: []string{"starting", "cannot open /x: permission denied", ""}}, "exited with status 7: cannot open /x: permission denied"},
		{&Exit{Code: 1, Stderr: []string{`{"@level":"error","@message":"cannot connect","@timestamp":"2026-01-01T00:00:00.000000Z","addr":"127.0.0.1:9","error":"connection refused"}`}},
			`exited with status 1: cannot connect addr=127.0.0.1:9 error="connection refused"`},
		{&Exit{Code: 0}, "exited with status 0"},
		{&Exit{Code: -1, Signal: "SIGKILL", Stderr: []string{"x"}}, "was killed by signal SIGKILL"},
		{&Exit{Code: 2, Panic: "boom (main.f at /src/main.go:3)"}, "panicked: boom (main.f at /src/main.go:3)"},
		{&Exit{Code: 2, Panic: "fatal error: concurrent map writes"}, "crashed: fatal error: concurrent map writes"},
		{&Exit{Code: 2, Panic: "SIGSEGV: segmentation violation"}, "crashed: SIGSEGV: segmentation violation"},
	} {
		if got := tc.e.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.e, got, tc.want)
		}
	}
}
