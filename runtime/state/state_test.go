package state

import (
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/sdk/record"
)

func TestStore(t *testing.T) {
	dir := t.TempDir()
	if ok, err := Exists(dir); ok || err != nil {
		t.Fatalf("Exists(empty dir) = %v, %v", ok, err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if pos, err := s.Get("p", "source"); err != nil || pos != nil {
		t.Fatalf("empty store: Get = %x, %v", pos, err)
	}
	for _, pos := range []record.Position{record.Position("a"), record.Position("bb")} {
		if err := s.Put("p", "source", pos); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put("p", "buffer", record.Position("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put("q", "source", record.Position("other")); err != nil {
		t.Fatal(err)
	}

	// One process per data dir.
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "in use by another sluice process") {
		t.Fatalf("second Open = %v, want an in-use error", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	if ok, err := Exists(dir); !ok || err != nil {
		t.Fatalf("Exists(dir with a store) = %v, %v", ok, err)
	}

	// Positions survive a reopen.
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tt := range []struct{ pipeline, stage, want string }{
		{"p", "source", "bb"}, {"p", "buffer", "x"}, {"q", "source", "other"},
	} {
		if got, _ := s.Get(tt.pipeline, tt.stage); string(got) != tt.want {
			t.Errorf("Get(%s, %s) = %q, want %q", tt.pipeline, tt.stage, got, tt.want)
		}
	}
	if err := s.Put("p-2", "source", record.Position("x")); err != nil {
		t.Fatal(err)
	}
	if ids, err := s.List(); err != nil || !slices.Equal(ids, []string{"p", "p-2", "q"}) {
		t.Errorf("List = %q, %v; want [p p-2 q]", ids, err)
	}
	if err := s.Delete("p"); err != nil {
		t.Fatal(err)
	}
	if ids, err := s.List(); err != nil || !slices.Equal(ids, []string{"p-2", "q"}) {
		t.Errorf("List after Delete(p) = %q, %v; want [p-2 q]", ids, err)
	}
	if got, _ := s.Get("p", "source"); got != nil {
		t.Errorf("after Delete: %q", got)
	}
	if got, _ := s.Get("q", "source"); string(got) != "other" {
		t.Errorf("Delete touched another pipeline: %q", got)
	}
}

// TestInFlight checks the in-flight counts: 0 until stored, kept per pipeline and stage, still there when
// the store is reopened (as after a crash), and forgotten by Delete.
func TestInFlight(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.LoadInFlight("p", "buffer"); n != 0 || err != nil {
		t.Fatalf("never stored: LoadInFlight = %d, %v; want 0", n, err)
	}
	for _, n := range []int64{5, 1 << 40, 7} {
		if err := s.StoreInFlight("p", "buffer", n); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.StoreInFlight("p", "source", 3); err != nil {
		t.Fatal(err)
	}
	if err := s.StoreInFlight("q", "buffer", 11); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tt := range []struct {
		pipeline, stage string
		want            int64
	}{{"p", "buffer", 7}, {"p", "source", 3}, {"q", "buffer", 11}} {
		if n, err := s.LoadInFlight(tt.pipeline, tt.stage); n != tt.want || err != nil {
			t.Errorf("LoadInFlight(%s, %s) = %d, %v; want %d", tt.pipeline, tt.stage, n, err, tt.want)
		}
	}
	if err := s.Delete("p"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.LoadInFlight("p", "buffer"); n != 0 || err != nil {
		t.Errorf("after Delete: LoadInFlight = %d, %v; want 0", n, err)
	}
	if n, _ := s.LoadInFlight("q", "buffer"); n != 11 {
		t.Errorf("Delete touched another pipeline's count: %d", n)
	}
}
