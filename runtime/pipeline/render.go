package pipeline

import (
	"context"
	"errors"
	"time"

	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
)

// Positions for people. A plugin may render its positions (sdk.PositionFormatter): the host asks it only
// when it shows one — where a pipeline resumes, in its log, and the latest acknowledged position in its
// status, refreshed at most once per renderInterval while it changes — so rendering costs nothing per
// record or batch.

// renderInterval is how often, at most, the host asks a stage to render its latest acknowledged position.
const renderInterval = time.Second

// positionText is a stage's rendering of one of its positions.
type positionText struct {
	pos  record.Position
	text string
}

// formatter renders a stage's positions; nil for stages that have none (sinks).
type formatter func(ctx context.Context, pos record.Position) (string, error)

func formatterOf(s *stage) formatter {
	switch s.role {
	case "source":
		return s.conn.Source().FormatPosition
	case "buffer":
		return s.conn.Buffer().FormatPosition
	}
	return nil
}

// describe renders pos, a position of stage s, for the log: as the plugin renders it (within
// renderInterval) when it does, else as fmtPos does.
func (p *Pipeline) describe(ctx context.Context, s *stage, pos record.Position) string {
	if f := formatterOf(s); f != nil && pos != nil {
		ctx, cancel := context.WithTimeout(ctx, renderInterval)
		defer cancel()
		if text, err := f(ctx, pos); err == nil {
			return text
		}
	}
	return fmtPos(pos)
}

// renderer keeps Pipeline.texts up to date for the upstream stages of one attempt.
type renderer struct {
	p      *Pipeline
	stages map[string]formatter // by state name ("source", "buffer")
}

// renderPositions renders the latest acknowledged positions of the attempt's upstream stages every
// renderInterval until ctx ends. A stage whose plugin does not render its positions is asked once.
func (p *Pipeline) renderPositions(ctx context.Context, r *renderer) {
	t := time.NewTicker(renderInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.render(ctx)
	}
}

// render asks each stage to render its latest acknowledged position, when it changed since the last
// rendering, each within renderInterval.
func (r *renderer) render(ctx context.Context) {
	for name, f := range r.stages {
		r.p.mu.Lock()
		pos, last := r.p.positions[name], r.p.texts[name]
		r.p.mu.Unlock()
		if pos == nil || pos.Equal(last.pos) {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, renderInterval)
		text, err := f(rctx, pos)
		cancel()
		switch {
		case errors.Is(err, protocol.ErrNoFormat):
			delete(r.stages, name)
			continue
		case err != nil:
			r.p.log.Debug("the plugin could not render a position", "stage", name, "err", err)
			continue
		}
		r.p.mu.Lock()
		if r.p.texts == nil {
			r.p.texts = map[string]positionText{}
		}
		r.p.texts[name] = positionText{pos: pos, text: text}
		r.p.mu.Unlock()
	}
}
