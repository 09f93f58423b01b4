package config

import (
	"maps"
	"slices"

	"github.com/sluicehq/sluice/sdk"
)

// testSpecs is the plugin set the tests validate against: small copies of the first-party built-ins
// with a setting of every type, a secret and an enum.
var testSpecs = map[string]*sdk.Spec{
	"generate": {
		Name: "generate", Version: "1.0.0", Summary: "synthetic records",
		Source: &sdk.Stage{Summary: "emits count records", Settings: []sdk.Setting{
			{Name: "count", Type: sdk.TypeInt, Default: "1000", Doc: "records to emit; 0 = forever."},
			{Name: "rate", Type: sdk.TypeFloat, Default: "0", Doc: "records per second; 0 = unlimited."},
			{Name: "payload_bytes", Type: sdk.TypeInt, Default: "200", Doc: "payload size."},
			{Name: "interval", Type: sdk.TypeDuration, Default: "1s", Doc: "heartbeat interval."},
			{Name: "encoding", Type: sdk.TypeString, Default: "json", Enum: []string{"json", "text"}, Doc: "payload encoding."},
			{Name: "pretty", Type: sdk.TypeBool, Default: "false", Doc: "indent JSON payloads."},
			{Name: "fields", Type: sdk.TypeList, Doc: "extra fields."},
			{Name: "labels", Type: sdk.TypeObject, Doc: "metadata added to each record."},
		}},
	},
	"file": {
		Name: "file", Version: "1.0.0", Summary: "JSON Lines files",
		Sink: &sdk.Stage{Summary: "appends records to a file", Settings: []sdk.Setting{
			{Name: "path", Type: sdk.TypeString, Required: true, Doc: "file to append to."},
			{Name: "format", Type: sdk.TypeString, Default: "payload", Enum: []string{"payload", "record"}, Doc: "what each line holds."},
			{Name: "flush_interval", Type: sdk.TypeDuration, Default: "1s", Doc: "how often to fsync."},
			{Name: "token", Type: sdk.TypeString, Secret: true, Doc: "an upload token."},
		}},
	},
	"memory": {
		Name: "memory", Version: "1.0.0", Summary: "an in-memory buffer",
		Buffer: &sdk.Stage{Summary: "keeps records in memory", Settings: []sdk.Setting{
			{Name: "capacity", Type: sdk.TypeInt, Default: "10000", Doc: "records held before Append blocks."},
			{Name: "password", Type: sdk.TypeString, Secret: true, Doc: "a password, for testing redaction."},
		}, Capabilities: sdk.Capabilities{AtomicPosition: true}},
	},
	"discard": {
		Name: "discard", Version: "1.0.0", Summary: "drops records",
		Sink: &sdk.Stage{Summary: "acknowledges and drops every record"},
	},
}

func testSpec(name string) (*sdk.Spec, bool) {
	s, ok := testSpecs[name]
	return s, ok
}

// testEnv is the environment tests resolve ${env:…} in.
var testEnv = map[string]string{
	"OUT_DIR":     "/var/out",
	"TOKEN":       "s3cr3t-token",
	"COUNT":       "500",
	"EMPTY":       "",
	"NOT_A_COUNT": "many",
}

func testLoader() *Loader {
	return &Loader{
		Specs:   testSpec,
		Plugins: slices.Sorted(maps.Keys(testSpecs)),
		LookupEnv: func(name string) (string, bool) {
			v, ok := testEnv[name]
			return v, ok
		},
	}
}
