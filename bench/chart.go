package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// rangeBars are min–max bars over grouped bars: one per workload, at the bar's offset.
type rangeBars struct {
	xs, lo, hi []float64
}

func (b rangeBars) Len() int                    { return len(b.xs) }
func (b rangeBars) XY(i int) (float64, float64) { return b.xs[i], (b.lo[i] + b.hi[i]) / 2 }
func (b rangeBars) YError(i int) (float64, float64) {
	return (b.hi[i] - b.lo[i]) / 2, (b.hi[i] - b.lo[i]) / 2
}

// chart draws the report as a PNG: median records/s (with min–max) and median peak RSS of all processes,
// per workload, one bar per program.
func (r *report) chart(path string) error {
	rows := r.rows()
	keys := r.workloadOrder()
	var programs []string
	for _, o := range rows {
		if !slices.Contains(programs, o.Program) {
			programs = append(programs, o.Program)
		}
	}
	panels := []struct {
		title, unit string
		value       func(row) spread
	}{
		{"records read per second (median, min–max)", "records/s", func(o row) spread { return o.Rate }},
		{"peak RSS of all processes (median, min–max)", "MiB", func(o row) spread {
			s := o.PeakTotal
			return spread{Median: s.Median / (1 << 20), Min: s.Min / (1 << 20), Max: s.Max / (1 << 20), N: s.N}
		}},
	}
	const width, height = 11 * vg.Inch, 9 * vg.Inch
	img := vgimg.New(width, height)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(panels), Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter, PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 2 * vg.Millimeter}
	barWidth := vg.Points(math.Min(40, 420/float64(max(1, len(programs)*len(keys)))))
	for pi, panel := range panels {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%s — %d records of %d B, %s, commit %s", panel.title, r.Records, r.Payload, r.Date.Format("2006-01-02"), r.Commit)
		p.Y.Label.Text = panel.unit
		p.Legend.Top = true
		p.Y.Min = 0
		for gi, prog := range programs {
			values := make(plotter.Values, len(keys))
			bars := rangeBars{}
			for ki, k := range keys {
				for _, o := range rows {
					if o.Key == k && o.Program == prog {
						s := panel.value(o)
						if s.N > 0 {
							values[ki] = s.Median
							bars.xs = append(bars.xs, float64(ki))
							bars.lo, bars.hi = append(bars.lo, s.Min), append(bars.hi, s.Max)
						}
					}
				}
			}
			bc, err := plotter.NewBarChart(values, barWidth)
			if err != nil {
				return err
			}
			bc.LineStyle.Width = 0
			bc.Color = plotutil.Color(gi)
			bc.Offset = barWidth * vg.Length(float64(gi)-float64(len(programs)-1)/2)
			p.Add(bc)
			p.Legend.Add(prog, bc)
			if len(bars.xs) > 0 {
				eb, err := plotter.NewYErrorBars(bars)
				if err != nil {
					return err
				}
				eb.Color = color.Black
				// Error bars are drawn at the data x; shift them onto this program's bar.
				p.Add(shifted{eb, bc.Offset})
			}
		}
		p.NominalX(keys...)
		top := 0.0
		for _, o := range rows {
			if s := panel.value(o); s.N > 0 {
				top = math.Max(top, s.Max)
			}
		}
		p.Y.Max = top * 1.3 // room for the legend
		p.Draw(tiles.At(dc, 0, pi))
	}
	png := vgimg.PngCanvas{Canvas: img}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := png.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// shifted draws error bars moved right by a fixed length, onto their bar of a group.
type shifted struct {
	*plotter.YErrorBars
	by vg.Length
}

func (s shifted) Plot(c draw.Canvas, p *plot.Plot) {
	c.Rectangle.Min.X += s.by
	c.Rectangle.Max.X += s.by
	s.YErrorBars.Plot(c, p)
}
