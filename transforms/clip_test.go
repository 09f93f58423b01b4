package transforms

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sluicehq/sluice/sdk/record"
)

// TestFailuresCutValues: whatever fails on a long field value — a type error, a parse error from Go's
// libraries that quotes its input, a regular expression from the record, a bad key or route — the
// failure's message shows at most the first 60 bytes of the value, marked with "…", never all of it.
func TestFailuresCutValues(t *testing.T) {
	long := "START-" + strings.Repeat("ü", 100) + "-END" // multi-byte: cuts land on a character boundary
	payload := `{"s":"` + long + `","pat":"(` + long + `","n":5,"arr":["` + long + `"],"o":{"k":"` + long + `"}}`
	exprs := []string{`int(s)`, `date(s)`, `date(s, "2006")`, `date("2020-01-01", s)`, `duration(s)`, `timezone(s)`,
		`decimal(s)`, `oid(s)`, `fromJSON(s)`, `"x" matches pat`, `s + 1`, `s > 1`, `s.x`, `o.k.x`, `abs(s)`, `sum(arr)`,
		`max(arr, 1)`, `s ? 1 : 2`, `arr + 1`, `o + 1`, `sort(arr, s)`, `fromPairs(arr)`, `mean(arr)`, `timestamp(s, 1)`,
		`fromBase64(s)`, `all(arr, #)`}
	var steps []Step
	for _, e := range exprs {
		steps = append(steps, set("out", e))
	}
	steps = append(steps, key(`o`), route(`arr`), filter(`s`))
	for _, st := range steps {
		prog, err := Compile([]Step{st})
		if err != nil {
			t.Fatalf("%+v: %v", st, err)
		}
		_, failed := prog.NewRunner().Run([]record.Record{{Payload: []byte(payload), Encoding: record.EncodingJSON}})
		if len(failed) != 1 {
			t.Errorf("%+v: %d failures, want 1", st, len(failed))
			continue
		}
		msg := failed[0].Error()
		switch {
		case strings.Contains(msg, "-END"):
			t.Errorf("the message quotes the whole value: %s", msg)
		case strings.Contains(msg, "START-") && !strings.Contains(msg, "…"):
			t.Errorf("the message shows the value's start without marking the cut: %s", msg)
		case !utf8.ValidString(msg):
			t.Errorf("the message is not valid UTF-8 (a character was cut): %q", msg)
		}
	}
}

func TestClipError(t *testing.T) {
	base := errors.New(strings.Repeat("x", maxMessage+500))
	err := clipError(base)
	if !errors.Is(err, base) || len(err.Error()) > maxMessage+100 || !strings.HasSuffix(err.Error(), "… (message cut: 500 bytes more)") {
		t.Fatalf("clipError: %d bytes: %s", len(err.Error()), err.Error()[maxMessage-10:])
	}
	short := errors.New("short")
	if clipError(short) != short {
		t.Fatal("a short error was replaced")
	}
}
