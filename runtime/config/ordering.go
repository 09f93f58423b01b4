package config

import (
	"github.com/sluicehq/sluice/runtime/pipeline"
)

// Limits of a pipeline's lanes key (the defaults live with the behaviour, in package pipeline).
const (
	// DefaultLanes is lanes when ordered is false and the file does not set it.
	DefaultLanes = pipeline.DefaultLanes
	// MaxLanes is the largest lanes allowed (the smallest is 1).
	MaxLanes = pipeline.MaxLanes
)

// ordering reads a pipeline's ordered and lanes keys:
//
//	ordered: true            the default: one sink, every record in buffer order
//	ordered: false           4 sink lanes; records are dispatched by a hash of their key
//	ordered: false, lanes: 8 8 sink lanes (1 to 64)
//
// ordered: false needs a buffer and a sink that stores positions atomically (exactly-once keeps per-lane
// positions); whether the buffer can compare its positions is checked when the pipeline starts.
func (v *validator) ordering(n *node, p *Pipeline, label string) {
	p.Ordered, p.Lanes = true, 1
	c := n.fields["ordered"]
	if c != nil && !isNull(c) {
		p.Ordered = v.boolKey(c, "ordered")
	}
	l := n.fields["lanes"]
	if l != nil && !isNull(l) {
		i, ok := v.intKey(l, "lanes")
		switch {
		case !ok:
		case p.Ordered:
			v.errorf(l.pos, "lanes: only a pipeline with ordered: false runs several sink lanes: add ordered: false, or remove lanes")
		case i < 1 || i > MaxLanes:
			v.errorf(l.pos, "lanes %d is out of range: want 1 to %d", i, MaxLanes)
		default:
			p.Lanes = int(i)
		}
	} else if !p.Ordered {
		p.Lanes = DefaultLanes
	}
	if p.Ordered {
		return
	}
	switch {
	case p.Buffer == nil:
		v.errorf(c.pos, "ordered: false needs a buffer, and %s has none: add buffer: { plugin: redis, … } (lanes read from a buffer; sources without one are not supported yet), or remove ordered: false", label)
	case p.Sink == nil || p.Sink.Spec == nil:
	case !sinkAtomic(p.Sink):
		v.errorf(c.pos, "ordered: false keeps exactly-once with a position per lane, which needs a sink that stores positions atomically with its data, and %s does not%s: use such a sink (kafka, file-atomic), or remove ordered: false",
			p.Sink.label(), atomicHint(p.Sink))
	}
}

// sinkAtomic reports whether s stores positions atomically with the settings it has.
func sinkAtomic(s *Stage) bool {
	st := s.Spec.Stage(s.Kind)
	return st != nil && st.Capabilities.Atomic(s.Settings)
}

// atomicHint says which setting would make s atomic, when one would.
func atomicHint(s *Stage) string {
	st := s.Spec.Stage(s.Kind)
	if st == nil || !st.Capabilities.AtomicPosition || st.Capabilities.AtomicPositionSetting == "" {
		return ""
	}
	return " with " + st.Capabilities.AtomicPositionSetting + ": false"
}
