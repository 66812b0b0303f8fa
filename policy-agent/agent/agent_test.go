package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"netman/internal/testsupport/syncbuf"
	"netman/lib/datastore"
	"netman/lib/models"
	"netman/lib/mutualtls"
	"netman/lib/policyclient"
	"netman/lib/policyclient/policyclienttest"
	"netman/lib/rules"
	"netman/lib/rules/rulestest"
	"netman/policy-agent/agent"
)

type fixture struct {
	cell    *rulestest.Cell
	srv     *policyclienttest.Server
	store   *datastore.Store
	client  *policyclient.Client
	agent   *agent.Agent
	metrics *agent.Metrics
	now     time.Time
	mu      sync.Mutex
}

func newFixture(t testing.TB, opts func(*agent.Options)) *fixture {
	t.Helper()
	f := &fixture{cell: rulestest.NewCell(t), srv: policyclienttest.NewServer(t), now: time.Unix(1_700_000_000, 0)}
	path := filepath.Join(t.TempDir(), "store.json")
	var err error
	if f.store, err = datastore.New(path, datastore.Options{}); err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := mutualtls.ClientConfig(f.srv.Files.ClientCert, f.srv.Files.ClientKey, f.srv.Files.CACert)
	if err != nil {
		t.Fatal(err)
	}
	f.metrics = agent.NewMetrics()
	client, err := policyclient.New(f.srv.URL, tlsCfg, 2*time.Second, policyclient.WithObserver(f.metrics))
	if err != nil {
		t.Fatal(err)
	}
	f.client = client
	var enf *rules.Enforcer
	if err := f.cell.NS.Do(func(ns.NetNS) (err error) {
		enf, err = rules.NewEnforcer(filepath.Join(t.TempDir(), "iptables.lock"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	o := agent.Options{
		Datastore: path, PollInterval: time.Second, Source: client, Enforcer: enf,
		Metrics: f.metrics, Now: f.clock,
	}
	if opts != nil {
		opts(&o)
	}
	if f.agent, err = agent.New(o); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

func (f *fixture) add(t testing.TB, handle, ip, group string) {
	t.Helper()
	_, err := f.store.Add(t.Context(), datastore.Container{Handle: handle, IP: ip,
		Metadata: map[string]any{"policy_group_id": group, "app_id": group}})
	if err != nil {
		t.Fatal(err)
	}
}

// cycle runs one cycle inside the cell, where its iptables calls land.
func (f *fixture) cycle(t testing.TB) (agent.Outcome, error) {
	t.Helper()
	var out agent.Outcome
	var err error
	_ = f.cell.NS.Do(func(ns.NetNS) error {
		out, _, err = f.agent.Cycle(t.Context())
		return nil
	})
	return out, err
}

func (f *fixture) expect(t testing.TB, step string, want agent.Outcome) {
	t.Helper()
	got, err := f.cycle(t)
	if err != nil || got != want {
		t.Fatalf("%s: cycle = %s, %v; want %s", step, got, err, want)
	}
}

func (f *fixture) save(t *testing.T) string {
	t.Helper()
	var out []byte
	_ = f.cell.NS.Do(func(ns.NetNS) error {
		var err error
		out, err = exec.Command("iptables", "-S").Output()
		if err != nil {
			t.Fatal(err)
		}
		return nil
	})
	return string(out)
}

// twoApps puts a container of app-a and one of app-b on the cell, and a policy
// app-a -> app-b tcp 8080 on the server.
func (f *fixture) twoApps(t testing.TB) {
	t.Helper()
	f.add(t, "a", "10.0.0.2", "app-a")
	f.add(t, "b", "10.0.0.3", "app-b")
	f.srv.Set([]models.Policy{pol("app-a", "0001", "app-b", "0002", 8080)})
}

func pol(src, srcTag, dst, dstTag string, port int) models.Policy {
	return models.Policy{
		Source:      models.Source{ID: src, Tag: srcTag},
		Destination: models.Destination{ID: dst, Tag: dstTag, Protocol: "tcp", Ports: models.Ports{Start: port, End: port}},
	}
}

func TestCycleDoesWorkOnlyWhenSomethingChanged(t *testing.T) {
	f := newFixture(t, nil)
	f.twoApps(t)

	f.expect(t, "first cycle", agent.Applied)
	if !strings.Contains(f.save(t), "-A netman-in-0002 -p tcp -m tcp --dport 8080 -m mark --mark 0x1/0xffff -j ACCEPT") {
		t.Fatalf("policy not enforced:\n%s", f.save(t))
	}
	// The ETag vouches for the answer at once: no trust window, no second fetch.
	fetches := f.srv.PolicyRequests.Load()
	for i := range 3 {
		f.advance(5 * time.Second)
		f.expect(t, "quiet cycle "+string(rune('1'+i)), agent.Skipped)
	}
	if n := f.srv.PolicyRequests.Load(); n != fetches {
		t.Errorf("quiet cycles fetched policies: %d requests, want %d", n, fetches)
	}
	if n := f.srv.NotModified.Load(); n != 3 {
		t.Errorf("quiet cycles: %d answers 304, want 3", n)
	}

	// A policy change on the server.
	f.srv.Set([]models.Policy{pol("app-a", "0001", "app-b", "0002", 9090)})
	f.advance(5 * time.Second)
	f.expect(t, "policy changed", agent.Applied)
	if got := f.save(t); !strings.Contains(got, "--dport 9090") || strings.Contains(got, "--dport 8080") {
		t.Errorf("rules after the change:\n%s", got)
	}
	// A container added on the cell, with no server change.
	f.advance(5 * time.Second)
	f.expect(t, "quiet", agent.Skipped)
	f.add(t, "b2", "10.0.0.4", "app-b")
	f.advance(5 * time.Second)
	f.expect(t, "container added", agent.Applied)
	if !strings.Contains(f.save(t), "-A netman-forward -d 10.0.0.4/32 -j netman-in-0002") {
		t.Errorf("new instance not enforced:\n%s", f.save(t))
	}

	if got := gauge(t, f.metrics, "netman_agent_rules"); got == 0 {
		t.Error("netman_agent_rules not set")
	}
}

func TestServerDownKeepsTheRules(t *testing.T) {
	f := newFixture(t, nil)
	f.twoApps(t)
	f.expect(t, "first cycle", agent.Applied)
	before := f.save(t)

	f.srv.SetDown(true)
	// Even with a datastore change pending, nothing is torn down.
	f.add(t, "c", "10.0.0.5", "app-c")
	for range 3 {
		f.advance(5 * time.Second)
		if out, err := f.cycle(t); out != agent.Failed || err == nil || !strings.Contains(err.Error(), "503") {
			t.Fatalf("cycle with the server down = %s, %v", out, err)
		}
	}
	if after := f.save(t); after != before {
		t.Errorf("rules changed while the server was down:\nbefore\n%s\nafter\n%s", before, after)
	}
	s := f.agent.Status()
	if !s.Enforcing || s.ConsecutiveFailures != 3 || s.LastError == "" {
		t.Errorf("status while down: %+v", s)
	}
	if got := gauge(t, f.metrics, "netman_agent_poll_errors_total"); got != 3 {
		t.Errorf("poll errors = %v, want 3", got)
	}
	for _, name := range []string{"netman_agent_datastore_errors_total", "netman_agent_enforce_errors_total"} {
		if got := gauge(t, f.metrics, name); got != 0 {
			t.Errorf("%s = %v while only the server failed", name, got)
		}
	}
	// The requests behind them, by route and outcome: each cycle's poll got a 503.
	if got := sample(t, f.metrics, "netman_agent_server_requests_total", map[string]string{"route": policyclient.PoliciesPath, "outcome": "server_error"}); got != 3 {
		t.Errorf("server_error requests to %s = %v, want 3", policyclient.PoliciesPath, got)
	}
	if got := sample(t, f.metrics, "netman_agent_server_requests_total", map[string]string{"route": policyclient.PoliciesPath, "outcome": "success"}); got != 1 {
		t.Errorf("successful policy fetches = %v, want 1 (the first cycle)", got)
	}

	f.srv.SetDown(false)
	f.advance(5 * time.Second)
	f.expect(t, "server back", agent.Applied)
	if s := f.agent.Status(); s.ConsecutiveFailures != 0 {
		t.Errorf("status after recovery: %+v", s)
	}
}

// TestLongPollAppliesAChangeAtOnce: a cycle waiting on the server is answered by a
// policy change long before its wait ends, and applies it.
func TestLongPollAppliesAChangeAtOnce(t *testing.T) {
	f := newFixture(t, func(o *agent.Options) { o.PollInterval = time.Minute })
	f.twoApps(t)
	f.expect(t, "first cycle", agent.Applied)
	done := make(chan agent.Outcome, 1)
	start := time.Now()
	go func() {
		out, err := f.cycle(t)
		if err != nil {
			t.Error(err)
		}
		done <- out
	}()
	// Whether the cycle is already waiting or not, the answer reflects the new policy.
	f.srv.Set([]models.Policy{pol("app-a", "0001", "app-b", "0002", 9090)})
	if out := <-done; out != agent.Applied {
		t.Fatalf("cycle after the change: %s, want applied", out)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("the change took %s to arrive with a one-minute wait: the long poll was not woken", took)
	}
	if !strings.Contains(f.save(t), "--dport 9090") {
		t.Errorf("change not applied:\n%s", f.save(t))
	}
}

// TestWithoutETagsEveryCycleFetches: against a server without ETags (other policy
// servers), the agent polls plainly and fetches every cycle.
func TestWithoutETagsEveryCycleFetches(t *testing.T) {
	f := newFixture(t, nil)
	f.srv.WithoutETags()
	f.add(t, "a", "10.0.0.2", "app-a")
	f.expect(t, "first", agent.Applied)
	for range 3 {
		f.advance(10 * time.Second)
		f.expect(t, "again", agent.Unchanged)
	}
	if n := f.srv.PolicyRequests.Load(); n != 4 {
		t.Errorf("policy requests = %d, want one per cycle (4)", n)
	}
}

type failingEnforcer struct{}

func (failingEnforcer) Apply(context.Context, rules.Ruleset) (rules.Result, error) {
	return rules.Result{}, errors.New("iptables-restore: exit status 4")
}

func (failingEnforcer) Resync() {}

func TestResyncRepairsRulesSomeoneRemoved(t *testing.T) {
	f := newFixture(t, func(o *agent.Options) { o.Resync = time.Minute })
	f.twoApps(t)
	f.expect(t, "first", agent.Applied)
	want := f.save(t)
	_ = f.cell.NS.Do(func(ns.NetNS) error {
		for _, args := range [][]string{{"-D", "FORWARD", "-j", "netman-forward"}, {"-F", "netman-in-0002"}} {
			if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
				t.Fatalf("iptables %v: %v %s", args, err, out)
			}
		}
		return nil
	})
	f.advance(5 * time.Second)
	f.expect(t, "quiet: the removal is not seen before the resync", agent.Skipped)
	f.advance(time.Minute)
	f.expect(t, "resync", agent.Applied)
	if got := f.save(t); got != want {
		t.Errorf("after the resync:\n%s\nwant\n%s", got, want)
	}
	f.advance(5 * time.Second)
	f.expect(t, "quiet again", agent.Skipped)
}

func TestHealthAndRunLogOncePerStateChange(t *testing.T) {
	var logs syncbuf.Buffer
	f := newFixture(t, func(o *agent.Options) {
		o.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
		o.PollInterval = 20 * time.Millisecond
		o.MaxBackoff = 40 * time.Millisecond
		o.Now = nil
	})
	f.add(t, "a", "10.0.0.2", "app-a")

	rec := httptest.NewRecorder()
	f.agent.HealthHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
	if rec.Code != 503 {
		t.Errorf("health before any cycle = %d, want 503", rec.Code)
	}

	f.srv.SetDown(true)
	signals := make(chan os.Signal)
	done := make(chan error)
	go func() {
		done <- f.cell.NS.Do(func(ns.NetNS) error { return f.agent.Run(signals, make(chan struct{})) })
	}()
	waitFor(t, func() bool { return f.agent.Status().ConsecutiveFailures >= 5 })
	f.srv.SetDown(false)
	waitFor(t, func() bool { return f.agent.Status().Enforcing })
	time.Sleep(100 * time.Millisecond)
	signals <- os.Interrupt
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	text := logs.String()
	if n := strings.Count(text, `"level":"ERROR"`); n != 1 {
		t.Errorf("%d error lines for one outage, want 1:\n%s", n, text)
	}
	if n := strings.Count(text, "recovered"); n != 1 {
		t.Errorf("%d recovery lines, want 1:\n%s", n, text)
	}
	rec = httptest.NewRecorder()
	f.agent.HealthHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
	var s agent.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &s); rec.Code != 200 || err != nil || !s.Enforcing {
		t.Errorf("health after recovery = %d %s", rec.Code, rec.Body)
	}
}

func TestEnforcementFailureIsRetried(t *testing.T) {
	f := newFixture(t, func(o *agent.Options) { o.Enforcer = failingEnforcer{} })
	f.add(t, "a", "10.0.0.2", "app-a")
	for range 2 {
		if out, err := f.cycle(t); out != agent.Failed || err == nil {
			t.Fatalf("cycle = %s, %v; want a failure", out, err)
		}
		f.advance(time.Minute)
	}
	if got := gauge(t, f.metrics, "netman_agent_enforce_errors_total"); got != 2 {
		t.Errorf("iptables errors = %v, want 2 (a failed apply must not be skipped next time)", got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gauge reads an unlabelled series from the agent's registry, as a scrape would.
func gauge(t *testing.T, m *agent.Metrics, name string) float64 {
	t.Helper()
	return sample(t, m, name, nil)
}

// sample reads the series of name whose labels include labels.
func sample(t *testing.T, m *agent.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	v, ok := lookup(t, m, name, labels)
	if !ok {
		t.Fatalf("no series %s%v", name, labels)
	}
	return v
}

func lookup(t *testing.T, m *agent.Metrics, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() != name {
			continue
		}
		for _, s := range fam.GetMetric() {
			matched := 0
			for _, l := range s.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v == l.GetValue() {
					matched++
				}
			}
			if matched != len(labels) {
				continue
			}
			switch {
			case s.Gauge != nil:
				return s.GetGauge().GetValue(), true
			case s.Counter != nil:
				return s.GetCounter().GetValue(), true
			case s.Histogram != nil:
				return float64(s.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}
