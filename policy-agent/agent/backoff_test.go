package agent

import (
	"testing"
	"time"
)

func TestBackoffDoublesUpToTheCap(t *testing.T) {
	tests := []struct {
		failures int
		want     time.Duration
	}{
		{1, time.Second},
		{2, 2 * time.Second},
		{3, 4 * time.Second},
		{4, 8 * time.Second},
		{5, 8 * time.Second},
		{50, 8 * time.Second},
	}
	for _, tt := range tests {
		for range 100 {
			got := backoff(time.Second, 8*time.Second, tt.failures)
			if lo, hi := tt.want*9/10, tt.want*11/10; got < lo || got > hi {
				t.Fatalf("backoff after %d failures = %v, want %v ±10%%", tt.failures, got, tt.want)
			}
		}
	}
}

func TestJitterSpreadsPolls(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 100 {
		d := jitter(5 * time.Second)
		if d < 4500*time.Millisecond || d > 5500*time.Millisecond {
			t.Fatalf("jitter(5s) = %v, want within ±10%%", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Errorf("jitter(5s) gave only %d distinct waits in 100 draws: cells would poll in step", len(seen))
	}
}
