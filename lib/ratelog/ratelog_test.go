package ratelog

import (
	"testing"
	"time"
)

func TestLimiterBurstThenRate(t *testing.T) {
	l := &Limiter{Burst: 3, Every: 10 * time.Second}
	t0 := time.Unix(1000, 0)
	var allowed []int64
	// 100 events in the first second: the burst passes, the rest are held.
	for i := range 100 {
		if ok, n := l.Allow(t0.Add(time.Duration(i) * 10 * time.Millisecond)); ok {
			allowed = append(allowed, n)
		}
	}
	if len(allowed) != 3 {
		t.Fatalf("%d allowed in a burst of 100, want 3", len(allowed))
	}
	// Ten seconds later one more passes and says how many it stands for.
	if ok, n := l.Allow(t0.Add(11 * time.Second)); !ok || n != 97 {
		t.Fatalf("after 11s: %v, suppressed %d; want true, 97", ok, n)
	}
	if ok, _ := l.Allow(t0.Add(12 * time.Second)); ok {
		t.Fatal("a second event within Every passed")
	}
	// A quiet period refills the burst, never beyond it.
	n := 0
	for i := range 10 {
		if ok, _ := l.Allow(t0.Add(time.Hour + time.Duration(i))); ok {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d allowed after an hour's quiet, want the burst of 3", n)
	}
}

func TestSamplerOnePerKeyAndInterval(t *testing.T) {
	s := &Sampler{Every: time.Minute, MaxKeys: 2}
	t0 := time.Unix(1000, 0)
	for _, c := range []struct {
		key        string
		at         time.Duration
		ok         bool
		suppressed int64
	}{
		{"cell-1", 0, true, 0},
		{"cell-1", 5 * time.Second, false, 0},
		{"cell-2", 5 * time.Second, true, 0},
		{"cell-1", 10 * time.Second, false, 0},
		{"cell-1", 61 * time.Second, true, 2},
		{"cell-1", 62 * time.Second, false, 0},
		// A third key: the sampler forgets all and starts over.
		{"cell-3", 63 * time.Second, true, 0},
		{"cell-1", 64 * time.Second, true, 0},
	} {
		ok, n := s.Sample(c.key, t0.Add(c.at))
		if ok != c.ok || n != c.suppressed {
			t.Errorf("%s at %v: %v %d, want %v %d", c.key, c.at, ok, n, c.ok, c.suppressed)
		}
	}
}
