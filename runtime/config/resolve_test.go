package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/sluicehq/sluice/sdk"
)

// TestHostAndSDKAgree loads one setting through the host's validator and through sdk.Resolve (what
// sdktest sends a plugin): both accept or refuse each default and value, and agree on the value sent.
func TestHostAndSDKAgree(t *testing.T) {
	for _, tt := range []struct {
		name  string
		decl  sdk.Setting
		yaml  string // the value as written in the file; "" leaves it absent (the default applies)
		value any    // the same value as a test passes it to sdktest
		ok    bool
	}{
		{"bool default 1", sdk.Setting{Type: sdk.TypeBool, Default: "1"}, "", nil, false},
		{"bool default True", sdk.Setting{Type: sdk.TypeBool, Default: "True"}, "", nil, false},
		{"bool default true", sdk.Setting{Type: sdk.TypeBool, Default: "true"}, "", nil, true},
		{"int default 1.0", sdk.Setting{Type: sdk.TypeInt, Default: "1.0"}, "", nil, false},
		{"int default below min", sdk.Setting{Type: sdk.TypeInt, Default: "-1", Min: "0"}, "", nil, false},
		{"float default", sdk.Setting{Type: sdk.TypeFloat, Default: "0.25"}, "", nil, true},
		{"duration default without unit", sdk.Setting{Type: sdk.TypeDuration, Default: "60"}, "", nil, false},
		{"duration default normalised", sdk.Setting{Type: sdk.TypeDuration, Default: "90s"}, "", nil, true},
		{"enum default outside", sdk.Setting{Type: sdk.TypeString, Default: "c", Enum: []string{"a", "b"}}, "", nil, false},
		{"list default in YAML", sdk.Setting{Type: sdk.TypeList, Default: "[a, 1]"}, "", nil, true},
		{"object default in JSON", sdk.Setting{Type: sdk.TypeObject, Default: `{"a": [1, 2.5]}`}, "", nil, true},
		{"object default not an object", sdk.Setting{Type: sdk.TypeObject, Default: "[1]"}, "", nil, false},
		{"bool value 1", sdk.Setting{Type: sdk.TypeBool}, "1", 1, false},
		{"bool value true", sdk.Setting{Type: sdk.TypeBool}, "true", true, true},
		{"int value whole float", sdk.Setting{Type: sdk.TypeInt}, "2.0", 2.0, true},
		{"int value fraction", sdk.Setting{Type: sdk.TypeInt}, "2.5", 2.5, false},
		{"int value over max", sdk.Setting{Type: sdk.TypeInt, Max: "10"}, "11", 11, false},
		{"float value int", sdk.Setting{Type: sdk.TypeFloat}, "3", 3, true},
		{"duration value", sdk.Setting{Type: sdk.TypeDuration, Min: "1s"}, "1500ms", "1500ms", true},
		{"duration value int", sdk.Setting{Type: sdk.TypeDuration}, "5", 5, false},
		{"string value int", sdk.Setting{Type: sdk.TypeString}, "5", 5, false},
		{"enum value", sdk.Setting{Type: sdk.TypeString, Enum: []string{"a"}}, "a", "a", true},
		{"list value", sdk.Setting{Type: sdk.TypeList}, "[x, 2]", []any{"x", 2}, true},
		{"list value object", sdk.Setting{Type: sdk.TypeList}, "{x: 2}", map[string]any{"x": 2}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.decl
			d.Name, d.Doc = "x", "x."
			l := testLoader()
			l.Specs = func(name string) (*sdk.Spec, bool) {
				if name != "odd" {
					return testSpec(name)
				}
				return &sdk.Spec{Name: "odd", Sink: &sdk.Stage{Summary: "s", Settings: []sdk.Setting{d}}}, true
			}
			settings, given := "{}", map[string]any{}
			if tt.yaml != "" {
				settings, given = "{x: "+tt.yaml+"}", map[string]any{"x": tt.value}
			}
			path := filepath.Join(t.TempDir(), "c.yaml")
			content := "version: 1\npipelines:\n  - id: p\n    source: {plugin: generate}\n    sink: {plugin: odd, settings: " + settings + "}\n"
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			f, hostErr := l.Load(path)
			sent, sdkErr := sdk.Resolve([]sdk.Setting{d}, given)
			if (hostErr == nil) != tt.ok || (sdkErr == nil) != tt.ok {
				t.Fatalf("host: %v; sdk.Resolve: %v; want ok %v from both", hostErr, sdkErr, tt.ok)
			}
			if tt.ok {
				if host := f.Pipelines[0].Sink.Settings["x"]; !reflect.DeepEqual(host, sent["x"]) {
					t.Errorf("host sends %#v, sdk.Resolve %#v", host, sent["x"])
				}
			}
		})
	}
}
