package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/types"
	"github.com/expr-lang/expr/vm"

	"github.com/sluicehq/sluice/sdk"
)

// stageRules are a stage's rules compiled, or why they could not be.
type stageRules struct {
	progs []*vm.Program // one per rule of the stage, nil for a rule that did not compile
	// faults describe the rules that did not compile or are not boolean: the plugin's fault.
	faults []string
}

// compiled returns the stage's rules compiled, compiling them the first time the Loader meets the stage.
func (l *Loader) compiled(st *sdk.Stage) *stageRules {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r, ok := l.ruleCache[st]; ok {
		return r
	}
	r := compileRules(st)
	if l.ruleCache == nil {
		l.ruleCache = map[*sdk.Stage]*stageRules{}
	}
	l.ruleCache[st] = r
	return r
}

// compileRules compiles a stage's rules against the types of its settings. A setting that always has a
// value (required, or with a default) has its type's Go type, so that the compiler checks how a rule
// uses it; any other setting may be absent (nil) and is typed any.
func compileRules(st *sdk.Stage) *stageRules {
	env := make(types.Map, len(st.Settings))
	for _, d := range st.Settings {
		env[d.Name] = types.Any
		if d.Required || d.Default != "" {
			env[d.Name] = types.TypeOf(zeroOf(d.Type))
		}
	}
	r := &stageRules{progs: make([]*vm.Program, len(st.Rules))}
	for i, rule := range st.Rules {
		prog, err := expr.Compile(rule.Expr, expr.Env(env), expr.AsBool())
		if err != nil {
			r.faults = append(r.faults, fmt.Sprintf("rule %q that does not compile: %s", truncate(rule.Expr, 80), firstLine(err.Error())))
			continue
		}
		r.progs[i] = prog
	}
	return r
}

// zeroOf returns a value of the Go type a rule sees a setting of type t as: the type of its value in
// Stage.Settings, except durations, which rules compare as time.Duration.
func zeroOf(t sdk.Type) any {
	switch t {
	case sdk.TypeString:
		return ""
	case sdk.TypeInt:
		return int64(0)
	case sdk.TypeFloat:
		return 0.0
	case sdk.TypeBool:
		return false
	case sdk.TypeDuration:
		return time.Duration(0)
	case sdk.TypeList:
		return []any{}
	case sdk.TypeObject:
		return map[string]any{}
	}
	return nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// rules checks a stage's settings (resolved, defaults applied) against the stage's rules. n is the
// settings object as written (nil when absent), pluginAt where the plugin is named: a fault in the
// plugin's rules is reported there, a broken rule at the first of its settings written in the file, or
// else at the stage.
func (v *validator) rules(s *Stage, st *sdk.Stage, n *node, pluginAt Pos) {
	if len(st.Rules) == 0 {
		return
	}
	where := s.label()
	compiled := v.compiled(st)
	for _, f := range compiled.faults {
		v.errorf(pluginAt, "%s declares a %s; this is the plugin's fault, not the file's: report it to the plugin's author", where, f)
	}
	env := make(map[string]any, len(st.Settings))
	for _, d := range st.Settings {
		val, ok := s.Settings[d.Name]
		if !ok {
			env[d.Name] = nil
			continue
		}
		if d.Type == sdk.TypeDuration {
			if str, isString := val.(string); isString {
				if dur, err := time.ParseDuration(str); err == nil {
					val = dur
				}
			}
		}
		env[d.Name] = val
	}
	for i, rule := range st.Rules {
		prog := compiled.progs[i]
		if prog == nil {
			continue
		}
		out, err := expr.Run(prog, env)
		ok, isBool := out.(bool)
		switch {
		case err != nil:
			v.errorf(pluginAt, "%s declares a rule that fails on these settings; this is the plugin's fault, not the file's: report it to the plugin's author: rule %q: %s",
				where, truncate(rule.Expr, 80), firstLine(err.Error()))
		case !isBool:
			v.errorf(pluginAt, "%s declares a rule that is not boolean (it gave %s); this is the plugin's fault, not the file's: report it to the plugin's author: rule %q",
				where, typeName(out), truncate(rule.Expr, 80))
		case !ok:
			at, what := s.Pos, where
			for _, name := range rule.Settings {
				if c := settingNode(n, name); c != nil {
					at, what = c.pos, fmt.Sprintf("setting %q of %s", name, where)
					break
				}
			}
			v.errorf(at, "%s: %s", what, rule.Message)
		}
	}
}

func settingNode(n *node, name string) *node {
	if n == nil {
		return nil
	}
	return n.fields[name]
}

func typeName(v any) string {
	if v == nil {
		return "nil"
	}
	return fmt.Sprintf("%T", v)
}
