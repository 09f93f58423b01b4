package sdk_test

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
)

// TestSettingParse is the table of how defaults (and the expansions of references) are read: one
// function for the host and sdktest.
func TestSettingParse(t *testing.T) {
	for _, tt := range []struct {
		s    sdk.Setting
		text string
		want any
		err  string // the whole message; "" when the text is valid
		p    sdk.Problem
	}{
		{sdk.Setting{Type: sdk.TypeBool}, "true", true, "", 0},
		{sdk.Setting{Type: sdk.TypeBool}, "false", false, "", 0},
		{sdk.Setting{Type: sdk.TypeBool}, "1", nil, `"1" is not a bool: want true or false`, sdk.Malformed},
		{sdk.Setting{Type: sdk.TypeBool}, "True", nil, `"True" is not a bool: want true or false`, sdk.Malformed},
		{sdk.Setting{Type: sdk.TypeInt}, "1024", int64(1024), "", 0},
		{sdk.Setting{Type: sdk.TypeInt}, "ten", nil, `"ten" is not an int`, sdk.Malformed},
		{sdk.Setting{Type: sdk.TypeInt}, "1.5", nil, `"1.5" is not an int`, sdk.Malformed},
		{sdk.Setting{Type: sdk.TypeInt, Min: "0"}, "-1", nil, "want an int >= 0, got -1", sdk.OutOfRange},
		{sdk.Setting{Type: sdk.TypeInt, Min: "zero"}, "1", nil, `min "zero" is not an int`, sdk.BadDeclaration},
		{sdk.Setting{Type: sdk.TypeFloat}, "0.5", 0.5, "", 0},
		{sdk.Setting{Type: sdk.TypeFloat}, "NaN", nil, "want a finite number, got NaN", sdk.OutOfRange},
		{sdk.Setting{Type: sdk.TypeFloat, Min: "0", Max: "1"}, "2", nil, "want a number from 0 to 1, got 2", sdk.OutOfRange},
		{sdk.Setting{Type: sdk.TypeDuration}, "90s", "1m30s", "", 0},
		{sdk.Setting{Type: sdk.TypeDuration}, "5", nil, `"5" is not a duration: want a number with a unit (ns, us, ms, s, m, h), like "500ms", "5s" or "1m30s"`, sdk.Malformed},
		{sdk.Setting{Type: sdk.TypeDuration, Max: "1m"}, "2m", nil, "want a duration <= 1m, got 2m0s", sdk.OutOfRange},
		{sdk.Setting{Type: sdk.TypeString, Enum: []string{"a", "b"}}, "b", "b", "", 0},
		{sdk.Setting{Type: sdk.TypeString, Enum: []string{"a", "b"}}, "c", nil, `"c" is not allowed; want one of "a", "b"`, sdk.NotAllowed},
		{sdk.Setting{Type: sdk.TypeString, Enum: []string{"a"}, Secret: true}, "hunter2", nil, `the value is not allowed; want one of "a"`, sdk.NotAllowed},
		{sdk.Setting{Type: sdk.TypeList}, "[a, 1]", []any{"a", int64(1)}, "", 0},
		{sdk.Setting{Type: sdk.TypeList}, `["a", 1.5]`, []any{"a", 1.5}, "", 0},
		{sdk.Setting{Type: sdk.TypeList}, "{a: 1}", nil, `"{a: 1}" is not a list`, sdk.Malformed},
		{sdk.Setting{Type: sdk.TypeList}, "[.nan]", nil, "the value holds NaN or an infinity, which cannot be sent to a plugin (JSON has no such numbers)", sdk.NonFinite},
		{sdk.Setting{Type: sdk.TypeObject}, `{"a": {"b": [1]}}`, map[string]any{"a": map[string]any{"b": []any{int64(1)}}}, "", 0},
		{sdk.Setting{Type: sdk.TypeObject}, "[", nil, `"[" is not a object`, sdk.Malformed},
	} {
		got, err := tt.s.Parse(tt.text)
		if tt.err == "" {
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s %q: got %#v, %v; want %#v", tt.s.Type, tt.text, got, err, tt.want)
			}
			continue
		}
		var ve *sdk.ValueError
		if err == nil || err.Error() != tt.err || !errors.As(err, &ve) || ve.Problem != tt.p {
			t.Errorf("%s %q: got %#v, %v; want error %q (problem %d)", tt.s.Type, tt.text, got, err, tt.err, tt.p)
		}
	}
}

// TestSettingValue is the table of how values are checked and normalised: what a connector file decodes
// to (int64, float64, …), what JSON decodes to, and what a test's Go code writes.
func TestSettingValue(t *testing.T) {
	for _, tt := range []struct {
		s    sdk.Setting
		v    any
		want any
		err  string
	}{
		{sdk.Setting{Type: sdk.TypeInt}, 5, int64(5), ""},
		{sdk.Setting{Type: sdk.TypeInt}, uint16(5), int64(5), ""},
		{sdk.Setting{Type: sdk.TypeInt}, 5.0, int64(5), ""},
		{sdk.Setting{Type: sdk.TypeInt}, json.Number("7"), int64(7), ""},
		{sdk.Setting{Type: sdk.TypeInt}, 5.5, nil, "want int, got float 5.5"},
		{sdk.Setting{Type: sdk.TypeInt}, "5", nil, `want int, got string "5"`},
		{sdk.Setting{Type: sdk.TypeInt}, uint64(math.MaxUint64), nil, "want int, got uint64 18446744073709551615"},
		{sdk.Setting{Type: sdk.TypeInt, Secret: true}, "5", nil, "want int, got string"},
		{sdk.Setting{Type: sdk.TypeInt, Min: "1", Max: "3"}, 4, nil, "want an int from 1 to 3, got 4"},
		{sdk.Setting{Type: sdk.TypeInt, Min: "1", Secret: true}, 0, nil, "the value is out of range: want an int >= 1"},
		{sdk.Setting{Type: sdk.TypeFloat}, 2, 2.0, ""},
		{sdk.Setting{Type: sdk.TypeFloat}, math.Inf(1), nil, "want a finite number, got +Inf"},
		{sdk.Setting{Type: sdk.TypeBool}, true, true, ""},
		{sdk.Setting{Type: sdk.TypeBool}, "true", nil, `want bool (true or false), got string "true"`},
		{sdk.Setting{Type: sdk.TypeBool}, 1, nil, "want bool (true or false), got int 1"},
		{sdk.Setting{Type: sdk.TypeDuration}, "1500ms", "1.5s", ""},
		{sdk.Setting{Type: sdk.TypeDuration}, 3 * time.Second, "3s", ""},
		{sdk.Setting{Type: sdk.TypeDuration}, 30, nil, `want a duration string like "5s", got int 30 (write "30s" for 30 seconds)`},
		{sdk.Setting{Type: sdk.TypeDuration, Min: "1s"}, "10ms", nil, "want a duration >= 1s, got 10ms"},
		{sdk.Setting{Type: sdk.TypeString}, nil, nil, "want string, got null"},
		{sdk.Setting{Type: sdk.TypeString}, strings.Repeat("x", 50), strings.Repeat("x", 50), ""},
		{sdk.Setting{Type: sdk.TypeString}, []string{"a"}, nil, "want string, got list"},
		{sdk.Setting{Type: sdk.TypeList}, []string{"a", "b"}, []any{"a", "b"}, ""},
		{sdk.Setting{Type: sdk.TypeList}, map[string]any{}, nil, "want list, got object"},
		{sdk.Setting{Type: sdk.TypeObject}, map[string]string{"k": "v"}, map[string]any{"k": "v"}, ""},
		{sdk.Setting{Type: sdk.TypeObject}, map[string]any{"n": []int{1}}, map[string]any{"n": []any{int64(1)}}, ""},
		{sdk.Setting{Type: sdk.TypeObject}, map[string]any{"n": math.NaN()}, nil, "the value holds NaN or an infinity, which cannot be sent to a plugin (JSON has no such numbers)"},
		{sdk.Setting{Type: sdk.TypeObject}, []any{}, nil, "want object, got list"},
		{sdk.Setting{Type: sdk.TypeObject}, make(chan int), nil, "want object, got chan int " + "0x"},
	} {
		got, err := tt.s.Value(tt.v)
		switch {
		case tt.err == "" && (err != nil || !reflect.DeepEqual(got, tt.want)):
			t.Errorf("%s %#v: got %#v, %v; want %#v", tt.s.Type, tt.v, got, err, tt.want)
		case tt.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.err)):
			t.Errorf("%s %#v: got %#v, %v; want error %q", tt.s.Type, tt.v, got, err, tt.err)
		}
	}
}

// TestResolve checks what sdktest sends and Settings.Decode sees: values normalised, defaults applied,
// and every problem named by its setting.
func TestResolve(t *testing.T) {
	decl := []sdk.Setting{
		{Name: "url", Type: sdk.TypeString, Required: true, Doc: "u."},
		{Name: "count", Type: sdk.TypeInt, Default: "10", Min: "0", Doc: "c."},
		{Name: "wait", Type: sdk.TypeDuration, Default: "1m", Doc: "w."},
		{Name: "tags", Type: sdk.TypeList, Doc: "t."},
	}
	got, err := sdk.Resolve(decl, map[string]any{"url": "http://x", "wait": "90s"})
	want := sdk.Settings{"url": "http://x", "count": int64(10), "wait": "1m30s"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v, %v; want %#v", got, err, want)
	}
	_, err = sdk.Resolve(decl, map[string]any{"count": -1, "tagz": []string{}, "extra": 1})
	wantErr := "missing required setting \"url\"\nsetting \"count\": want an int >= 0, got -1\nunknown setting \"extra\"\nunknown setting \"tagz\""
	if err == nil || err.Error() != wantErr {
		t.Errorf("got %v\nwant %s", err, wantErr)
	}
	bad := []sdk.Setting{{Name: "on", Type: sdk.TypeBool, Default: "1", Doc: "o."}}
	if _, err := sdk.Resolve(bad, nil); err == nil || err.Error() != `setting "on": invalid default "1": "1" is not a bool: want true or false` {
		t.Errorf("bool default \"1\": got %v", err)
	}
}

// TestValidateDefaults: a spec whose default the host would refuse is invalid, so that sdktest (which
// validates the spec) fails where the host would.
func TestValidateDefaults(t *testing.T) {
	spec := sdk.Spec{Name: "x", Sink: &sdk.Stage{Summary: "s", Settings: []sdk.Setting{
		{Name: "on", Type: sdk.TypeBool, Default: "1", Doc: "o."},
		{Name: "n", Type: sdk.TypeInt, Default: "5", Max: "4", Doc: "n."},
		{Name: "m", Type: sdk.TypeString, Default: "c", Enum: []string{"a"}, Doc: "m."},
		{Name: "k", Type: sdk.TypeInt, Enum: []string{"1"}, Doc: "k."},
		{Name: "tags", Type: sdk.TypeList, Default: "[a, b]", Doc: "t."},
	}}}
	err := spec.Validate()
	for _, want := range []string{
		`sink setting "on": default "1": "1" is not a bool: want true or false`,
		`sink setting "n": default "5": want an int <= 4, got 5`,
		`sink setting "m": default "c": "c" is not allowed; want one of "a"`,
		`sink setting "k": enum applies to string settings, not int`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to contain %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "tags") {
		t.Errorf("Validate() refuses a YAML list default: %v", err)
	}
}
