package agent_test

// Benchmarks at the size we design for: 250 containers on a cell and 10,000 policies that
// concern them, served over real mutual TLS, enforced with the real iptables-restore in a
// throwaway network namespace. Run as root:
//
//	go test -run '^$' -bench . -benchtime 20x ./policy-agent/agent/
//
// Besides ns/op each benchmark reports cpu-ms/op: user + system CPU of this process and of
// the iptables processes it ran. The stand-in policy server runs inside this process, so
// its JSON encoding is counted too: the agent's own share is lower.

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"netman/lib/models"
	"netman/lib/rules"
	"netman/policy-agent/agent"
)

const (
	benchContainers = 250
	benchPolicies   = 10_000
	remoteGroups    = 750 // sources on other cells
)

func benchGroup(i int) string { return fmt.Sprintf("app-%04d", i) }

// benchPolicySet returns n policies, each to a local group (destination i mod 250) from a
// mix of local and remote sources, on spread tcp/udp ports; shift moves one policy's port,
// so two sets differ in exactly one rule.
func benchPolicySet(n, shift int) []models.Policy {
	ps := make([]models.Policy, 0, n)
	for i := range n {
		dst := i % benchContainers
		src := (i * 7) % (benchContainers + remoteGroups)
		proto := "tcp"
		if i%5 == 0 {
			proto = "udp"
		}
		port := 1000 + i/benchContainers
		if i == 0 {
			port += shift
		}
		ps = append(ps, models.Policy{
			Source: models.Source{ID: benchGroup(src), Tag: fmt.Sprintf("%04X", src+1)},
			Destination: models.Destination{ID: benchGroup(dst), Tag: fmt.Sprintf("%04X", dst+1),
				Protocol: proto, Ports: models.Ports{Start: port, End: port}},
		})
	}
	return ps
}

func benchFixture(b *testing.B) *fixture {
	b.Helper()
	// The periodic full resync would turn every few-hundredth no-change cycle into a full
	// apply as the benchmark clock races ahead; it is measured by BenchmarkFullApply.
	f := newFixture(b, func(o *agent.Options) { o.Resync = 1 << 62 })
	for i := range benchContainers {
		f.add(b, fmt.Sprintf("handle-%d", i), fmt.Sprintf("10.255.%d.%d", i/200, 2+i%200), benchGroup(i))
	}
	f.srv.Set(benchPolicySet(benchPolicies, 0))
	return f
}

type cpuClock struct{ self, children syscall.Rusage }

func readCPU() cpuClock {
	var c cpuClock
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &c.self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &c.children)
	return c
}

func tv(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }

func (c cpuClock) since(before cpuClock) time.Duration {
	return c.selfSince(before) + c.childrenSince(before)
}

func (c cpuClock) selfSince(before cpuClock) time.Duration {
	return tv(c.self.Utime) + tv(c.self.Stime) - tv(before.self.Utime) - tv(before.self.Stime)
}

// childrenSince is the CPU of the iptables processes that ended in between.
func (c cpuClock) childrenSince(before cpuClock) time.Duration {
	return tv(c.children.Utime) + tv(c.children.Stime) - tv(before.children.Utime) - tv(before.children.Stime)
}

// inCell runs the benchmark loop on a thread inside the cell, where iptables acts.
func (f *fixture) inCell(b *testing.B, loop func()) {
	b.Helper()
	if err := f.cell.NS.Do(func(ns.NetNS) error { loop(); return nil }); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkFullApply is an agent's first cycle on a cell: fetch every policy, build all
// rules and write all of them in one iptables-restore into empty tables.
func BenchmarkFullApply(b *testing.B) {
	f := benchFixture(b)
	var res rules.Result
	f.inCell(b, func() {
		var cpu, ipt time.Duration
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			enf, err := rules.NewEnforcer(b.TempDir() + "/iptables.lock")
			if err != nil {
				b.Fatal(err)
			}
			if err := enf.Cleanup(b.Context()); err != nil {
				b.Fatal(err)
			}
			a, err := agent.New(agent.Options{Datastore: f.store.Path(), PollInterval: time.Second,
				Source: f.client, Enforcer: enf, Now: f.clock})
			if err != nil {
				b.Fatal(err)
			}
			before := readCPU()
			b.StartTimer()
			var out agent.Outcome
			out, res, err = a.Cycle(b.Context())
			b.StopTimer()
			after := readCPU()
			cpu += after.since(before)
			ipt += after.childrenSince(before)
			if err != nil || out != agent.Applied {
				b.Fatalf("cycle = %s, %v", out, err)
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
		b.ReportMetric(float64(ipt.Microseconds())/1000/float64(b.N), "iptables-cpu-ms/op")
	})
	b.ReportMetric(float64(res.Rules), "rules")
	b.ReportMetric(float64(res.RulesWritten), "rules-written/op")
}

// BenchmarkNoChangeCycle is the steady state: nothing changed on the cell or the server.
func BenchmarkNoChangeCycle(b *testing.B) {
	f := benchFixture(b)
	f.inCell(b, func() {
		f.expect(b, "first", agent.Applied)
		f.advance(5 * time.Second)
		f.expect(b, "confirm", agent.Unchanged)
		before := readCPU()
		b.ResetTimer()
		for range b.N {
			f.advance(5 * time.Second)
			out, _, err := f.agent.Cycle(b.Context())
			if err != nil || out != agent.Skipped {
				b.Fatalf("cycle = %s, %v; want skipped", out, err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(readCPU().since(before).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	})
}

// BenchmarkOnePolicyChanged changes one policy's port per cycle: the cycle fetches all
// policies again, but rewrites only the destination group's chain.
func BenchmarkOnePolicyChanged(b *testing.B) {
	f := benchFixture(b)
	sets := [][]models.Policy{benchPolicySet(benchPolicies, 0), benchPolicySet(benchPolicies, 1)}
	var written, changed, total int
	f.inCell(b, func() {
		f.expect(b, "first", agent.Applied)
		var cpu time.Duration
		b.ResetTimer()
		for i := range b.N {
			b.StopTimer()
			f.srv.Set(sets[(i+1)%2])
			f.advance(5 * time.Second)
			before := readCPU()
			b.StartTimer()
			out, res, err := f.agent.Cycle(b.Context())
			b.StopTimer()
			cpu += readCPU().since(before)
			if err != nil || out != agent.Applied {
				b.Fatalf("cycle = %s, %v", out, err)
			}
			written, changed, total = res.RulesWritten, res.RulesChanged, res.Rules
			b.StartTimer()
		}
		b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
	})
	b.ReportMetric(float64(total), "rules")
	b.ReportMetric(float64(written), "rules-written/op")
	b.ReportMetric(float64(changed), "rules-changed/op")
}

// BenchmarkBuild is rule generation alone.
func BenchmarkBuild(b *testing.B) {
	cs := make([]rules.Container, benchContainers)
	for i := range cs {
		cs[i] = rules.Container{Handle: fmt.Sprint(i), IP: fmt.Sprintf("10.255.%d.%d", i/200, 2+i%200), GroupID: benchGroup(i)}
	}
	ps := benchPolicySet(benchPolicies, 0)
	b.ReportAllocs()
	for b.Loop() {
		if _, problems := rules.Build(cs, ps, rules.Overlay{}); len(problems) > 0 {
			b.Fatal(problems)
		}
	}
}
