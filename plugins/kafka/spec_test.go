package kafka

import (
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/expr-lang/expr"

	"github.com/sluicehq/sluice/sdk"
)

// merged returns a new map with the entries of a, then b.
func merged(a, b map[string]any) map[string]any {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

// hostValues returns the sink's settings as the host hands them over (JSON values, defaults applied, an
// absent setting without default nil), with overrides.
func hostValues(t *testing.T, overrides map[string]any) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, s := range settings {
		v, err := s.DefaultValue() // the host's resolver
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		out[s.Name] = v
	}
	maps.Copy(out, overrides)
	return out
}

// TestRules: the spec's rules, evaluated as the host does (expr-lang over the settings with defaults),
// refuse exactly the combinations ParseConfig refuses.
func TestRules(t *testing.T) {
	programs := make([]func(map[string]any) (bool, error), len(rules))
	for i, r := range rules {
		p, err := expr.Compile(r.Expr, expr.Env(hostValues(t, nil)), expr.AsBool())
		if err != nil {
			t.Fatalf("rule %q: %v", r.Expr, err)
		}
		programs[i] = func(env map[string]any) (bool, error) {
			v, err := expr.Run(p, env)
			if err != nil {
				return false, err
			}
			return v.(bool), nil
		}
	}
	for _, tc := range []struct {
		name     string
		settings map[string]any
		valid    bool
	}{
		{"defaults", nil, true},
		{"acks leader, transactional", map[string]any{"acks": "leader"}, false},
		{"acks none, transactional", map[string]any{"acks": "none"}, false},
		{"acks none, idempotent", map[string]any{"acks": "none", "transactional": false}, true},
		{"user without mechanism", map[string]any{"sasl_username": "u"}, false},
		{"password without mechanism", map[string]any{"sasl_password": "p"}, false},
		{"mechanism without user", map[string]any{"sasl_mechanism": "PLAIN"}, false},
		{"mechanism with an empty user", map[string]any{"sasl_mechanism": "PLAIN", "sasl_username": ""}, false},
		{"scram", map[string]any{"sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "u", "sasl_password": "p"}, true},
		{"certificate without key", map[string]any{"tls_cert_file": "c.pem"}, false},
		{"key without certificate", map[string]any{"tls_key_file": "k.pem"}, false},
		{"certificate and key", map[string]any{"tls_cert_file": "c.pem", "tls_key_file": "k.pem"}, true},
		{"certificate and key in one file", map[string]any{"tls_cert_file": "ck.pem", "tls_key_file": "ck.pem"}, true},
		{"insecure with a CA", map[string]any{"tls_insecure_skip_verify": true, "tls_ca_file": "ca.pem"}, false},
		{"insecure", map[string]any{"tls_insecure_skip_verify": true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := hostValues(t, merged(map[string]any{"brokers": []any{"b:9092"}}, tc.settings))
			var failed []string
			for i, run := range programs {
				ok, err := run(env)
				if err != nil {
					t.Fatalf("rule %q: %v", rules[i].Expr, err)
				}
				if !ok {
					failed = append(failed, rules[i].Message)
				}
			}
			// The host sends no key for an absent setting without a default (the rules see nil).
			maps.DeleteFunc(env, func(_ string, v any) bool { return v == nil })
			_, err := ParseConfig(sdk.Settings(env), "orders")
			switch {
			case tc.valid && (len(failed) > 0 || err != nil):
				t.Fatalf("refused: rules %q, ParseConfig %v", failed, err)
			case !tc.valid && (len(failed) == 0 || err == nil):
				t.Fatalf("rules refuse %q and ParseConfig says %v: want both to refuse", failed, err)
			}
		})
	}
}

// TestBounds: every bound the spec declares is where ParseConfig draws the line.
func TestBounds(t *testing.T) {
	n := 0
	for _, s := range settings {
		for _, b := range []struct {
			bound string
			step  int // the direction out of range
		}{{s.Min, -1}, {s.Max, +1}} {
			if b.bound == "" {
				continue
			}
			n++
			var at, out any
			switch s.Type {
			case sdk.TypeInt:
				v, err := strconv.Atoi(b.bound)
				if err != nil {
					t.Fatalf("%s: bound %q: %v", s.Name, b.bound, err)
				}
				at, out = float64(v), float64(v+b.step)
			case sdk.TypeDuration:
				d, err := time.ParseDuration(b.bound)
				if err != nil {
					t.Fatalf("%s: bound %q: %v", s.Name, b.bound, err)
				}
				at, out = d.String(), (d + time.Duration(b.step)*time.Millisecond).String()
			default:
				t.Fatalf("%s: bounds on a %s setting", s.Name, s.Type)
			}
			base := map[string]any{"brokers": []any{"b:9092"}}
			if _, err := ParseConfig(sdk.Settings(merged(base, map[string]any{s.Name: at})), "orders"); err != nil {
				t.Errorf("%s = %v (its bound): %v", s.Name, at, err)
			}
			if _, err := ParseConfig(sdk.Settings(merged(base, map[string]any{s.Name: out})), "orders"); err == nil {
				t.Errorf("%s = %v (beyond its bound %s) accepted", s.Name, out, b.bound)
			}
		}
	}
	if n == 0 {
		t.Fatal("the spec declares no bounds")
	}
}
