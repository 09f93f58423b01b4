package codec

import (
	"strings"
	"testing"
)

// TestSkipString checks the string skipping against the decoder's own reading of strings, with quotes and
// escapes at every position around a word's edges, and several escapes before the closing quote.
func TestSkipString(t *testing.T) {
	pieces := []string{`a`, `\"`, `\\`, `\\\"`, `\u00e9`, `é`, `\n`, `\/`, `\n\t\"\\x\"`}
	for n := range 20 {
		for _, p := range pieces {
			for _, tail := range []string{``, `x`, `\\`, strings.Repeat("y", 9)} {
				body := strings.Repeat("a", n) + p + tail
				doc := `"` + body + `",1`
				d := jsonDecoder{data: []byte(doc)}
				if err := d.skipString(); err != nil {
					t.Fatalf("%s: %v", doc, err)
				}
				e := jsonDecoder{data: []byte(doc)}
				if _, err := e.string(); err != nil {
					t.Fatalf("%s: %v", doc, err)
				}
				if d.i != e.i {
					t.Fatalf("%s: skipString ends at %d, string at %d", doc, d.i, e.i)
				}
			}
		}
	}
	for _, bad := range []string{`"abc`, `"abcdefghijk\"`, `"\`, `"a\\\"`, `"\n\n\n`} {
		d := jsonDecoder{data: []byte(bad)}
		if err := d.skipString(); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// TestSparseKeys reads paths whose keys are written with escapes, and long keys.
func TestSparseKeys(t *testing.T) {
	long := strings.Repeat("k", 40)
	data := []byte(`{"a\u0062": {"c\"d": 1, "` + long + `": 2}, "x": "y"}`)
	tr := NewTree()
	tr.Read([]string{"ab", `c"d`})
	tr.Read([]string{"ab", long})
	var c Changes
	c.Reset(tr)
	doc, err := DecodeSparse(data, tr, &c)
	if err != nil {
		t.Fatal(err)
	}
	ab, _ := doc["ab"].(map[string]any)
	if ab[`c"d`] != 1 || ab[long] != 2 || len(doc) != 1 {
		t.Fatalf("doc = %v", doc)
	}
}
