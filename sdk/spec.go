package sdk

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"time"
)

// Kind is a pipeline stage a plugin can serve.
type Kind string

// The three stage kinds.
const (
	KindSource Kind = "source"
	KindBuffer Kind = "buffer"
	KindSink   Kind = "sink"
)

// Type is the type of a setting's value as written in a connector file.
type Type string

// Setting types. The host checks each value against its type at load and hands the plugin a JSON value:
// string, number, bool, a duration as a Go duration string ("1.5s"), a list or an object.
const (
	TypeString   Type = "string"
	TypeInt      Type = "int"
	TypeFloat    Type = "float"
	TypeBool     Type = "bool"
	TypeDuration Type = "duration"
	TypeList     Type = "list"
	TypeObject   Type = "object"
)

// Setting documents one configuration key of a plugin stage.
type Setting struct {
	// Name is the snake_case key users write under settings.
	Name string `json:"name"`
	Type Type   `json:"type"`
	// Default is the value used when the key is absent, written as in a connector file ("1024", "5s",
	// "true"; a bool is true or false, a list or object YAML or JSON) and read by Setting.Parse, the
	// same for the host and package sdktest. Empty means no default.
	Default string `json:"default,omitempty"`
	// Required settings must be present; a required setting has no default.
	Required bool `json:"required,omitempty"`
	// Enum, when set, lists the only values allowed (for string settings).
	Enum []string `json:"enum,omitempty"`
	// Secret settings are never printed by the host (validate --print, logs).
	Secret bool `json:"secret,omitempty"`
	// Min and Max bound an int, float or duration setting, inclusive, written as in a connector file
	// ("0", "0.5", "1ms"). Empty means unbounded on that side. The host checks them when a file loads
	// (validate and run); a float setting must also be finite (no NaN or infinity) whatever its bounds.
	Min string `json:"min,omitempty"`
	Max string `json:"max,omitempty"`
	// Doc says what the setting does, its default and its trade-off, in a sentence or two.
	Doc string `json:"doc"`
}

// Capabilities declare what a stage guarantees beyond the protocol's minimum.
type Capabilities struct {
	// AtomicPosition: the buffer or sink stores each batch's upstream position atomically with the batch's
	// data, and Checkpoint returns the last one stored. With it, the host resumes the upstream exactly after
	// what was stored and the pipeline is exactly-once across crashes; without it the host keeps positions
	// in its own state store and the pipeline is at-least-once.
	AtomicPosition bool `json:"atomic_position,omitempty"`
	// AtomicPositionSetting, when set, names a bool setting of the stage that AtomicPosition depends on:
	// the stage stores positions atomically only when that setting is true (a sink that is transactional
	// unless configured otherwise).
	AtomicPositionSetting string `json:"atomic_position_setting,omitempty"`
	// WritesStdout: what the stage prints on its standard output is its output, meant for the host's
	// standard output (the stdout sink). The host forwards the stdout of such stages; any other plugin's
	// stdout lines are logged as warnings, never mixed into the host's output.
	WritesStdout bool `json:"writes_stdout,omitempty"`
}

// Atomic reports whether a stage with these capabilities stores positions atomically when configured
// with settings (values as the host sends them).
func (c Capabilities) Atomic(settings map[string]any) bool {
	if !c.AtomicPosition {
		return false
	}
	if c.AtomicPositionSetting == "" {
		return true
	}
	on, _ := settings[c.AtomicPositionSetting].(bool)
	return on
}

// Stage describes one stage kind a plugin serves.
type Stage struct {
	Summary      string       `json:"summary"`
	Settings     []Setting    `json:"settings,omitempty"`
	Capabilities Capabilities `json:"capabilities"`
	// Rules are conditions across the stage's settings that the host checks when a file loads, so that a
	// combination the plugin would refuse at Open is reported at its file:line:col by validate.
	Rules []Rule `json:"rules,omitempty"`
}

// Rule is a condition a stage's settings must meet.
type Rule struct {
	// Expr is a boolean expression (expr-lang syntax) over the stage's settings by name, with defaults
	// applied; an absent setting without a default is nil. The settings are valid when it is true:
	// `!(transactional && acks != "all")`. Values are as the host sends them (an int is an int64),
	// except durations, which are durations: `retry_max >= retry_initial`, `timeout > duration("1s")`.
	// The host checks rules only once every setting is valid on its own (type, enum, bounds).
	Expr string `json:"expr"`
	// Message says what is wrong and how to fix it, shown when Expr is false.
	Message string `json:"message"`
	// Settings names the settings the rule is about: the problem is reported where the first of them that
	// is written in the file appears (else at the stage).
	Settings []string `json:"settings,omitempty"`
}

// Spec describes a plugin: who it is, which stages it serves and how each is configured. The host reads
// it when it discovers the plugin, validates connector files against it, and prints it with
// `sluice plugins describe`.
type Spec struct {
	// Name is how connector files refer to the plugin: lower-case letters, digits, '-' and '_'. Plugins are
	// identified by Name, not by file name; two plugins with the same Name are an error.
	Name    string `json:"name"`
	Version string `json:"version"`
	Summary string `json:"summary"`
	// Author or vendor, for `sluice plugins list`.
	Author string `json:"author,omitempty"`
	Source *Stage `json:"source,omitempty"`
	Buffer *Stage `json:"buffer,omitempty"`
	Sink   *Stage `json:"sink,omitempty"`
}

// Stage returns the description of kind k, or nil when the plugin does not serve it.
func (s *Spec) Stage(k Kind) *Stage {
	switch k {
	case KindSource:
		return s.Source
	case KindBuffer:
		return s.Buffer
	case KindSink:
		return s.Sink
	}
	return nil
}

// Kinds lists the stage kinds the plugin serves, in the order source, buffer, sink.
func (s *Spec) Kinds() []Kind {
	var ks []Kind
	for _, k := range []Kind{KindSource, KindBuffer, KindSink} {
		if s.Stage(k) != nil {
			ks = append(ks, k)
		}
	}
	return ks
}

var (
	nameRE    = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	settingRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
)

// Validate checks that the spec is well formed: a valid name, at least one stage, unique snake_case
// setting names with known types and docs, well-formed bounds, no required setting with a default, and
// every default a valid value of its setting (as Setting.DefaultValue reads it: the host's rule).
func (s *Spec) Validate() error {
	var errs []error
	if !nameRE.MatchString(s.Name) {
		errs = append(errs, fmt.Errorf("name %q: want lower-case letters, digits, '-' or '_', starting with a letter", s.Name))
	}
	if len(s.Kinds()) == 0 {
		errs = append(errs, errors.New("serves no stage: set Source, Buffer or Sink"))
	}
	if s.Source != nil && s.Source.Capabilities.AtomicPosition {
		errs = append(errs, errors.New("source: atomic_position is a buffer or sink capability"))
	}
	for _, k := range s.Kinds() {
		seen := map[string]bool{}
		for _, st := range s.Stage(k).Settings {
			where := fmt.Sprintf("%s setting %q", k, st.Name)
			switch {
			case !settingRE.MatchString(st.Name):
				errs = append(errs, fmt.Errorf("%s: names are snake_case", where))
			case seen[st.Name]:
				errs = append(errs, fmt.Errorf("%s: declared twice", where))
			}
			seen[st.Name] = true
			switch st.Type {
			case TypeString, TypeInt, TypeFloat, TypeBool, TypeDuration, TypeList, TypeObject:
			default:
				errs = append(errs, fmt.Errorf("%s: unknown type %q", where, st.Type))
			}
			if st.Required && st.Default != "" {
				errs = append(errs, fmt.Errorf("%s: a required setting cannot have a default", where))
			}
			if st.Doc == "" {
				errs = append(errs, fmt.Errorf("%s: missing doc", where))
			}
			if len(st.Enum) > 0 && st.Type != TypeString {
				errs = append(errs, fmt.Errorf("%s: enum applies to string settings, not %s", where, st.Type))
			}
			var ve *ValueError
			if _, err := st.DefaultValue(); err != nil && !(errors.As(err, &ve) && ve.Problem == BadDeclaration) {
				errs = append(errs, fmt.Errorf("%s: default %q: %v", where, st.Default, err))
			}
			for _, b := range []struct{ name, v string }{{"min", st.Min}, {"max", st.Max}} {
				if b.v == "" {
					continue
				}
				if err := checkBound(st.Type, b.v); err != nil {
					errs = append(errs, fmt.Errorf("%s: %s %q: %v", where, b.name, b.v, err))
				}
			}
		}
		for i, r := range s.Stage(k).Rules {
			if r.Expr == "" || r.Message == "" {
				errs = append(errs, fmt.Errorf("%s rule %d: needs expr and message", k, i))
			}
			for _, name := range r.Settings {
				if !seen[name] {
					errs = append(errs, fmt.Errorf("%s rule %d: names setting %q, which the stage does not declare", k, i, name))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// checkBound checks that v, a Min or Max, is a value of type t.
func checkBound(t Type, v string) error {
	switch t {
	case TypeInt:
		_, err := strconv.ParseInt(v, 10, 64)
		return err
	case TypeFloat:
		f, err := strconv.ParseFloat(v, 64)
		if err == nil && (math.IsNaN(f) || math.IsInf(f, 0)) {
			err = errors.New("not finite")
		}
		return err
	case TypeDuration:
		_, err := time.ParseDuration(v)
		return err
	}
	return fmt.Errorf("bounds apply to int, float and duration settings, not %s", t)
}
