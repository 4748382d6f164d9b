package main

import (
	"fmt"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/perkgo/perk/perk"
)

// series is one curve or bar group of a chart: a value per category, NaN
// where the series has no data.
type series struct {
	name   string
	values []float64
}

// chart is a chart over nominal categories on the x axis.
type chart struct {
	title, xLabel, yLabel string
	categories            []string
	series                []series
	// yMin and yMax fix the y range when yFixed is set.
	yFixed     bool
	yMin, yMax float64
}

// chartWriter renders charts to image files; the gonum/plot one is the
// default, and a test or another renderer can replace it.
type chartWriter interface {
	lines(path string, c chart) error
	bars(path string, c chart) error
}

// gonumCharts renders PNG (or, by the file extension, SVG/PDF) charts with
// gonum.org/v1/plot.
type gonumCharts struct{}

const chartW, chartH = 7 * vg.Inch, 4 * vg.Inch

func newPlot(c chart) *plot.Plot {
	p := plot.New()
	p.Title.Text = c.title
	p.X.Label.Text = c.xLabel
	p.Y.Label.Text = c.yLabel
	p.NominalX(c.categories...)
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(8)
	// Leave head room above the data for the legend.
	if c.yFixed {
		p.Y.Min, p.Y.Max = c.yMin, c.yMax+0.2*(c.yMax-c.yMin)
	} else {
		hi := 0.0
		for _, s := range c.series {
			for _, v := range s.values {
				if !math.IsNaN(v) {
					hi = math.Max(hi, v)
				}
			}
		}
		if hi > 0 {
			p.Y.Min, p.Y.Max = 0, 1.3*hi
		}
	}
	return p
}

// lines draws each series as a line with markers through its known values.
func (gonumCharts) lines(path string, c chart) error {
	p := newPlot(c)
	for i, s := range c.series {
		var xys plotter.XYs
		for k, v := range s.values {
			if !math.IsNaN(v) {
				xys = append(xys, plotter.XY{X: float64(k), Y: v})
			}
		}
		if len(xys) == 0 {
			continue
		}
		l, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			return fmt.Errorf("chart %s: %w", path, err)
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i)
		pts.Color = plotutil.Color(i)
		pts.Shape = plotutil.Shape(i)
		p.Add(l, pts)
		p.Legend.Add(s.name, l, pts)
	}
	return save(p, c, path)
}

// bars draws the series as grouped bars per category (missing values as
// empty bars).
func (gonumCharts) bars(path string, c chart) error {
	p := newPlot(c)
	n := max(len(c.series), 1)
	w := vg.Points(min(40, 200/float64(n*max(len(c.categories), 1))+10))
	for i, s := range c.series {
		vals := make(plotter.Values, len(s.values))
		for k, v := range s.values {
			if !math.IsNaN(v) {
				vals[k] = v
			}
		}
		bc, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return fmt.Errorf("chart %s: %w", path, err)
		}
		bc.Color = plotutil.Color(i)
		bc.LineStyle.Width = 0
		bc.Offset = w * vg.Length(float64(i)-float64(n-1)/2)
		p.Add(bc)
		p.Legend.Add(s.name, bc)
	}
	return save(p, c, path)
}

// save fixes the x range around the categories (half a slot of margin, so
// grouped bars stay inside) and writes the plot.
func save(p *plot.Plot, c chart, path string) error {
	p.X.Min, p.X.Max = -0.5, float64(len(c.categories))-0.5
	if err := p.Save(chartW, chartH, path); err != nil {
		return fmt.Errorf("chart %s: %w", path, err)
	}
	return nil
}

// Chart files written to the output directory.
const (
	plotAccLength = "accuracy_vs_length.png"
	plotAccDepth  = "accuracy_by_depth.png"
	plotMemory    = "memory_vs_length.png"
	plotTime      = "time_vs_length.png"
)

// rowSeries extracts one value per row and evaluated mode.
func rowSeries(r *perk.Report, rows []perk.Row, f func(perk.Cell) (float64, bool)) []series {
	var out []series
	for _, m := range r.Modes {
		s := series{name: modeName(m), values: make([]float64, len(rows))}
		for k, row := range rows {
			s.values[k] = math.NaN()
			if c, ok := row.Cells[m]; ok {
				if v, ok := f(c); ok {
					s.values[k] = v
				}
			}
		}
		out = append(out, s)
	}
	return out
}

func labels(rows []perk.Row) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.Label
	}
	return out
}

func modeName(m string) string {
	switch m {
	case perk.ModePERK:
		return "PERK"
	case perk.ModeICR:
		return "ICR"
	}
	return m
}

// writeCharts renders the report's charts into dir and returns the files
// written.
func writeCharts(cw chartWriter, dir string, r *perk.Report, join func(string) string) ([]string, error) {
	var written []string
	acc := func(c perk.Cell) (float64, bool) { return 100 * c.Accuracy, c.N > 0 }
	answered := func(f func(perk.Cell) float64) func(perk.Cell) (float64, bool) {
		return func(c perk.Cell) (float64, bool) { return f(c), c.N > c.Errors }
	}
	if len(r.Length) > 0 {
		xl := "context length (tokens)"
		cats := labels(r.Length)
		charts := []struct {
			file string
			c    chart
			bar  bool
		}{
			{plotAccLength, chart{title: "Accuracy vs context length", xLabel: xl, yLabel: "accuracy (%)", categories: cats,
				series: rowSeries(r, r.Length, acc), yFixed: true, yMin: 0, yMax: 100}, false},
			{plotMemory, chart{title: "Peak memory per record vs context length", xLabel: xl, yLabel: "peak tracked memory (MiB)", categories: cats,
				series: rowSeries(r, r.Length, answered(func(c perk.Cell) float64 { return c.MeanPeakBytes / (1 << 20) }))}, false},
			{plotTime, chart{title: "Time per record vs context length", xLabel: xl, yLabel: "wall-clock time (s)", categories: cats,
				series: rowSeries(r, r.Length, answered(func(c perk.Cell) float64 { return c.MeanSeconds }))}, false},
		}
		if len(r.Depth) > 0 {
			charts = append(charts, struct {
				file string
				c    chart
				bar  bool
			}{plotAccDepth, chart{title: "Accuracy by needle depth", xLabel: "depth of the relevant fact", yLabel: "accuracy (%)",
				categories: labels(r.Depth), series: rowSeries(r, r.Depth, acc), yFixed: true, yMin: 0, yMax: 100}, true})
		}
		for _, ch := range charts {
			path := join(ch.file)
			var err error
			if ch.bar {
				err = cw.bars(path, ch.c)
			} else {
				err = cw.lines(path, ch.c)
			}
			if err != nil {
				return written, err
			}
			written = append(written, path)
		}
	}
	return written, nil
}
