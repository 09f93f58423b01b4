package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCheck: the verdict counts each kind of fault once — a lost record, a second copy, a first copy
// after a later record of its key, a record nobody wrote or under the wrong key — and judges order per
// key in offset order per partition, whatever order the messages were read in.
func TestCheck(t *testing.T) {
	e := newExpectation()
	e.add("a", 0, "a@0", "a@1", "a@2", "a@del")
	e.add("b", 0, "b@0", "b@1")
	e.add("c", 0, "c@0")
	msg := func(p int32, off int64, key, id string) message {
		return message{topic: "t", partition: p, offset: off, key: key, id: id}
	}
	msgs := []message{
		msg(1, 0, "b", "b@0"),
		msg(0, 3, "a", "a@1"), // read out of order: offsets decide
		msg(0, 0, "a", "a@0"),
		msg(0, 4, "a", "a@0"),   // duplicate
		msg(0, 5, "a", "a@del"), // fine: after a@1
		msg(0, 6, "a", "a@2"),   // reordered: after a@del
		msg(1, 1, "x", "b@1"),   // under the wrong key: unexpected, so b@1 is lost
		msg(1, 2, "b", "zz"),    // unexpected
		msg(2, 0, "c", "c@0"),
	}
	v := check(e, msgs)
	want := verdict{records: 7, lost: 1, duplicated: 1, reordered: 1, unexpected: 2}
	if v.records != want.records || v.lost != want.lost || v.duplicated != want.duplicated || v.reordered != want.reordered || v.unexpected != want.unexpected {
		t.Fatalf("verdict %+v, want %+v", v, want)
	}

	// Everything once and in order: a clean verdict.
	clean := []message{msg(0, 0, "a", "a@0"), msg(0, 1, "a", "a@1"), msg(0, 2, "a", "a@2"), msg(0, 3, "a", "a@del"),
		msg(1, 0, "b", "b@0"), msg(1, 1, "b", "b@1"), msg(2, 0, "c", "c@0")}
	if v := check(e, clean); v.lost+v.duplicated+v.reordered+v.unexpected != 0 {
		t.Fatalf("clean run judged %+v", v)
	}
	// A redelivered suffix after a crash: duplicates, not reorders.
	redelivered := append(clean[:3:3], msg(0, 3, "a", "a@1"), msg(0, 4, "a", "a@2"), msg(0, 5, "a", "a@del"))
	redelivered = append(redelivered, clean[4:]...)
	if v := check(e, redelivered); v.duplicated != 2 || v.reordered != 0 || v.lost != 0 {
		t.Fatalf("redelivered suffix judged %+v, want 2 duplicates", v)
	}
}

// TestRedelivered sums the host's redelivery warnings over every log, telling failures from crashes.
func TestRedelivered(t *testing.T) {
	dir := t.TempDir()
	logs := []string{filepath.Join(dir, "host-01.log"), filepath.Join(dir, "host-02.log")}
	write := func(path, text string) {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(logs[0], `{"level":"INFO","msg":"pipeline started","pipeline":"p"}
{"level":"WARN","msg":"records sent to the sink were not acknowledged; they will be delivered again and may be duplicates","pipeline":"p","records":5}
not json
{"level":"WARN","msg":"records sent to the sink were not acknowledged; they will be delivered again and may be duplicates","pipeline":"q","records":7}
`)
	write(logs[1], `{"level":"WARN","msg":"the previous sluice process ended without storing the position of records it had sent to the sink; they will be delivered again and may be duplicates","pipeline":"p","records":11}
{"level":"INFO","msg":"pipeline completed","delivered":100}
`)
	got, err := redelivered(logs)
	if err != nil {
		t.Fatal(err)
	}
	if got != (redeliveries{afterFailures: 12, afterCrashes: 11}) {
		t.Fatalf("redelivered = %+v, want 12 after failures and 11 after crashes", got)
	}
}
