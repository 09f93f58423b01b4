package webhook

import (
	"net/http"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		header string
		want   time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{" 10 ", 10 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"86400", MaxRetryAfter},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		t.Run(tc.header, func(t *testing.T) {
			if got := parseRetryAfter(tc.header, now); got != tc.want {
				t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.header, got, tc.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	s := &Sink{cfg: Config{RetryInitial: 200 * time.Millisecond, RetryMax: 10 * time.Second}}
	for _, tc := range []struct {
		attempt  int
		min, max time.Duration // inclusive, exclusive
	}{
		{0, 200 * time.Millisecond, 240 * time.Millisecond},
		{1, 400 * time.Millisecond, 480 * time.Millisecond},
		{4, 3200 * time.Millisecond, 3840 * time.Millisecond},
		{5, 6400 * time.Millisecond, 7680 * time.Millisecond},
		{6, 10 * time.Second, 10*time.Second + 1},
		{1000, 10 * time.Second, 10*time.Second + 1},
	} {
		for range 50 {
			if d := s.backoff(tc.attempt); d < tc.min || d >= tc.max {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v)", tc.attempt, d, tc.min, tc.max)
			}
		}
	}
}
