package redact

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// Handler returns a slog.Handler that hides the set's values in every record before next writes it: in
// the message and in every attribute value (errors, strings, anything printed, inside groups too). An
// attribute whose text holds no secret is passed on unchanged, so a JSON handler keeps its type.
// Attributes given to WithAttrs are redacted with the values the set holds at that moment.
//
// Records below next's level cost nothing more; the others cost one pass of the set's replacer over
// their message and each attribute's text. A nil Set returns next.
func (s *Set) Handler(next slog.Handler) slog.Handler {
	if s == nil {
		return next
	}
	return &handler{set: s, next: next}
}

type handler struct {
	set  *Set
	next slog.Handler
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	rep := h.set.rep.Load()
	if rep == nil {
		return h.next.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, rep.Replace(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(rep, a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	if rep := h.set.rep.Load(); rep != nil {
		red := make([]slog.Attr, len(as))
		for i, a := range as {
			red[i] = redactAttr(rep, a)
		}
		as = red
	}
	return &handler{set: h.set, next: h.next.WithAttrs(as)}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{set: h.set, next: h.next.WithGroup(name)}
}

// redactAttr returns a with the set's values hidden in its value.
func redactAttr(rep *strings.Replacer, a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		s := v.String()
		if r := rep.Replace(s); r != s {
			return slog.String(a.Key, r)
		}
	case slog.KindGroup:
		g := v.Group()
		out := make([]slog.Attr, len(g))
		for i, c := range g {
			out[i] = redactAttr(rep, c)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(out...)}
	case slog.KindAny:
		var text string
		switch x := v.Any().(type) {
		case error:
			text = x.Error()
		case fmt.Stringer:
			text = x.String()
		case []byte:
			text = string(x)
		default:
			text = fmt.Sprint(x)
		}
		if r := rep.Replace(text); r != text {
			return slog.String(a.Key, r)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
