// Package ratelog keeps logs readable under load: a Limiter caps how many lines of a
// kind are written (a storm of failed TLS handshakes must not fill the disk), and a
// Sampler writes one line per key and interval (one per agent and minute instead of one
// per poll). Both count what they leave out, and the line that is written says how many
// it stands for, so nothing disappears without a trace.
package ratelog

import (
	"sync"
	"time"
)

// Limiter lets through a burst of Burst events, then one per Every (a token bucket).
// The zero value is not usable; set both fields.
type Limiter struct {
	Burst int
	Every time.Duration

	mu     sync.Mutex
	tokens float64
	last   time.Time
	held   int64
}

// Allow reports whether an event at now may be logged. When it may, suppressed is the
// number of events held back since the previous one that was allowed.
func (l *Limiter) Allow(now time.Time) (ok bool, suppressed int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.IsZero() {
		l.tokens = float64(l.Burst)
	} else if elapsed := now.Sub(l.last); elapsed > 0 {
		l.tokens = min(float64(l.Burst), l.tokens+float64(elapsed)/float64(l.Every))
	}
	if now.After(l.last) {
		l.last = now
	}
	if l.tokens < 1 {
		l.held++
		return false, 0
	}
	l.tokens--
	suppressed, l.held = l.held, 0
	return true, suppressed
}

// Sampler lets through the first event of each key, then at most one per Every for that
// key. It forgets every key once it tracks MaxKeys of them (the first event of each is
// let through again), so its memory is bounded whatever the keys are.
type Sampler struct {
	Every   time.Duration
	MaxKeys int

	mu   sync.Mutex
	keys map[string]*sampled
}

type sampled struct {
	last time.Time
	held int64
}

// Sample reports whether the event of key at now may be logged. When it may,
// suppressed is the number of that key's events held back since its previous line.
func (s *Sampler) Sample(key string, now time.Time) (ok bool, suppressed int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.keys[key]
	if e == nil {
		if s.keys == nil || len(s.keys) >= max(s.MaxKeys, 1) {
			s.keys = map[string]*sampled{}
		}
		s.keys[key] = &sampled{last: now}
		return true, 0
	}
	if now.Sub(e.last) < s.Every {
		e.held++
		return false, 0
	}
	suppressed, e.held, e.last = e.held, 0, now
	return true, suppressed
}
