package agent_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"netman/lib/apiwire"
	"netman/lib/models"
	"netman/policy-agent/agent"
)

// runAgent runs the agent's loop inside the cell until the test ends.
func runAgent(t *testing.T, f *fixture) {
	t.Helper()
	signals := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() {
		done <- f.cell.NS.Do(func(ns.NetNS) error { return f.agent.Run(signals, nil) })
	}()
	t.Cleanup(func() {
		signals <- os.Interrupt
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

func force(t *testing.T, h http.Handler, method string) (int, map[string]string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, apiwire.ForcePollPath, nil))
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("%s %s: %d %q is not JSON: %v", method, apiwire.ForcePollPath, rec.Code, rec.Body, err)
	}
	return rec.Code, body
}

// With an hour between polls, only the forced cycle can put a new container's rules in
// place; the request returns once they are.
func TestForcedCycleAppliesAtOnce(t *testing.T) {
	f := newFixture(t, func(o *agent.Options) { o.PollInterval = time.Hour; o.Now = nil })
	f.add(t, "a", "10.0.0.2", "app-a")
	f.srv.Set([]models.Policy{pol("app-a", "0001", "app-b", "0002", 8080)})
	runAgent(t, f)
	waitFor(t, func() bool { return f.agent.Status().Enforcing })

	f.add(t, "b", "10.0.0.3", "app-b")
	h := f.agent.ForcePollHandler()
	code, body := force(t, h, http.MethodGet)
	if code != http.StatusOK || body["outcome"] != string(agent.Applied) {
		t.Fatalf("forced cycle: %d %v, want 200 applied", code, body)
	}
	if rules := f.save(t); !strings.Contains(rules, "-d 10.0.0.3/32 -j netman-in-0002") {
		t.Fatalf("b's rules are not in place when the forced cycle returned:\n%s", rules)
	}

	// A burst of requests (many containers at once) is served, every one with success.
	var wg sync.WaitGroup
	codes := make([]int, 20)
	for i := range codes {
		wg.Go(func() { codes[i], _ = force(t, h, http.MethodGet) })
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("request %d of the burst: %d", i, c)
		}
	}

	if code, body := force(t, h, http.MethodPost); code != http.StatusMethodNotAllowed || body["error"] == "" {
		t.Errorf("POST: %d %v, want 405 with a JSON error", code, body)
	}

	// A cycle that fails answers 500 with the reason; the rules stay.
	f.srv.SetDown(true)
	f.add(t, "c", "10.0.0.4", "app-c")
	if code, body := force(t, h, http.MethodGet); code != http.StatusInternalServerError || !strings.Contains(body["error"], "policy") {
		t.Errorf("forced cycle with the server down: %d %v, want 500 naming the failure", code, body)
	}
	if rules := f.save(t); !strings.Contains(rules, "-d 10.0.0.3/32 -j netman-in-0002") {
		t.Errorf("a failed forced cycle changed the rules:\n%s", rules)
	}
}
