package containerrules

import (
	"context"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	"netman/internal/testsupport/iptablestest"
	"netman/internal/testsupport/testenv"
)

// inNS runs f in a throwaway network namespace, whose iptables start empty.
func inNS(t *testing.T, f func()) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "iptables-restore")
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		n.Close()
		_ = testutils.UnmountNS(n)
	}()
	if err := n.Do(func(ns.NetNS) error { f(); return nil }); err != nil {
		t.Fatal(err)
	}
}

func testSet(t *testing.T, handle string) Set {
	t.Helper()
	a := netip.MustParseAddr
	set, err := Build(Spec{
		Handle: handle, IP: a("10.255.0.7"), InstanceAddress: a("10.10.0.5"),
		Overlay:      []netip.Prefix{netip.MustParsePrefix("10.255.0.0/16")},
		PortMappings: []PortMapping{{HostPort: 61001, ContainerPort: 8080}},
		HostServices: []HostService{{Protocol: "udp", Addr: netip.MustParseAddrPort("169.254.0.2:53")}},
		Egress: &Egress{Logging: true, Workload: "app", Rules: []NetOutRule{
			// Every form garden sends, so the kernel is shown each kind of rule.
			{Protocol: ProtocolTCP, Networks: []IPRange{{a("10.9.0.0"), a("10.9.0.9")}}, Ports: []PortRange{{Start: 80}}, Log: true},
			{Protocol: ProtocolUDP, Networks: []IPRange{{a("10.8.0.0"), a("10.8.255.255")}}, Ports: []PortRange{{53, 54}}},
			{Protocol: ProtocolICMP, Networks: []IPRange{{Start: a("10.7.0.1")}}, ICMPs: &ICMPControl{Type: 8, Code: u8(0)}},
			{Protocol: ProtocolICMP, Networks: []IPRange{{Start: a("10.7.0.2")}}, ICMPs: &ICMPControl{Type: 3}},
			{Protocol: ProtocolICMP, Networks: []IPRange{{Start: a("10.7.0.3")}}, ICMPs: &ICMPControl{Type: 255}},
			{Networks: []IPRange{{a("0.0.0.0"), a("9.255.255.255")}}},
		}, Deny: DenyNetworks{Always: []netip.Prefix{netip.MustParsePrefix("10.9.0.8/29")}, Running: []netip.Prefix{netip.MustParsePrefix("10.6.0.0/16")}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func TestAddRemoveLeavesNothing(t *testing.T) {
	inNS(t, func() {
		ctx := context.Background()
		app, err := NewApplier(filepath.Join(t.TempDir(), "iptables.lock"))
		if err != nil {
			t.Fatal(err)
		}
		// Someone else's rules in the same built-in chains stay untouched.
		for _, chain := range []string{"FORWARD", "INPUT"} {
			if out, err := exec.Command("iptables", "-A", chain, "-s", "10.1.1.1/32", "-j", "ACCEPT").CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		before := iptablestest.Save(t)
		set := testSet(t, "container-1")
		if err := app.Add(ctx, set); err != nil {
			t.Fatal(err)
		}
		after := iptablestest.Save(t)
		for _, c := range set.Chains {
			if !strings.Contains(after, ":"+c.Name+" ") {
				t.Errorf("chain %s missing after Add:\n%s", c.Name, after)
			}
		}
		// A repeated ADD (the runtime retrying) and a repeated DEL leave nothing behind.
		if err := app.Add(ctx, set); err != nil {
			t.Fatal(err)
		}
		if err := app.Remove(ctx, "container-1"); err != nil {
			t.Fatal(err)
		}
		if got := iptablestest.Save(t); got != before {
			t.Fatalf("after Remove:\n%s\nbefore Add:\n%s", got, before)
		}
		if err := app.Remove(ctx, "container-1"); err != nil {
			t.Fatalf("second Remove: %v", err)
		}
		if got := iptablestest.Save(t); got != before {
			t.Fatalf("after the second Remove:\n%s\nbefore Add:\n%s", got, before)
		}
	})
}

func TestFailedAddLeavesNoRule(t *testing.T) {
	inNS(t, func() {
		app, err := NewApplier(filepath.Join(t.TempDir(), "iptables.lock"))
		if err != nil {
			t.Fatal(err)
		}
		before := iptablestest.Save(t)
		set := testSet(t, "container-2")
		// The nat table commits first; a filter rule the kernel refuses fails the rest.
		for i, c := range set.Chains {
			if c.Table == "filter" {
				set.Chains[i].Rules = append(set.Chains[i].Rules, "-j NO-SUCH-TARGET")
				break
			}
		}
		if err := app.Add(context.Background(), set); err == nil {
			t.Fatal("Add with a refused rule succeeded")
		}
		if got := iptablestest.Save(t); got != before {
			t.Fatalf("after the failed Add:\n%s\nbefore:\n%s", got, before)
		}
	})
}
