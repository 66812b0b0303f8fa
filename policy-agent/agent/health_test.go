package agent_test

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"netman/policy-agent/agent"
)

func (f *fixture) health(t *testing.T) (int, agent.Health) {
	t.Helper()
	rec := httptest.NewRecorder()
	f.agent.HealthHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
	var h agent.Health
	if err := json.Unmarshal(rec.Body.Bytes(), &h); err != nil {
		t.Fatalf("health body %q: %v", rec.Body, err)
	}
	return rec.Code, h
}

// The server goes away: health stays 200 within the bound (a server restart), turns
// 503 degraded with the reason and the time once the outage is longer, while the
// rules stay enforced; and is 200 again at the first cycle that reaches the server.
func TestHealthDegradesAfterTheBoundAndRecovers(t *testing.T) {
	f := newFixture(t, func(o *agent.Options) { o.DegradedAfter = time.Minute })
	if code, h := f.health(t); code != 503 || h.State != agent.HealthStarting {
		t.Fatalf("before the first cycle: %d %+v", code, h)
	}
	f.twoApps(t)
	f.expect(t, "first cycle", agent.Applied)
	f.advance(5 * time.Second)
	f.expect(t, "confirm", agent.Skipped)
	rules := f.save(t)
	if code, h := f.health(t); code != 200 || h.State != agent.HealthOK || h.UnreachableForMs != 0 {
		t.Fatalf("enforcing: %d %+v", code, h)
	}
	if age := gauge(t, f.metrics, "netman_agent_rules_age_seconds"); age != 0 {
		t.Errorf("rule age right after a cycle = %v", age)
	}

	f.srv.SetDown(true)
	f.advance(5 * time.Second)
	if out, _ := f.cycle(t); out != agent.Failed {
		t.Fatalf("cycle with the server down = %s", out)
	}
	// Within the bound: a restarting server does not flip the cell's health.
	f.advance(time.Minute - time.Second)
	if code, h := f.health(t); code != 200 || h.UnreachableForMs != 59000 {
		t.Fatalf("59s into the outage: %d %+v", code, h)
	}
	f.advance(2 * time.Second)
	f.cycle(t)
	code, h := f.health(t)
	if code != 503 || h.State != agent.HealthDegraded || h.UnreachableForMs != 61000 || !h.Enforcing ||
		!strings.Contains(h.Reason, "policy server unreachable for 1m1s") || !strings.Contains(h.Reason, "503") {
		t.Fatalf("61s into the outage: %d %+v", code, h)
	}
	if age := gauge(t, f.metrics, "netman_agent_rules_age_seconds"); age != 66 {
		t.Errorf("rule age 66s after the last confirmation = %v", age)
	}
	if got := f.save(t); got != rules {
		t.Errorf("rules changed while degraded:\n%s\nwant\n%s", got, rules)
	}

	// Nothing changed meanwhile: the first answer is a skipped cycle, and that answer
	// alone ends the outage.
	f.srv.SetDown(false)
	f.advance(5 * time.Second)
	f.expect(t, "server back", agent.Skipped)
	if code, h := f.health(t); code != 200 || h.State != agent.HealthOK || !h.ServerUnreachableSince.IsZero() {
		t.Fatalf("after recovery: %d %+v", code, h)
	}
	if age := gauge(t, f.metrics, "netman_agent_rules_age_seconds"); age != 0 {
		t.Errorf("rule age after recovery = %v", age)
	}
}
