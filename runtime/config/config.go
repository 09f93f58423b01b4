// Package config reads, parses and validates connector files: the YAML, JSON or TOML documents that
// declare a host's pipelines. Load returns either a fully resolved File (defaults applied, plugin settings
// checked against each plugin's spec, ${env:…} and ${file:…} references expanded) or Errors listing every
// problem found, each with the file:line:col where it was written.
//
// # References
//
// A string in a stage's settings (a value at any depth of a list or object; not a key) may take text
// from outside the connector file:
//
//	${env:NAME}  the value of environment variable NAME, which must be set (it may be empty)
//	${file:PATH} the contents of file PATH, relative to the connector file's directory, without one
//	             trailing newline
//
// A value may hold several references and text around them; a setting of type int, float, bool,
// duration, list or object written as a string of references is parsed after expansion
// ("${env:PORT}"). What a reference stands for is used as it is: never expanded again, never checked
// for '$'.
//
// Otherwise '$' is reserved, so that shell habits fail at load instead of reaching a plugin as text (a
// directory named "$HOME"):
//
//   - any other ${ is an error: ${NAME} is shell syntax (the message suggests ${env:NAME}) and
//     ${vault:…} an unknown scheme (the message lists env and file). $${ writes a literal ${.
//   - '$' followed by an upper-case name — upper-case letters, digits and '_', at least one letter, not
//     starting with a digit and not followed by a lower-case letter: $HOME, $MONGO_URI — is an error
//     suggesting ${env:NAME}. \$NAME writes a literal $NAME.
//   - a '$' right after another '$' starts nothing, so MongoDB's $$ROOT, $$NOW and $$CLUSTER_TIME stay as
//     written; so do lower-case names ($match, $fullDocument.total) and '$' before anything else ($5,
//     "^a$"). A password is best taken from ${env:…} or ${file:…}; written inline, "pa$$word" and
//     "pa$word" are plain text and "pa$WORD" must be written "pa\$WORD".
//
// Values that held a reference, and secret settings, are redacted by Print and never quoted in errors
// (messages about a secret setting quote none of its text); File.Secrets lists them, so that the host can
// hide them in everything else it prints. Other keys (id, plugin) and the raw
// transforms and tests are neither expanded nor checked; data_dir is checked the same way (no ${NAME},
// no $HOME) but references are not expanded there.
//
// # Limits
//
// A setting value is at most MaxValueBytes (1 MiB) after expansion: a string's length, or a list's or
// object's size as compact JSON; ${file:…} reads no more of a file. Int, float and duration settings
// must lie within the inclusive bounds their plugin declares (sdk.Setting Min and Max); a float must be
// finite whatever its bounds (YAML .nan and .inf, TOML nan and inf), and so must every number in a list
// or object setting, since JSON cannot carry NaN or infinity to a plugin. A stage's settings must then
// satisfy its rules (sdk.Stage Rules): expr-lang expressions, compiled once per Loader and stage,
// evaluated on the resolved settings with durations as time.Duration; a broken rule is reported where the
// first setting it names is written, and a rule that does not compile, is not boolean or fails is
// reported as the plugin's fault. Messages quote at most 40 characters of a value from the file.
//
// # Parsing
//
// The document is loaded with koanf (a rawbytes provider and the parser for the file's extension); the
// positions of keys and values come from yaml.v3's node API (YAML), encoding/json's token stream (JSON)
// and go-toml's unstable parser (TOML).
package config

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/transforms"
)

// Pos is a place in a connector file. Line and Col start at 1; Col counts characters.
type Pos struct {
	File      string
	Line, Col int
}

// String returns "file:line:col", with File as given to Load.
func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// before orders positions by line, then column.
func (p Pos) before(q Pos) bool {
	if p.Line != q.Line {
		return p.Line < q.Line
	}
	return p.Col < q.Col
}

// Error is one problem in a connector file.
type Error struct {
	Pos Pos
	// Msg is lower-case, names what is wrong and how to fix it, and never contains a secret's value.
	Msg string
}

// Error returns "file:line:col: msg".
func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// Errors is every problem found in a file, sorted by position. Load returns it (never empty) as its error;
// use errors.As to get at the individual problems.
type Errors []*Error

// Error returns one "file:line:col: msg" line per problem, joined with newlines.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems as errors, for errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

// sort orders the problems by position; problems at the same position keep the order they were found in.
func (es Errors) sort() {
	sort.SliceStable(es, func(i, j int) bool { return es[i].Pos.before(es[j].Pos) })
}

// SpecFunc looks up a discovered plugin's spec by name. It must be safe to call from the goroutine that
// calls Load; Load does not keep it.
type SpecFunc func(plugin string) (*sdk.Spec, bool)

// File is a loaded, validated connector file.
type File struct {
	// Path is the path as given to Load.
	Path    string
	Version int
	// FailFast: one failing pipeline stops all the others in the file.
	FailFast bool
	// DataDir is where the host keeps its state store, as written (not made absolute); "" means the
	// default chosen by the CLI.
	DataDir string
	// Alerts are the webhooks the file's pipelines' events are posted to (key alerts).
	Alerts []*Alert
	// Cluster, when set (key cluster), makes several sluice instances share the pipelines, each running
	// on the instance that holds its lease in Redis.
	Cluster   *Cluster
	Pipelines []*Pipeline
	// Tests are the file's inline transform tests as written (for Print); TestCases is them checked.
	Tests     []Raw
	TestCases []*Test

	// secrets are the values never to be printed (Secrets).
	secrets []string
}

// Secrets returns the values of the file that sluice must never print: the values of settings their
// plugin marks secret (every string in a secret list or object), what each ${env:…} and ${file:…}
// reference stood for when the file was loaded — in settings of type string, list or object, and in
// alerts — and alerts' header values. A reference in an int, float, bool or duration setting is not
// among them: a number is no credential, and hiding "9092" everywhere would hide ports and counts. A
// value may occur more than once. Print already hides them; the caller hides them in everything else it
// prints (package redact).
func (f *File) Secrets() []string { return slices.Clone(f.secrets) }

// Defaults and limits of a pipeline's batching keys.
const (
	// DefaultBatchMaxRecords is batch_max_records when the file does not set it.
	DefaultBatchMaxRecords = pipeline.DefaultBatchMaxRecords
	// MaxBatchMaxRecords is the largest batch_max_records allowed (the smallest is 1).
	MaxBatchMaxRecords = 65536
	// DefaultBatchMaxBytes is batch_max_bytes when the file does not set it (1 MiB).
	DefaultBatchMaxBytes = pipeline.DefaultBatchMaxBytes
	// MinBatchMaxBytes is the smallest batch_max_bytes allowed (the largest is math.MaxInt32).
	MinBatchMaxBytes = 1024
	// DefaultMaxInFlightBytes is max_in_flight_bytes when the file does not set it (2 MiB), raised to
	// batch_max_bytes when that is larger.
	DefaultMaxInFlightBytes = pipeline.DefaultMaxInFlightBytes
)

// Pipeline is one pipeline of a connector file, with defaults applied.
type Pipeline struct {
	// ID is unique within the file (Load does not see other files: checking across files is the caller's).
	ID string
	// Pos is where the pipeline's list item starts.
	Pos    Pos
	Source *Stage
	// Buffer is nil when the pipeline has none.
	Buffer *Stage
	Sink   *Stage
	// Transforms are the pipeline's transform steps as written (for Print); Steps is them compiled, nil
	// when there are none. They run between the source and the buffer (or the sink, without a buffer).
	Transforms []Raw
	Steps      *transforms.Program
	// SinkTransforms and SinkSteps are the steps run between the buffer and the sink (only with a buffer).
	SinkTransforms []Raw
	SinkSteps      *transforms.Program
	// OnError is OnErrorStop (the default) or OnErrorDLQ.
	OnError string
	// DeadLetter is the pipeline's dead-letter sink (key dlq), nil when it has none.
	DeadLetter *Stage
	// BatchMaxRecords is at most 65536 records (default 1024).
	BatchMaxRecords int
	// BatchMaxBytes is at least 1024 bytes (default 1 MiB).
	BatchMaxBytes int
	// MaxInFlightBytes is at least BatchMaxBytes (default 2 MiB, or BatchMaxBytes if larger).
	MaxInFlightBytes int
	// Retry is the restart policy after transient failures (key retry), defaults applied.
	Retry pipeline.Retry
	// OpenTimeout and StallTimeout are the watchdogs' limits (keys open_timeout and stall_timeout).
	OpenTimeout, StallTimeout time.Duration
	// Verify says how `sluice verify` compares the pipeline's ends (key verify); the zero value compares
	// whole payloads.
	Verify Verify
	// Ordered is false when the pipeline runs Lanes sink lanes, records dispatched by a hash of their key
	// (keys ordered and lanes); Lanes is 1 when Ordered.
	Ordered bool
	Lanes   int
}

// Stage is a pipeline's source, buffer or sink.
type Stage struct {
	Kind sdk.Kind
	// Plugin is the plugin's name as written.
	Plugin string
	// Spec is the plugin's spec as returned by the SpecFunc given to Load.
	Spec *sdk.Spec
	// Settings are validated against the plugin's spec for this kind, with defaults applied, as JSON-ready
	// values: string, int64 (type int), float64 (type float; whole numbers included), bool, []any and
	// map[string]any (nested values: the same types plus nil); durations are normalised to
	// time.Duration.String(). References (${env:…}, ${file:…}) are expanded. Absent optional settings
	// without a default are absent from the map.
	Settings map[string]any
	// InProcess runs a first-party plugin linked into the host instead of as a subprocess.
	InProcess bool
	// SHA256 pins the plugin's binary (key sha256): its SHA-256 in lower-case hex, "" when not pinned.
	// Load checks only how it is written; the caller checks it against the binary. SHA256Pos is where
	// it was written.
	SHA256    string
	SHA256Pos Pos
	// Pos is where the stage's value starts.
	Pos Pos

	// printed is Settings with secrets and referenced values replaced by "<redacted>", for Print.
	printed map[string]any
	// where names the settings in messages instead of the plugin and kind (cluster.redis).
	where string
}

// label names the stage's settings in messages: `plugin "redis" (buffer)`.
func (s *Stage) label() string {
	if s.where != "" {
		return s.where
	}
	return fmt.Sprintf("plugin %q (%s)", s.Plugin, s.Kind)
}

// Raw is a value kept unparsed for a later stage, with where it was written. Value is JSON-ready, like
// Stage.Settings; references in it are not expanded.
type Raw struct {
	Pos   Pos
	Value any
}

// Load reads, parses and validates the connector file at path against the plugins specs knows. The format
// follows the extension: .yaml or .yml, .json, .toml. Every problem in the file is returned together as
// Errors, each naming file:line:col; an error of another type means the file could not be read. The File
// is returned only when there is no problem; it is not shared and the caller may modify it.
//
// Load is Loader{Specs: specs}.Load(path): "unknown plugin" messages cannot list the known plugins, and
// ${env:…} reads the process environment. It is safe for concurrent use.
func Load(path string, specs SpecFunc) (*File, error) {
	return (&Loader{Specs: specs}).Load(path)
}

// Loader loads connector files with more options than Load. The zero value of each optional field is a
// sensible default; a Loader is safe for concurrent use once its fields are set, and must not be copied
// after its first use (it keeps the rules it compiled).
type Loader struct {
	// Specs looks up plugin specs by name. Required.
	Specs SpecFunc
	// Plugins names every known plugin, listed in "unknown plugin" messages. Optional.
	Plugins []string
	// UnknownPluginHint, when set, ends every "unknown plugin" message (after "; "): where plugins were
	// looked for and what was passed over. Optional.
	UnknownPluginHint string
	// LookupEnv resolves ${env:NAME}. Nil means os.LookupEnv.
	LookupEnv func(name string) (string, bool)

	// mu guards ruleCache: each stage's rules, compiled the first time a file uses the stage.
	mu        sync.Mutex
	ruleCache map[*sdk.Stage]*stageRules
}

// Load reads, parses and validates the connector file at path; see the package-level Load.
func (l *Loader) Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return l.parse(path, data)
}
