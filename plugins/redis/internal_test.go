package redis

import "testing"

func TestKeys(t *testing.T) {
	for _, tc := range []struct{ key, pipeline, stream, meta string }{
		{"", "orders", "sluice:{orders}", "sluice:{orders}:meta"},
		{"buf:{x}", "p", "buf:{x}", "buf:{x}:meta"},
		{"plain", "p", "{plain}", "{plain}:meta"},
		{"empty:{}tag", "p", "{empty:{}tag}", "{empty:{}tag}:meta"},
		{"open{", "p", "{open{}", "{open{}:meta"},
	} {
		stream, meta := keys(tc.key, tc.pipeline)
		if stream != tc.stream || meta != tc.meta {
			t.Errorf("keys(%q, %q) = %q, %q; want %q, %q", tc.key, tc.pipeline, stream, meta, tc.stream, tc.meta)
		}
	}
}

func TestParsePosition(t *testing.T) {
	for _, tc := range []struct {
		pos     string
		id      string
		ms, seq uint64
		index   int
		after   string
		ok      bool
	}{
		{"1700000000000-5", "1700000000000-5", 1700000000000, 5, -1, "1700000000000-6", true},
		{"1700000000000-5.0", "1700000000000-5", 1700000000000, 5, 0, "1700000000000-6", true},
		{"1700000000000-5.17", "1700000000000-5", 1700000000000, 5, 17, "1700000000000-6", true},
		{"3-18446744073709551615", "3-18446744073709551615", 3, 1<<64 - 1, -1, "4-0", true},
		{"0-0", "0-0", 0, 0, -1, "0-1", true},
		{"17", "", 0, 0, -1, "", false},
		{"a-1", "", 0, 0, -1, "", false},
		{"1-", "", 0, 0, -1, "", false},
		{"1-2.", "", 0, 0, -1, "", false},
		{"1-2.-1", "", 0, 0, -1, "", false},
		{"1-2.x", "", 0, 0, -1, "", false},
	} {
		p, err := parsePosition(tc.pos)
		if (err == nil) != tc.ok {
			t.Errorf("parsePosition(%q): error %v, want ok %v", tc.pos, err, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		if p.id != tc.id || p.ms != tc.ms || p.seq != tc.seq || p.index != tc.index || p.after() != tc.after {
			t.Errorf("parsePosition(%q) = %+v (after %s); want id %s ms %d seq %d index %d after %s",
				tc.pos, p, p.after(), tc.id, tc.ms, tc.seq, tc.index, tc.after)
		}
	}
}

func TestComparePositions(t *testing.T) {
	ordered := []string{"5-0.0", "5-0.1", "5-0", "5-1.0", "5-1", "10-0.3", "10-0", "10-18446744073709551615", "11-0"}
	var b Buffer
	for i, a := range ordered {
		for j, c := range ordered {
			got, err := b.ComparePositions([]byte(a), []byte(c))
			if want := cmpInts(i, j); err != nil || got != want {
				t.Errorf("ComparePositions(%s, %s) = %d, %v; want %d", a, c, got, err, want)
			}
		}
	}
	if _, err := b.ComparePositions([]byte("5-0"), []byte("nope")); err == nil {
		t.Error("ComparePositions of a foreign position: no error")
	}
}

func cmpInts(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
