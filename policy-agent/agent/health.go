package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"netman/lib/logattr"
)

// DefaultDegradedAfter is how long the policy server may be unreachable before the
// agent's health says degraded. Two minutes is past a policy server's restart and
// several backoff retries (at most a minute apart), so a deploy of the servers does not
// flip the cells' health, while an outage that leaves cells on old rules shows.
const DefaultDegradedAfter = 2 * time.Minute

// Health states.
const (
	HealthOK       = "ok"       // rules enforced and current
	HealthStarting = "starting" // no rules enforced yet
	HealthDegraded = "degraded" // rules enforced, but the server has been unreachable too long
)

// Health is the body of GET /health.
type Health struct {
	State string `json:"state"`
	// Reason says what is wrong when State is not ok.
	Reason string `json:"reason,omitempty"`
	// UnreachableForMs is how long the policy server has been unreachable (0: it is not).
	UnreachableForMs float64 `json:"unreachable_for_ms,omitempty"`
	Status
}

// Health returns the agent's health at now.
func (a *Agent) Health() Health {
	s := a.Status()
	h := Health{State: HealthOK, Status: s}
	if !s.ServerUnreachableSince.IsZero() {
		down := a.opts.Now().Sub(s.ServerUnreachableSince)
		h.UnreachableForMs = logattr.Ms(down)
		if s.Enforcing && down > a.opts.DegradedAfter {
			h.State = HealthDegraded
			h.Reason = fmt.Sprintf("policy server unreachable for %s (more than %s); the last applied rules are still enforced: %s",
				down.Round(time.Second), a.opts.DegradedAfter, s.LastError)
		}
	}
	if !s.Enforcing {
		h.State, h.Reason = HealthStarting, "no rules enforced yet"
		if s.LastError != "" {
			h.Reason += ": " + s.LastError
		}
	}
	return h
}

// HealthHandler serves GET /health: 200 while the agent enforces current rules; 503
// before it has enforced any, and, degraded, once the policy server has been
// unreachable for longer than Options.DegradedAfter. Degraded changes nothing the agent
// does: it keeps enforcing the last rules and retrying; the 503 tells the operator that
// this cell's rules may be falling behind. The body is Health either way.
func (a *Agent) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		h := a.Health()
		w.Header().Set("Content-Type", "application/json")
		if h.State != HealthOK {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(h)
	})
	return mux
}
