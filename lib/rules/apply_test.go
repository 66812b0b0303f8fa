package rules_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"netman/internal/testsupport/testenv"
	"netman/lib/models"
	"netman/lib/rules"
	"netman/lib/rules/rulestest"
)

// inNS runs f on a thread inside n; iptables started from it acts on n's tables.
func inNS(t *testing.T, n ns.NetNS, f func() error) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error { return f() }); err != nil {
		t.Fatal(err)
	}
}

// backend is one set of iptables programs.
type backend struct {
	name string
	bin  rules.Binaries
	save string
}

var defaultBackend = backend{"default", rules.Binaries{IPTables: "iptables", Restore: "iptables-restore"}, "iptables-save"}

// forEachBackend runs f with the PATH default and with each explicit backend installed
// here (nf_tables and legacy), each in its own namespaces.
func forEachBackend(t *testing.T, f func(t *testing.T, be backend)) {
	for _, be := range []backend{
		defaultBackend,
		{"nft", rules.Binaries{IPTables: "iptables-nft", Restore: "iptables-nft-restore"}, "iptables-nft-save"},
		{"legacy", rules.Binaries{IPTables: "iptables-legacy", Restore: "iptables-legacy-restore"}, "iptables-legacy-save"},
	} {
		t.Run(be.name, func(t *testing.T) {
			if be.name != "default" {
				testenv.RequireCommand(t, be.bin.Restore) // Debian's iptables package has both backends
			}
			f(t, be)
		})
	}
}

func save(t *testing.T, n ns.NetNS, be backend) string {
	t.Helper()
	var out []byte
	inNS(t, n, func() error {
		var err error
		out, err = exec.Command(be.save, "-t", "filter").Output()
		return err
	})
	// Drop comments and counters so two dumps compare by content.
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "#") || l == "" {
			continue
		}
		if strings.HasPrefix(l, ":") {
			l = l[:strings.Index(l, " ")]
		}
		lines = append(lines, l)
	}
	return strings.Join(lines, "\n")
}

func newEnforcer(t *testing.T, n ns.NetNS, be backend) *rules.Enforcer {
	t.Helper()
	var e *rules.Enforcer
	inNS(t, n, func() error {
		var err error
		e, err = rules.NewEnforcerWith(filepath.Join(t.TempDir(), "iptables.lock"), be.bin)
		return err
	})
	return e
}

func apply(t *testing.T, n ns.NetNS, e *rules.Enforcer, rs rules.Ruleset) rules.Result {
	t.Helper()
	var res rules.Result
	inNS(t, n, func() error {
		var err error
		res, err = e.Apply(t.Context(), rs)
		return err
	})
	return res
}

func mustBuild(t *testing.T, cs []rules.Container, ps ...models.Policy) rules.Ruleset {
	t.Helper()
	rs, problems := rules.Build(cs, ps, rules.Overlay{})
	if len(problems) > 0 {
		t.Fatalf("Build: %v", problems)
	}
	return rs
}

func TestApplyOwnsOnlyNetmanChains(t *testing.T) { forEachBackend(t, testApplyOwnsOnlyNetmanChains) }

func testApplyOwnsOnlyNetmanChains(t *testing.T, be backend) {
	cell := rulestest.NewCell(t)
	// Rules of another component, which netman must leave exactly as they are.
	inNS(t, cell.NS, func() error {
		for _, args := range [][]string{
			{"-N", "garden-forward"},
			{"-A", "garden-forward", "-s", "10.9.9.9/32", "-j", "DROP"},
			{"-A", "FORWARD", "-j", "garden-forward"},
			{"-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"},
		} {
			if out, err := exec.Command(be.bin.IPTables, args...).CombinedOutput(); err != nil {
				t.Fatalf("iptables %v: %v %s", args, err, out)
			}
		}
		return nil
	})
	e := newEnforcer(t, cell.NS, be)
	cs := []rules.Container{a, b}
	withPolicy := mustBuild(t, cs, policy("app-a", "0001", "app-b", "0002", "tcp", 8080, 8080))

	res := apply(t, cell.NS, e, withPolicy)
	if !res.Restored || res.Rules != withPolicy.RuleCount() || res.RulesWritten != res.Rules {
		t.Errorf("first apply: %+v, want everything written", res)
	}
	got := save(t, cell.NS, be)
	for _, want := range []string{
		"-A FORWARD -j netman-forward\n-A FORWARD -j garden-forward",
		"-A garden-forward -s 10.9.9.9/32 -j DROP",
		"-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
		"-A netman-in-0002 -p tcp -m tcp --dport 8080 -m mark --mark 0x1/0xffff -j ACCEPT",
		"-A netman-forward -s 10.0.0.2/32 -j MARK --set-xmark 0x1/0xffff",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("iptables-save lacks %q:\n%s", want, got)
		}
	}

	// The same set again: nothing to do, iptables not even called.
	if res := apply(t, cell.NS, e, withPolicy); res.Restored || res.RulesWritten != 0 {
		t.Errorf("unchanged apply: %+v, want no restore", res)
	}

	// A policy removed: one chain goes, the entry chain changes, nothing else is rewritten.
	without := mustBuild(t, cs)
	res = apply(t, cell.NS, e, without)
	if res.ChainsStale != 1 || res.RulesWritten != len(without.Chains[rules.ForwardChain]) {
		t.Errorf("removal: %+v, want 1 stale chain and only netman-forward written", res)
	}
	got = save(t, cell.NS, be)
	if strings.Contains(got, "netman-in-0002") {
		t.Errorf("stale chain left behind:\n%s", got)
	}
	if strings.Count(got, "-j netman-forward") != 1 {
		t.Errorf("want exactly one FORWARD jump:\n%s", got)
	}

	// A fresh enforcer (an agent restart) finds the state and converges without duplicates.
	e2 := newEnforcer(t, cell.NS, be)
	apply(t, cell.NS, e2, withPolicy)
	if again := save(t, cell.NS, be); strings.Count(again, "-j netman-forward") != 1 || !strings.Contains(again, "netman-in-0002") {
		t.Errorf("after restart:\n%s", again)
	}

	inNS(t, cell.NS, func() error { return e2.Cleanup(t.Context()) })
	// Again, on tables without netman: nothing to do, no error.
	inNS(t, cell.NS, func() error { return e2.Cleanup(t.Context()) })
	got = save(t, cell.NS, be)
	if strings.Contains(got, "netman") {
		t.Errorf("Cleanup left netman rules:\n%s", got)
	}
	if !strings.Contains(got, "-A garden-forward -s 10.9.9.9/32 -j DROP") || !strings.Contains(got, "-A FORWARD -j garden-forward") {
		t.Errorf("Cleanup touched another component's rules:\n%s", got)
	}
}

// TestEachChangeIsOneRestore counts the iptables-restore runs: one --noflush transaction
// per change, whatever it adds, empties or deletes, and none when nothing changed.
func TestEachChangeIsOneRestore(t *testing.T) {
	cell := rulestest.NewCell(t)
	restore, err := exec.LookPath("iptables-restore")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	counting := filepath.Join(dir, "iptables-restore")
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %s\nexec %s \"$@\"\n", calls, restore)
	if err := os.WriteFile(counting, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var e *rules.Enforcer
	inNS(t, cell.NS, func() (err error) {
		e, err = rules.NewEnforcerWith(filepath.Join(dir, "iptables.lock"), rules.Binaries{IPTables: "iptables", Restore: counting})
		return err
	})
	runs := func() []string {
		b, err := os.ReadFile(calls)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return strings.Fields(strings.ReplaceAll(string(b), " ", "_"))
	}

	cs := []rules.Container{a, b}
	withPolicy := mustBuild(t, cs, policy("app-a", "0001", "app-b", "0002", "tcp", 8080, 8080))
	for _, step := range []struct {
		name string
		rs   rules.Ruleset
		runs int
	}{
		{"first apply: chains, rules and the FORWARD jump", withPolicy, 1},
		{"the same set again", withPolicy, 1},
		{"a policy removed: a chain rewritten and a stale one deleted", mustBuild(t, cs), 2},
		{"a container and a policy added", mustBuild(t, append(cs, rules.Container{Handle: "c", IP: "10.0.0.9", GroupID: "app-c"}),
			policy("app-c", "0003", "app-b", "0002", "udp", 53, 53)), 3},
	} {
		apply(t, cell.NS, e, step.rs)
		if got := runs(); len(got) != step.runs {
			t.Fatalf("%s: %d iptables-restore runs in all, want %d: %v", step.name, len(got), step.runs, got)
		}
	}
	for _, r := range runs() {
		if !strings.Contains(r, "--noflush") {
			t.Errorf("iptables-restore ran without --noflush: %s", r)
		}
	}
}

func TestFailedApplyKeepsTheOldRules(t *testing.T) {
	forEachBackend(t, testFailedApplyKeepsTheOldRules)
}

func testFailedApplyKeepsTheOldRules(t *testing.T, be backend) {
	cell := rulestest.NewCell(t)
	e := newEnforcer(t, cell.NS, be)
	good := mustBuild(t, []rules.Container{a, b}, policy("app-a", "0001", "app-b", "0002", "tcp", 8080, 8080))
	apply(t, cell.NS, e, good)
	before := save(t, cell.NS, be)

	bad := mustBuild(t, []rules.Container{a, b})
	bad.Chains[rules.ForwardChain] = append(bad.Chains[rules.ForwardChain], "-j no-such-chain")
	inNS(t, cell.NS, func() error {
		if _, err := e.Apply(t.Context(), bad); err == nil || !strings.Contains(err.Error(), "no-such-chain") {
			t.Errorf("Apply(bad) = %v, want an error naming the chain", err)
		}
		return nil
	})
	if after := save(t, cell.NS, be); after != before {
		t.Errorf("a refused transaction changed the rules:\nbefore\n%s\nafter\n%s", before, after)
	}
	// The next good set converges from whatever is there.
	if res := apply(t, cell.NS, e, good); !res.Restored {
		t.Errorf("after a failure the enforcer must rewrite: %+v", res)
	}
	if after := save(t, cell.NS, be); after != before {
		t.Errorf("did not converge:\n%s", after)
	}
}

func TestApplyWaitsForTheSharedLock(t *testing.T) {
	cell := rulestest.NewCell(t)
	lockFile := filepath.Join(t.TempDir(), "iptables.lock")
	var e *rules.Enforcer
	inNS(t, cell.NS, func() (err error) { e, err = rules.NewEnforcer(lockFile); return err })

	f, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	inNS(t, cell.NS, func() error {
		if _, err := e.Apply(ctx, mustBuild(t, []rules.Container{a})); err == nil {
			t.Error("Apply went ahead while another component held the iptables lock")
		}
		return nil
	})
	f.Close() // releases the lock
	apply(t, cell.NS, e, mustBuild(t, []rules.Container{a}))
}

func TestTrafficFollowsTheRules(t *testing.T) { forEachBackend(t, testTrafficFollowsTheRules) }

func testTrafficFollowsTheRules(t *testing.T, be backend) {
	cell := rulestest.NewCell(t)
	nsA := cell.AddContainer(t, "a", "10.0.0.2")
	nsB := cell.AddContainer(t, "b", "10.0.0.3")
	for _, n := range []ns.NetNS{nsA, nsB} {
		rulestest.Serve(t, n, 8080)
		rulestest.Serve(t, n, 9090)
	}
	e := newEnforcer(t, cell.NS, be)
	cs := []rules.Container{a, b}

	type probe struct {
		from        ns.NetNS
		name, proto string
		to          string
		want        bool
	}
	check := func(step string, probes []probe) {
		t.Helper()
		for _, p := range probes {
			got, err := rulestest.Reach(p.from, p.proto, p.to, 2*time.Second)
			if err != nil {
				t.Errorf("%s: %s %s -> %s: %v", step, p.name, p.proto, p.to, err)
			} else if got != p.want {
				t.Errorf("%s: %s %s -> %s reachable = %v, want %v", step, p.name, p.proto, p.to, got, p.want)
			}
		}
	}

	check("without rules the bridge passes everything", []probe{{nsA, "a", "tcp", "10.0.0.3:8080", true}})

	apply(t, cell.NS, e, mustBuild(t, cs))
	check("no policy", []probe{
		{nsA, "a", "tcp", "10.0.0.3:8080", false},
		{nsA, "a", "udp", "10.0.0.3:8080", false},
		{nsB, "b", "tcp", "10.0.0.2:8080", false},
	})

	// A container the rules do not know yet (the runtime just created it) is closed.
	nsC := cell.AddContainer(t, "c", "10.0.0.9")
	rulestest.Serve(t, nsC, 8080)
	rulestest.Serve(t, cell.NS, 8081)
	check("unknown container", []probe{
		{nsA, "a", "tcp", "10.0.0.9:8080", false},
		{nsA, "a", "udp", "10.0.0.9:8080", false},
		{nsC, "c", "tcp", "10.0.0.3:8080", false},
		{nsC, "c", "tcp", "10.0.0.1:8081", true}, // the cell itself is not a container: not netman's business
	})

	apply(t, cell.NS, e, mustBuild(t, cs,
		policy("app-a", "0001", "app-b", "0002", "tcp", 8080, 8080),
		policy("app-a", "0001", "app-b", "0002", "udp", 8080, 8080)))
	check("a -> b 8080 allowed", []probe{
		{nsA, "a", "tcp", "10.0.0.3:8080", true},
		{nsA, "a", "udp", "10.0.0.3:8080", true},
		{nsA, "a", "tcp", "10.0.0.3:9090", false},
		{nsA, "a", "udp", "10.0.0.3:9090", false},
		{nsB, "b", "tcp", "10.0.0.2:8080", false},
		{nsB, "b", "udp", "10.0.0.2:8080", false},
	})

	apply(t, cell.NS, e, mustBuild(t, cs, policy("app-a", "0001", "app-b", "0002", "tcp", 9000, 9100)))
	check("port range", []probe{
		{nsA, "a", "tcp", "10.0.0.3:9090", true},
		{nsA, "a", "tcp", "10.0.0.3:8080", false},
	})

	apply(t, cell.NS, e, mustBuild(t, cs))
	check("policy removed", []probe{{nsA, "a", "tcp", "10.0.0.3:9090", false}})
}

// TestSwapHasNoWindow changes the rules over and over while connections run: an allowed
// connection must never fail and a forbidden one must never pass, which both would if a
// change left a moment with no rules or half of them.
func TestSwapHasNoWindow(t *testing.T) {
	be := defaultBackend
	cell := rulestest.NewCell(t)
	nsA := cell.AddContainer(t, "a", "10.0.0.2")
	nsB := cell.AddContainer(t, "b", "10.0.0.3")
	rulestest.Serve(t, nsB, 8080)
	rulestest.Serve(t, nsB, 9090)
	e := newEnforcer(t, cell.NS, be)
	cs := []rules.Container{a, b}
	// A fresh bridge may take a moment to pass the first packets (neighbour discovery on
	// a loaded machine); wait for that before judging verdicts.
	waitReachable(t, nsA, "10.0.0.3:8080")
	allow8080 := policy("app-a", "0001", "app-b", "0002", "tcp", 8080, 8080)
	sets := []rules.Ruleset{
		mustBuild(t, cs, allow8080),
		// Different chains and order, same verdicts for a -> b.
		mustBuild(t, cs, allow8080, policy("app-c", "0003", "app-b", "0002", "tcp", 9090, 9090),
			policy("app-b", "0002", "app-a", "0001", "udp", 53, 53)),
		mustBuild(t, append(cs, rules.Container{Handle: "c", IP: "10.0.0.9", GroupID: "app-c"}), allow8080),
	}
	apply(t, cell.NS, e, sets[0])

	var stop atomic.Bool
	var wrong atomic.Int64
	done := make(chan int)
	go func() {
		n := 0
		for !stop.Load() {
			for _, p := range []struct {
				to   string
				want bool
			}{{"10.0.0.3:8080", true}, {"10.0.0.3:9090", false}} {
				got, err := rulestest.Reach(nsA, "tcp", p.to, 3*time.Second)
				if err != nil || got != p.want {
					wrong.Add(1)
					t.Logf("connection %d to %s: reachable=%v err=%v, want reachable=%v", n, p.to, got, err, p.want)
				}
				n++
			}
		}
		done <- n
	}()
	for i := 0; i < 60; i++ {
		if res := apply(t, cell.NS, e, sets[(i+1)%len(sets)]); !res.Restored {
			t.Fatalf("swap %d did nothing", i)
		}
	}
	stop.Store(true)
	probes := <-done
	if wrong.Load() != 0 {
		t.Errorf("%d of %d connections got the wrong verdict during 60 swaps", wrong.Load(), probes)
	}
	t.Logf("%d connections during 60 swaps, all with the right verdict", probes)
}

func TestEnableBridgeNetfilterIsPerNamespace(t *testing.T) {
	rulestest.RequireEnforcement(t)
	host, err := os.ReadFile(rules.BridgeNFCallIPTables)
	if err != nil {
		testenv.Unavailable(t, fmt.Sprintf("no bridge netfilter setting on this machine: %v", err))
	}
	n := rulestest.NewNS(t)
	inNS(t, n, func() error {
		if err := os.WriteFile(rules.BridgeNFCallIPTables, []byte("0\n"), 0o644); err != nil {
			return err
		}
		if err := rules.EnableBridgeNetfilter(t.Context()); err != nil {
			return err
		}
		got, err := os.ReadFile(rules.BridgeNFCallIPTables)
		if strings.TrimSpace(string(got)) != "1" {
			t.Errorf("after EnableBridgeNetfilter the setting is %q", got)
		}
		return err
	})
	if after, _ := os.ReadFile(rules.BridgeNFCallIPTables); string(after) != string(host) {
		t.Errorf("the host's setting changed from %q to %q: the test must stay in its namespace", host, after)
	}
}

// waitReachable waits up to 10 s for the first successful TCP connection to addr.
func waitReachable(t *testing.T, from ns.NetNS, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, err := rulestest.Reach(from, "tcp", addr, time.Second)
		if ok && err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never became reachable without rules: reachable=%v err=%v", addr, ok, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
