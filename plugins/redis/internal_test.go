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

func TestParseID(t *testing.T) {
	for _, tc := range []struct {
		id      string
		ms, seq uint64
		ok      bool
	}{
		{"1700000000000-5", 1700000000000, 5, true},
		{"0-0", 0, 0, true},
		{"17", 0, 0, false},
		{"a-1", 0, 0, false},
		{"1-", 0, 0, false},
	} {
		ms, seq, err := parseID(tc.id)
		if (err == nil) != tc.ok || ms != tc.ms || seq != tc.seq {
			t.Errorf("parseID(%q) = %d, %d, %v", tc.id, ms, seq, err)
		}
	}
}
