package main

import (
	"math"
	"testing"
)

func TestSummarize(t *testing.T) {
	nan := math.NaN()
	for _, c := range []struct {
		in   []float64
		want spread
	}{
		{[]float64{3, 1, 2}, spread{Median: 2, Min: 1, Max: 3, N: 3}},
		{[]float64{4, 1, 3, 2}, spread{Median: 2.5, Min: 1, Max: 4, N: 4}},
		{[]float64{7}, spread{Median: 7, Min: 7, Max: 7, N: 1}},
		{[]float64{5, nan, 1}, spread{Median: 3, Min: 1, Max: 5, N: 2}},
	} {
		if got := summarize(c.in); got != c.want {
			t.Errorf("summarize(%v) = %+v, want %+v", c.in, got, c.want)
		}
	}
	if got := summarize([]float64{nan}); got.N != 0 || !math.IsNaN(got.Median) {
		t.Errorf("summarize(NaN) = %+v, want no values", got)
	}
}
