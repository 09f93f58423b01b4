package main

import (
	"math"
	"slices"
)

// spread is the median and the range of a set of measurements.
type spread struct {
	Median, Min, Max float64
	// N is how many measurements there were; 0 means none (the other fields are NaN).
	N int
}

// summarize returns the median (the mean of the two middle values for an even count), minimum and maximum
// of xs, ignoring NaN (a value a run did not have).
func summarize(xs []float64) spread {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return spread{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return spread{Median: med, Min: v[0], Max: v[len(v)-1], N: len(v)}
}
