// Package logattr holds the log fields every netman program writes the same way, so an
// operator's queries work across the server, the cache and the agent. Durations are
// one unit everywhere: milliseconds as a number with microsecond precision, in a field
// whose name ends in _ms (duration_ms for how long the logged operation took).
package logattr

import (
	"log/slog"
	"math"
	"time"
)

// Duration is the duration_ms field: how long the logged operation took.
func Duration(d time.Duration) slog.Attr { return Millis("duration_ms", d) }

// Millis is a duration under another name, which must end in _ms (retry_in_ms,
// unreachable_for_ms).
func Millis(key string, d time.Duration) slog.Attr { return slog.Float64(key, Ms(d)) }

// Ms is d in milliseconds with microsecond precision, for fields outside logs that
// follow the same rule (the agent's /health).
func Ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())) / 1000 }
