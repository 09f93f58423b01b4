package sdk_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sdk"
)

type conn struct {
	Addr string `setting:"addr" default:"127.0.0.1:1" doc:"The server."`
}

type declared struct {
	conn     `setting:",squash"`
	URL      string            `setting:"url,required" doc:"Where to send."`
	Token    string            `setting:"token,secret" doc:"The token."`
	Count    uint32            `setting:"count" default:"10" min:"0" max:"100" doc:"How many."`
	Rate     float64           `setting:"rate" default:"0.5" doc:"How fast."`
	Wait     time.Duration     `setting:"wait" default:"5s" min:"1ms" doc:"How long."`
	Mode     string            `setting:"mode" default:"a" enum:"a,b" doc:"Which."`
	On       bool              `setting:"on" default:"true" doc:"Whether."`
	Tags     []string          `setting:"tags" doc:"Labels."`
	Headers  map[string]string `setting:"headers" doc:"Headers."`
	Pipeline any               `setting:"pipeline" type:"list" doc:"Stages."`
	Untagged string
	Skipped  string `setting:"-"`
}

func TestSettingsOf(t *testing.T) {
	got, err := sdk.SettingsOf[declared]()
	if err != nil {
		t.Fatal(err)
	}
	want := []sdk.Setting{
		{Name: "addr", Type: sdk.TypeString, Default: "127.0.0.1:1", Doc: "The server."},
		{Name: "url", Type: sdk.TypeString, Required: true, Doc: "Where to send."},
		{Name: "token", Type: sdk.TypeString, Secret: true, Doc: "The token."},
		{Name: "count", Type: sdk.TypeInt, Default: "10", Min: "0", Max: "100", Doc: "How many."},
		{Name: "rate", Type: sdk.TypeFloat, Default: "0.5", Doc: "How fast."},
		{Name: "wait", Type: sdk.TypeDuration, Default: "5s", Min: "1ms", Doc: "How long."},
		{Name: "mode", Type: sdk.TypeString, Default: "a", Enum: []string{"a", "b"}, Doc: "Which."},
		{Name: "on", Type: sdk.TypeBool, Default: "true", Doc: "Whether."},
		{Name: "tags", Type: sdk.TypeList, Doc: "Labels."},
		{Name: "headers", Type: sdk.TypeObject, Doc: "Headers."},
		{Name: "pipeline", Type: sdk.TypeList, Doc: "Stages."},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", got, want)
	}
	if err := (&sdk.Spec{Name: "x", Sink: &sdk.Stage{Summary: "s", Settings: got}}).Validate(); err != nil {
		t.Errorf("derived settings do not validate: %v", err)
	}
}

func TestSettingsOfErrors(t *testing.T) {
	type bad struct {
		A chan int `setting:"a"`
		B string   `setting:"b,omitempty"`
		C string   `setting:"c,requird"`
		D string   `setting:",secret"`
		E string   `setting:"e,squash"`
	}
	_, err := sdk.SettingsOf[bad]()
	for _, want := range []string{
		"bad.A: no setting type for Go type chan int: add a type tag",
		`bad.B: option "omitempty" has no meaning for a setting`,
		`bad.C: unknown option "requird" in its setting tag (want required, secret or squash)`,
		"bad.D: setting tag without a name",
		"bad.E: squash inlines an embedded struct",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("SettingsOf = %v, want it to contain %q", err, want)
		}
	}
	if _, err := sdk.SettingsOf[int](); err == nil {
		t.Error("SettingsOf[int] succeeded")
	}
	defer func() {
		if recover() == nil {
			t.Error("MustSettingsOf did not panic on a malformed tag")
		}
	}()
	sdk.MustSettingsOf[bad]()
}

// TestDecodeDefaults: Decode applies the tags' defaults to absent settings and checks values as the
// host does, so a stage opened without the host gets the same config.
func TestDecodeDefaults(t *testing.T) {
	var c declared
	c.Token = "kept" // absent and without a default: left as it was
	if err := (sdk.Settings{"url": "http://x", "count": 7.0, "tags": []any{"t"}}).Decode(&c); err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:1" || c.URL != "http://x" || c.Count != 7 || c.Rate != 0.5 || c.Wait != 5*time.Second ||
		c.Mode != "a" || !c.On || !reflect.DeepEqual(c.Tags, []string{"t"}) || c.Token != "kept" {
		t.Errorf("decoded %+v", c)
	}
	for _, tt := range []struct {
		s    sdk.Settings
		want string
	}{
		{sdk.Settings{}, `missing required setting "url"`},
		{sdk.Settings{"url": "u", "count": 101.0}, `setting "count": want an int from 0 to 100, got 101`},
		{sdk.Settings{"url": "u", "mode": "c"}, `setting "mode": "c" is not allowed; want one of "a", "b"`},
		{sdk.Settings{"url": "u", "wait": "5"}, `setting "wait": "5" is not a duration`},
		{sdk.Settings{"url": "u", "on": "yes"}, `setting "on": want bool (true or false), got string "yes"`},
	} {
		var c declared
		err := tt.s.Decode(&c)
		if err == nil || !errors.Is(err, sdk.ErrInvalidSettings) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Decode(%v) = %v, want an invalid-settings error containing %q", tt.s, err, tt.want)
		}
	}
}
