package integration

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"netman/lib/containerrules"
	"netman/lib/datastore"
)

// Run with:
//
//	CNI_PATH=$PWD/.cache/cni/bin go test -run '^$' -bench 'NetRules' -benchtime 100x ./wrapper/integration/
//
// Both benchmarks measure the wrapper with port mappings and security groups against
// the same wrapper without them, side by side in one run, on a cell whose iptables
// already hold the rules of 250 containers with 2 port mappings and 5 security group
// rules each. Besides wall times they report the CPU time of each ADD (the wrapper's and
// its children's), which a busy machine does not inflate.

// benchASGs are 5 security group rules, as a typical app has them.
func benchASGs() []map[string]any {
	out := make([]map[string]any, 0, 5)
	for i := range 5 {
		out = append(out, map[string]any{
			"protocol": 1, "networks": []map[string]any{{"start": fmt.Sprintf("10.%d.0.0", 40+i), "end": fmt.Sprintf("10.%d.255.255", 40+i)}},
			"ports": []map[string]any{{"start": 443 + i, "end": 443 + i}},
		})
	}
	return out
}

// ruledConf is the ADD config of a container with 2 port mappings and benchASGs.
func (c *cell) ruledConf(id string, hostPort int) []byte {
	md := metadataFor(id)
	md["container_workload"] = "app"
	return c.rulesConf(map[string]any{
		"metadata": md,
		"runtimeConfig": map[string]any{
			"portMappings": []map[string]any{{"host_port": hostPort, "container_port": 8080}, {"host_port": hostPort + 1, "container_port": 2222}},
			"netOutRules":  benchASGs(),
		},
	})
}

// prefillRules installs the rules of n other containers, as the wrapper would have.
func (c *cell) prefillRules(tb testing.TB, n int) {
	tb.Helper()
	p := netip.MustParsePrefix
	var rules []containerrules.NetOutRule
	for i := range 5 {
		a := netip.MustParseAddr(fmt.Sprintf("10.%d.0.0", 40+i))
		e := netip.MustParseAddr(fmt.Sprintf("10.%d.255.255", 40+i))
		rules = append(rules, containerrules.NetOutRule{Protocol: containerrules.ProtocolTCP,
			Networks: []containerrules.IPRange{{Start: a, End: e}}, Ports: []containerrules.PortRange{{Start: uint16(443 + i)}}})
	}
	err := c.host.Do(func(ns.NetNS) error {
		app, err := containerrules.NewApplier(c.dir + "/iptables.lock")
		if err != nil {
			return err
		}
		for i := range n {
			set, err := containerrules.Build(containerrules.Spec{
				Handle: fmt.Sprintf("other-%03d", i), IP: netip.MustParseAddr(fmt.Sprintf("10.255.%d.%d", 100+i/250, 1+i%250)),
				InstanceAddress: netip.MustParseAddr(instanceAddress),
				PortMappings:    []containerrules.PortMapping{{HostPort: 61000 + 2*i, ContainerPort: 8080}, {HostPort: 61001 + 2*i, ContainerPort: 2222}},
				Overlay:         []netip.Prefix{p("10.255.0.0/16")},
				Egress:          &containerrules.Egress{Rules: rules, Workload: "app"},
			})
			if err != nil {
				return err
			}
			if err := app.Add(tb.Context(), set); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("prefilling iptables: %v", err)
	}
}

// ruleCounts counts the jumps to container chains in the cell's built-in chains.
func (c *cell) ruleCounts(tb testing.TB) (forward, prerouting int) {
	tb.Helper()
	err := c.host.Do(func(ns.NetNS) error {
		for _, tc := range []struct {
			table, chain string
			n            *int
		}{{"filter", "FORWARD", &forward}, {"nat", "PREROUTING", &prerouting}} {
			out, err := exec.Command("iptables", "-t", tc.table, "-S", tc.chain).Output()
			if err != nil {
				return err
			}
			*tc.n = strings.Count(string(out), " -j "+containerrules.Prefix)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return forward, prerouting
}

// BenchmarkNetRulesAdd alternates ADD+DEL of a container with 2 port mappings and 5
// security group rules and of the same container without them.
func BenchmarkNetRulesAdd(b *testing.B) {
	c := newCell(b, 1500)
	prefill(b, c, 249)
	c.prefillRules(b, 250)
	type variant struct {
		name      string
		conf      func(id string) []byte
		container ns.NetNS
		add, del  []time.Duration
		addCPU    []time.Duration
	}
	variants := []*variant{
		{name: "plain", container: newNS(b), conf: func(id string) []byte {
			return c.conf("1.0.0", c.routedBridge(), map[string]any{"metadata": metadataFor(id)})
		}},
		{name: "rules", container: newNS(b), conf: func(id string) []byte { return c.ruledConf(id, 64000) }},
	}
	// timed returns the wall time of one command and the CPU time it cost (the wrapper's
	// and its children's: the delegate, IPAM, iptables-restore), which a busy machine
	// does not inflate.
	timed := func(inv invocation) (wall, cpu time.Duration) {
		start := time.Now()
		r, err := c.start(inv)
		if err == nil {
			_, err = r.wait()
		}
		if err != nil {
			b.Fatalf("%s %s: %v", inv.command, inv.containerID, err)
		}
		ps := r.cmd.ProcessState
		return time.Since(start), ps.UserTime() + ps.SystemTime()
	}
	b.ResetTimer()
	for i := range b.N {
		order := variants
		if i%2 == 1 {
			order = []*variant{variants[1], variants[0]}
		}
		for _, v := range order {
			id := fmt.Sprintf("%s-%d", v.name, i)
			inv := invocation{command: "ADD", containerID: id, netns: v.container, conf: v.conf(id)}
			wall, cpu := timed(inv)
			v.add, v.addCPU = append(v.add, wall), append(v.addCPU, cpu)
			inv.command = "DEL"
			wall, _ = timed(inv)
			v.del = append(v.del, wall)
		}
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for _, v := range variants {
		b.ReportMetric(ms(quantile(v.add, 0.5)), v.name+"-add-p50-ms")
		b.ReportMetric(ms(quantile(v.add, 0.99)), v.name+"-add-p99-ms")
		b.ReportMetric(ms(quantile(v.del, 0.5)), v.name+"-del-p50-ms")
		b.ReportMetric(ms(quantile(v.addCPU, 0.5)), v.name+"-add-cpu-p50-ms")
	}
	plain, ruled := variants[0], variants[1]
	b.ReportMetric(ms(quantile(ruled.add, 0.5)-quantile(plain.add, 0.5)), "add-rules-cost-p50-ms")
	b.ReportMetric(ms(quantile(ruled.addCPU, 0.5)-quantile(plain.addCPU, 0.5)), "add-rules-cpu-p50-ms")
	b.ReportMetric(0, "ns/op")
	if fwd, pre := c.ruleCounts(b); fwd != 500 || pre != 250 {
		b.Fatalf("after the run FORWARD has %d and PREROUTING %d container jumps, want the others' 500 and 250", fwd, pre)
	}
}

// BenchmarkNetRulesConcurrentAdd250 starts 250 ADDs at once with port mappings and
// security groups, and 250 without, alternately; every ADD must be recorded and, with
// rules, have all of its rules. It reports both wall times and their ratio.
func BenchmarkNetRulesConcurrentAdd250(b *testing.B) {
	const n = 250
	c := newCell(b, 1500)
	c.prefillRules(b, 250)
	f := c.newFleet(b, n, "c%03d")
	var wall [2]time.Duration
	for round := range b.N {
		for k := range 2 {
			ruled := (k+round)%2 == 1
			f.rename(fmt.Sprintf("r%d-%v-", round, ruled) + "c%03d")
			for i := range n {
				if ruled {
					f.confs[i] = c.ruledConf(f.ids[i], 62000+2*i)
				} else {
					f.confs[i] = c.conf("1.0.0", c.routedBridge(), map[string]any{"metadata": metadataFor(f.ids[i])})
				}
			}
			b.StartTimer()
			start := time.Now()
			errs := parallel(n, func(i int) error {
				_, err := c.exec(f.invocation("ADD", i))
				return err
			})
			d := time.Since(start)
			b.StopTimer()
			for i, err := range errs {
				if err != nil {
					b.Fatalf("ADD %s: %v", f.ids[i], err)
				}
			}
			records, err := datastore.Read(c.datastore())
			if err != nil || len(records) != n {
				b.Fatalf("%d records (%v), want %d", len(records), err, n)
			}
			fwd, pre := c.ruleCounts(b)
			want := 500
			if ruled {
				want += 2 * n
			}
			if fwd != want || (ruled && pre != 250+n) {
				b.Fatalf("rules=%v: FORWARD has %d container jumps (want %d), PREROUTING %d", ruled, fwd, want, pre)
			}
			if ruled {
				wall[1] += d
			} else {
				wall[0] += d
			}
			f.delAll(b)
			if fwd, pre := c.ruleCounts(b); fwd != 500 || pre != 250 {
				b.Fatalf("after DEL: FORWARD %d, PREROUTING %d container jumps, want 500 and 250", fwd, pre)
			}
		}
	}
	per := func(d time.Duration) float64 { return float64(d.Milliseconds()) / float64(b.N) }
	b.ReportMetric(per(wall[0]), "plain-wall-ms")
	b.ReportMetric(per(wall[1]), "rules-wall-ms")
	b.ReportMetric(float64(wall[1])/float64(wall[0]), "rules/plain")
	b.ReportMetric(0, "ns/op")
}
