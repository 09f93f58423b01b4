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
			{Name: "count", Type: sdk.TypeInt, Default: "1000", Min: "0", Doc: "records to emit; 0 = forever."},
			{Name: "rate", Type: sdk.TypeFloat, Default: "0", Min: "0", Doc: "records per second; 0 = unlimited."},
			{Name: "payload_bytes", Type: sdk.TypeInt, Default: "200", Min: "0", Max: "16777216", Doc: "payload size."},
			{Name: "interval", Type: sdk.TypeDuration, Default: "1s", Min: "1ms", Max: "24h", Doc: "heartbeat interval."},
			{Name: "ratio", Type: sdk.TypeFloat, Doc: "an unbounded float: only finiteness applies."},
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
			{Name: "capacity", Type: sdk.TypeInt, Default: "10000", Min: "1", Doc: "records held before Append blocks."},
			{Name: "password", Type: sdk.TypeString, Secret: true, Doc: "a password, for testing redaction."},
		}, Capabilities: sdk.Capabilities{AtomicPosition: true}},
	},
	// queue is a sink shaped like the Kafka sink, with bounds and rules across settings.
	"queue": {
		Name: "queue", Version: "1.0.0", Summary: "a transactional queue",
		Sink: &sdk.Stage{Summary: "writes to a queue", Settings: []sdk.Setting{
			{Name: "brokers", Type: sdk.TypeList, Required: true, Doc: "host:port of the brokers."},
			{Name: "transactional", Type: sdk.TypeBool, Default: "true", Doc: "write in transactions."},
			{Name: "acks", Type: sdk.TypeString, Default: "all", Enum: []string{"all", "leader", "none"}, Doc: "acknowledgements."},
			{Name: "retry_initial", Type: sdk.TypeDuration, Default: "100ms", Min: "1ms", Doc: "first retry wait."},
			{Name: "retry_max", Type: sdk.TypeDuration, Default: "1s", Min: "1ms", Doc: "longest retry wait."},
			{Name: "partitions", Type: sdk.TypeInt, Min: "1", Max: "1000", Doc: "partitions of a created topic."},
			{Name: "tls_cert_file", Type: sdk.TypeString, Doc: "client certificate."},
			{Name: "tls_key_file", Type: sdk.TypeString, Doc: "client key."},
			{Name: "password", Type: sdk.TypeString, Secret: true, Doc: "SASL password."},
		}, Rules: []sdk.Rule{
			{Expr: `!(transactional && acks != "all")`, Settings: []string{"acks", "transactional"},
				Message: `acks must be "all" when transactional is true (the default): set acks: all, or transactional: false`},
			{Expr: `retry_max >= retry_initial`, Settings: []string{"retry_max", "retry_initial"},
				Message: "retry_max must not be shorter than retry_initial"},
			{Expr: `((tls_cert_file ?? "") == "") == ((tls_key_file ?? "") == "")`, Settings: []string{"tls_cert_file", "tls_key_file"},
				Message: "tls_cert_file and tls_key_file go together: set both or neither"},
			{Expr: `partitions == nil || len(brokers) >= 1`, Settings: []string{"partitions", "brokers"},
				Message: "partitions needs at least one broker"},
		}, Capabilities: sdk.Capabilities{AtomicPosition: true, AtomicPositionSetting: "transactional"}},
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
	"NEGATIVE":    "-3",
	"NAN":         "NaN",
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
