package integration_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"netman/lib/rules"
	"netman/lib/rules/rulestest"
)

const (
	appA = "d5bbc5ed-886a-44e6-945d-67df1013fa16"
	appB = "4246c57d-aefc-49cc-afe0-5f734e2656e8"
	appC = "eb95ff20-cba8-4edc-8f4a-cf80d0669faf"

	pollInterval = time.Second
	// Two poll intervals, plus the ±10% jitter of each, plus room for one iptables-restore
	// and the probe's own period.
	withinTwoPolls = 2*pollInterval + 2*pollInterval/10 + 500*time.Millisecond
)

func reach(t *testing.T, from ns.NetNS, proto, addr string) bool {
	t.Helper()
	ok, err := rulestest.Reach(from, proto, addr, 2*time.Second)
	if err != nil {
		// Rules reject; they never drop. A timeout means something else is wrong.
		t.Errorf("%s %s: %v", proto, addr, err)
	}
	return ok
}

// watch probes in the background until stop is called and counts wrong verdicts.
func watch(from ns.NetNS, proto, addr string, want bool) (stop func() (probes, wrong int64)) {
	var n, bad atomic.Int64
	var quit atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !quit.Load() {
			ok, err := rulestest.Reach(from, proto, addr, 3*time.Second)
			n.Add(1)
			if err != nil || ok != want {
				bad.Add(1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return func() (int64, int64) {
		quit.Store(true)
		wg.Wait()
		return n.Load(), bad.Load()
	}
}

func TestEndToEnd(t *testing.T) {
	cniPath := requireE2E(t)
	dir := t.TempDir()
	bins := build(t, dir, "cmd/wrapper", "cmd/policy-server", "cmd/policy-agent", "cmd/netman", "internal/tools/netprobe")
	srv := startPolicyServer(t, bins, dir)

	cell := rulestest.NewNS(t)
	if err := cell.Do(func(ns.NetNS) error {
		if err := rulestest.NoICMPRateLimit(); err != nil {
			return err
		}
		// Off, so the test sees the agent turn it on.
		return os.WriteFile(rules.BridgeNFCallIPTables, []byte("0\n"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "container-metadata", "store.json")
	if err := os.MkdirAll(filepath.Dir(store), 0o755); err != nil {
		t.Fatal(err)
	}
	nsA, ipA, _ := addContainer(t, bins["wrapper"], cniPath, cell, store, "container-a", appA, dir)
	nsB, ipB, _ := addContainer(t, bins["wrapper"], cniPath, cell, store, "container-b", appB, dir)
	for _, n := range []ns.NetNS{nsA, nsB} {
		rulestest.Serve(t, n, 8080)
		rulestest.Serve(t, n, 9090)
	}
	a2b8080, a2b9090, b2a8080 := ipB+":8080", ipB+":9090", ipA+":8080"
	if err := cell.Do(func(ns.NetNS) error { return os.WriteFile(rules.BridgeNFCallIPTables, []byte("1\n"), 0o644) }); err != nil {
		t.Fatal(err)
	}
	if !reach(t, nsA, "tcp", a2b8080) {
		t.Fatal("before the agent runs, the bridge must pass A -> B (else the refusals below prove nothing)")
	}
	if err := cell.Do(func(ns.NetNS) error { return os.WriteFile(rules.BridgeNFCallIPTables, []byte("0\n"), 0o644) }); err != nil {
		t.Fatal(err)
	}

	// The agent, inside the cell, reaching the server through the cell's loopback.
	forward(t, bins["netprobe"], cell, "127.0.0.1:"+strconv.Itoa(srv.internalPort), dir)
	// The agent's own ports are in the cell, a network namespace of this test's own:
	// nothing else can hold them.
	health, debug := 4005, 22223
	agentConfig := filepath.Join(dir, "policy-agent.json")
	writeJSON(t, agentConfig, agentSettings(srv, store, dir, map[string]any{
		"poll_interval_seconds": int(pollInterval / time.Second),
		"health_check_port":     health,
		"debug_server_port":     debug,
	}))
	agentLog := filepath.Join(dir, "policy-agent.log")
	healthURL := "http://127.0.0.1:" + strconv.Itoa(health) + "/health"
	startAgent := func(t *testing.T) *process {
		p := start(t, cell, "policy-agent", agentLog, bins["policy-agent"], "-config-file", agentConfig)
		waitHTTP(t, cell, healthURL, 30*time.Second)
		return p
	}
	agentProc := startAgent(t)
	// Processes restarted inside a subtest belong to the whole test, not to that subtest.
	top := t

	var sysctl []byte
	_ = cell.Do(func(ns.NetNS) (err error) { sysctl, err = os.ReadFile(rules.BridgeNFCallIPTables); return err })
	if strings.TrimSpace(string(sysctl)) != "1" {
		t.Errorf("bridge-nf-call-iptables in the cell = %q; the agent must turn it on", sysctl)
	}

	t.Run("no policy: containers cannot reach each other", func(t *testing.T) {
		for _, p := range []struct {
			from        ns.NetNS
			proto, addr string
		}{{nsA, "tcp", a2b8080}, {nsA, "udp", a2b8080}, {nsB, "tcp", b2a8080}, {nsA, "tcp", a2b9090}} {
			if reach(t, p.from, p.proto, p.addr) {
				t.Errorf("%s %s reachable without a policy", p.proto, p.addr)
			}
		}
	})

	t.Run("policy added: allowed within two poll intervals, only that way and port", func(t *testing.T) {
		srv.policy(t, "add", appA, appB, "tcp", 8080)
		took := rulestest.Until(t, nsA, "tcp", a2b8080, true, 10*time.Second)
		t.Logf("A -> B tcp 8080 allowed %v after the policy was added (poll interval %v)", took.Round(time.Millisecond), pollInterval)
		if took > withinTwoPolls {
			t.Errorf("took %v, more than two poll intervals (%v)", took, withinTwoPolls)
		}
		if reach(t, nsB, "tcp", b2a8080) {
			t.Error("B -> A allowed by a policy for A -> B")
		}
		if reach(t, nsA, "tcp", a2b9090) {
			t.Error("A -> B:9090 allowed by a policy for port 8080")
		}
		if reach(t, nsA, "udp", a2b8080) {
			t.Error("A -> B udp 8080 allowed by a tcp policy")
		}

		srv.policy(t, "add", appA, appB, "udp", 8080)
		took = rulestest.Until(t, nsA, "udp", a2b8080, true, 10*time.Second)
		t.Logf("A -> B udp 8080 allowed %v after its policy was added", took.Round(time.Millisecond))
		if took > withinTwoPolls {
			t.Errorf("udp took %v, more than two poll intervals (%v)", took, withinTwoPolls)
		}
		if reach(t, nsB, "udp", b2a8080) {
			t.Error("B -> A udp allowed")
		}
	})

	t.Run("metrics and health", func(t *testing.T) {
		metrics := getBody(t, cell, "http://127.0.0.1:"+strconv.Itoa(debug)+"/metrics")
		for _, want := range []string{"netman_agent_cycle_duration_seconds_bucket", "netman_agent_enforce_duration_seconds_count",
			"netman_agent_rules ", "netman_agent_poll_errors_total 0", "netman_agent_rules_written_total"} {
			if !strings.Contains(metrics, want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
		var s struct {
			Enforcing bool `json:"enforcing"`
		}
		if err := json.Unmarshal([]byte(getBody(t, cell, healthURL)), &s); err != nil || !s.Enforcing {
			t.Errorf("health: %+v %v", s, err)
		}
	})

	t.Run("agent restart: traffic keeps flowing during and after", func(t *testing.T) {
		stopAllowed := watch(nsA, "tcp", a2b8080, true)
		stopDenied := watch(nsB, "tcp", b2a8080, false)
		agentProc.stop(t)
		time.Sleep(2 * pollInterval)
		agentProc = startAgent(top)
		time.Sleep(3 * pollInterval)
		n, bad := stopAllowed()
		m, badDenied := stopDenied()
		t.Logf("%d allowed and %d refused probes across the restart; wrong verdicts: %d, %d", n, m, bad, badDenied)
		if bad != 0 || badDenied != 0 {
			t.Errorf("restart changed verdicts: %d of %d allowed probes failed, %d of %d refused probes passed", bad, n, badDenied, m)
		}
		var rulesDump []byte
		_ = cell.Do(func(ns.NetNS) (err error) { rulesDump, err = execOut("iptables", "-S", "FORWARD"); return err })
		if c := strings.Count(string(rulesDump), "-j netman-forward"); c != 1 {
			t.Errorf("%d FORWARD jumps after a restart, want 1:\n%s", c, rulesDump)
		}
	})

	t.Run("policy server stopped: nothing that was allowed changes", func(t *testing.T) {
		// Sixteen poll intervals: long enough for the backoff to reach its cap (8 intervals)
		// and stay there, as in a real outage of a minute or more at the default interval.
		outage := 16 * pollInterval
		stopAllowed := watch(nsA, "tcp", a2b8080, true)
		stopUDP := watch(nsA, "udp", a2b8080, true)
		stopDenied := watch(nsB, "tcp", b2a8080, false)
		srv.proc.stop(t)
		time.Sleep(outage)
		if code := getStatus(cell, healthURL); code != 200 {
			t.Errorf("agent health during the outage = %d, want 200 (it still enforces)", code)
		}
		metrics := getBody(t, cell, "http://127.0.0.1:"+strconv.Itoa(debug)+"/metrics")
		if strings.Contains(metrics, "netman_agent_poll_errors_total 0") {
			t.Error("poll errors not counted during the outage")
		}
		srv.start(top)
		n, bad := stopAllowed()
		u, badUDP := stopUDP()
		m, badDenied := stopDenied()
		t.Logf("outage of %v: %d tcp, %d udp allowed and %d refused probes; wrong: %d, %d, %d", outage, n, u, m, bad, badUDP, badDenied)
		if bad+badUDP+badDenied != 0 {
			t.Errorf("the outage changed verdicts")
		}
		// The agent recovers (its backoff is capped at 8 poll intervals).
		deadline := time.Now().Add(15 * time.Second)
		for {
			var s struct {
				Failures int `json:"consecutive_failures"`
			}
			_ = json.Unmarshal([]byte(getBody(t, cell, healthURL)), &s)
			if s.Failures == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("agent did not recover within 15s of the server's return")
			}
			time.Sleep(100 * time.Millisecond)
		}
		logText, _ := os.ReadFile(agentLog)
		if c := strings.Count(string(logText), "enforcement cycle failed;"); c != 1 {
			t.Errorf("%d error lines for one outage, want 1", c)
		}
	})

	t.Run("policy removed: blocked again", func(t *testing.T) {
		srv.policy(t, "remove", appA, appB, "tcp", 8080)
		took := rulestest.Until(t, nsA, "tcp", a2b8080, false, 10*time.Second)
		t.Logf("A -> B tcp 8080 refused %v after the policy was removed", took.Round(time.Millisecond))
		if took > withinTwoPolls {
			t.Errorf("took %v, more than two poll intervals", took)
		}
		srv.policy(t, "remove", appA, appB, "udp", 8080)
		rulestest.Until(t, nsA, "udp", a2b8080, false, withinTwoPolls)
	})

	t.Run("every log line is a JSON object with a level and a message", func(t *testing.T) {
		logText, err := os.ReadFile(agentLog)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(logText)), "\n")
		for _, line := range lines {
			var entry struct {
				Level string `json:"level"`
				Msg   string `json:"msg"`
			}
			if err := json.Unmarshal([]byte(line), &entry); err != nil || entry.Level == "" || entry.Msg == "" {
				t.Errorf("log line is not a JSON object with level and msg: %q", line)
			}
		}
		t.Logf("%d JSON log lines across two agent runs and an outage", len(lines))
	})

	t.Run("container created later is enforced, and a deleted one leaves no rules", func(t *testing.T) {
		srv.policy(t, "add", appA, appC, "tcp", 8080)
		nsC, ipC, deleteC := addContainer(top, bins["wrapper"], cniPath, cell, store, "container-c", appC, dir)
		rulestest.Serve(top, nsC, 8080)
		took := rulestest.Until(t, nsA, "tcp", ipC+":8080", true, 10*time.Second)
		t.Logf("A -> new container C allowed %v after the wrapper's ADD", took.Round(time.Millisecond))
		if took > withinTwoPolls {
			t.Errorf("took %v, more than two poll intervals", took)
		}
		if reach(t, nsC, "tcp", b2a8080) {
			t.Error("C -> A allowed by a policy for A -> C")
		}

		deleteC()
		deadline := time.Now().Add(withinTwoPolls)
		for {
			var dump []byte
			_ = cell.Do(func(ns.NetNS) (err error) { dump, err = exec.Command("iptables", "-S").Output(); return err })
			if !strings.Contains(string(dump), ipC+"/32") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("rules for deleted container %s still there after %v:\n%s", ipC, withinTwoPolls, dump)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

func execOut(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).Output()
}
