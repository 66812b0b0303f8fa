package policycache

import (
	"testing"
	"time"
)

// The pause after a rebuild matches its duration while the next snapshot can still be
// ready before the current one expires (MaxAge 900ms), and shrinks to RebuildPause
// when it could not.
func TestRebuildPause(t *testing.T) {
	c := New(nil, Options{MaxAge: 900 * time.Millisecond, RebuildPause: 100 * time.Millisecond})
	ms := time.Millisecond
	for _, tc := range []struct{ took, want time.Duration }{
		{1 * ms, 100 * ms},   // small snapshots: the short pause
		{150 * ms, 150 * ms}, // as long as the rebuild
		{250 * ms, 250 * ms}, // 250 + 250 + 250 + 100 fits 900
		{300 * ms, 200 * ms}, // capped: the next one is ready as this one expires
		{400 * ms, 100 * ms}, // never below RebuildPause
		{2 * time.Second, 100 * ms},
	} {
		if got := c.rebuildPause(tc.took); got != tc.want {
			t.Errorf("rebuildPause(%s) = %s, want %s", tc.took, got, tc.want)
		}
	}
}
