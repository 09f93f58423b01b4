package config

import (
	"time"

	"github.com/sluicehq/sluice/runtime/pipeline"
)

// retryKeys are the keys of a pipeline's retry object.
var retryKeys = []string{"initial", "max", "give_up_after"}

// failures reads a pipeline's restart policy and watchdog keys, applying their defaults (which live with
// the behaviour, in package pipeline):
//
//	retry: forever                                       never give up on transient failures
//	retry: { initial: 500ms, max: 30s, give_up_after: 5m }  (give_up_after: never is retry: forever)
//	open_timeout: 2m                                     bound on each stage's Open and Checkpoint
//	stall_timeout: 2m                                    a stage holding records unacknowledged this long is restarted
func (v *validator) failures(n *node, p *Pipeline) {
	p.Retry = pipeline.Retry{Initial: pipeline.DefaultRetryInitial, Max: pipeline.DefaultRetryMax,
		GiveUpAfter: pipeline.DefaultGiveUpAfter}
	if c := n.fields["retry"]; c != nil {
		switch {
		case c.kind == kindScalar && c.scalar == "forever":
			p.Retry.Forever = true
		case c.kind == kindMap:
			v.unknownKeys(c, "in retry", retryKeys)
			for _, k := range retryKeys {
				f := c.fields[k]
				if f == nil {
					continue
				}
				if k == "give_up_after" && f.kind == kindScalar && f.scalar == "never" {
					p.Retry.Forever = true
					continue
				}
				d, ok := v.durationKey(f, "retry."+k)
				if !ok {
					continue
				}
				switch k {
				case "initial":
					p.Retry.Initial = d
				case "max":
					p.Retry.Max = d
				case "give_up_after":
					p.Retry.GiveUpAfter = d
				}
			}
			if p.Retry.Max < p.Retry.Initial {
				v.errorf(c.pos, "retry: max (%s) is less than initial (%s)", p.Retry.Max, p.Retry.Initial)
			}
		default:
			v.errorf(c.pos, `retry: want forever or an object { initial: 500ms, max: 30s, give_up_after: 5m }, got %s`, describe(c, false))
		}
	}
	p.OpenTimeout, p.StallTimeout = pipeline.DefaultOpenTimeout, pipeline.DefaultStallTimeout
	if c := n.fields["open_timeout"]; c != nil {
		if d, ok := v.durationKey(c, "open_timeout"); ok {
			p.OpenTimeout = d
		}
	}
	if c := n.fields["stall_timeout"]; c != nil {
		if d, ok := v.durationKey(c, "stall_timeout"); ok {
			p.StallTimeout = d
		}
	}
}

// durationKey reads a positive duration written as a string ("5s").
func (v *validator) durationKey(n *node, name string) (time.Duration, bool) {
	s, ok := n.scalar.(string)
	if n.kind != kindScalar || !ok {
		v.errorf(n.pos, `%s: want a duration like "30s", got %s`, name, describe(n, false))
		return 0, false
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		v.errorf(n.pos, `%s: %q is not a duration: want a number with a unit (ms, s, m, h), like "500ms" or "5m"`, name, truncate(s, 40))
		return 0, false
	case d <= 0:
		v.errorf(n.pos, "%s: want a positive duration, got %s", name, s)
		return 0, false
	}
	return d, true
}
