package crosscell_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"netman/internal/testsupport/foundation"
	"netman/lib/rules/rulestest"
)

// TestFoundationUp: every cell leased a subnet from etcd, and containers get 1450 on the
// 1500 underlay from the wrapper, which is flanneld's FLANNEL_MTU too.
func TestFoundationUp(t *testing.T) {
	f := sharedFoundation(t)
	leases, err := f.Leases(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != cells {
		t.Errorf("%d leases in etcd, want one per cell (%d): %v", len(leases), cells, leases)
	}
	for _, c := range f.Cells {
		l, err := c.Lease()
		if err != nil {
			t.Fatal(err)
		}
		if l.MTU != 1450 || l.Network != foundation.OverlayCIDR || !strings.HasPrefix(l.Subnet, "10.255.") {
			t.Errorf("cell %d lease %+v", c.Index, l)
		}
	}
	ct, _ := container(t, f, 1, newApp(t))
	if ct.MTU != 1450 {
		t.Errorf("container MTU %d, want 1450 (1500 underlay - 50 VXLAN)", ct.MTU)
	}
}

// TestCrossCellPolicy: A on cell 1, B on cell 2, C on cell 3 (in no policy), for TCP and
// UDP: refused without a policy, allowed after `netman policies add`, refused again after
// remove; B cannot reach A and C reaches neither, whatever is allowed.
func TestCrossCellPolicy(t *testing.T) {
	f := sharedFoundation(t)
	appA, appB, appC := newApp(t), newApp(t), newApp(t)
	a, nsA := container(t, f, 1, appA)
	b, nsB := container(t, f, 2, appB)
	_, nsC := container(t, f, 3, appC)
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			until(t, nsA, proto, addr(b, 8080), false)
			policy(t, f, "add", appA, appB, proto, 8080)
			until(t, nsA, proto, addr(b, 8080), true)
			if reach(t, nsA, proto, addr(b, 9090)) {
				t.Errorf("A reaches B on %s 9090, a port no policy allows", proto)
			}
			if reach(t, nsB, proto, addr(a, 8080)) {
				t.Errorf("B reaches A on %s 8080: the policy is one way", proto)
			}
			if reach(t, nsC, proto, addr(b, 8080)) {
				t.Errorf("C (cell 3, no policy) reaches B on %s 8080", proto)
			}
			if reach(t, nsC, proto, addr(a, 8080)) {
				t.Errorf("C (cell 3, no policy) reaches A on %s 8080", proto)
			}
			other := map[string]string{"tcp": "udp", "udp": "tcp"}[proto]
			if reach(t, nsA, other, addr(b, 8080)) {
				t.Errorf("A reaches B on %s 8080 with only a %s policy", other, proto)
			}
			policy(t, f, "remove", appA, appB, proto, 8080)
			until(t, nsA, proto, addr(b, 8080), false)
		})
	}
}

// TestFullSizeDFPingAcrossCells: a 1450-byte packet with DF set crosses the overlay (the
// VXLAN header fits the 1500 underlay) and a 1451-byte one is refused by the container's
// own MTU, not lost on the way. The target is cell 2's gateway on its flannel bridge: the
// packet crosses the overlay like app traffic, and the cell answers ICMP itself.
func TestFullSizeDFPingAcrossCells(t *testing.T) {
	f := sharedFoundation(t)
	a, _ := container(t, f, 1, newApp(t))
	b, _ := container(t, f, 2, newApp(t)) // cell 2's bridge exists once it has a container
	l, err := b.Cell.Lease()
	if err != nil {
		t.Fatal(err)
	}
	gw, _, _ := strings.Cut(l.Subnet, "/")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// 1422 bytes of ICMP payload + 8 ICMP + 20 IP = 1450.
	if out, err := a.Exec(ctx, "ping", "-c", "3", "-W", "2", "-M", "do", "-s", "1422", gw); err != nil {
		t.Fatalf("full-size DF ping from cell 1 to cell 2's gateway: %v\n%s", err, out)
	}
	out, err := a.Exec(ctx, "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1423", gw)
	if err == nil || !strings.Contains(string(out), "message too long") {
		t.Errorf("a 1451-byte DF ping should be refused locally (message too long): %v\n%s", err, out)
	}
}

// TestCellWithoutAgentCannotReachProtectedApp: cell 4 runs flanneld but no netman, so its
// containers' packets carry no mark. Even a policy naming the source admits nothing:
// no mark, no entry. Its containers also cannot reach an app that admits another source.
func TestCellWithoutAgentCannotReachProtectedApp(t *testing.T) {
	f := sharedFoundation(t)
	appA, appB, appD := newApp(t), newApp(t), newApp(t)
	_, nsA := container(t, f, 1, appA)
	b, _ := container(t, f, 2, appB)
	_, nsD := container(t, f, noAgentCell, appD)
	policy(t, f, "add", appA, appB, "tcp", 8080)
	policy(t, f, "add", appD, appB, "tcp", 8080)
	t.Cleanup(func() {
		policy(t, f, "remove", appA, appB, "tcp", 8080)
		policy(t, f, "remove", appD, appB, "tcp", 8080)
	})
	until(t, nsA, "tcp", addr(b, 8080), true) // the policies are in force
	for _, proto := range []string{"tcp", "udp"} {
		if reach(t, nsD, proto, addr(b, 8080)) {
			t.Errorf("a container of a cell without an agent reaches the protected app on %s", proto)
		}
	}
}

// TestOverlayBypass fails if traffic arriving from the overlay can reach a local
// container past netman's chains without the mark of an allowed source: unmarked, with
// another group's mark, with a forged mark on a port no policy allows, and to a container
// the destination's agent has not seen yet. Cell 4 runs no netman, so its packets carry
// whatever mark the test gives them.
func TestOverlayBypass(t *testing.T) {
	f := sharedFoundation(t)
	appA, appB, appD := newApp(t), newApp(t), newApp(t)
	_, nsA := container(t, f, 1, appA)
	b, _ := container(t, f, 2, appB)
	d, nsD := container(t, f, noAgentCell, appD)
	policy(t, f, "add", appA, appB, "tcp", 8080)
	t.Cleanup(func() { policy(t, f, "remove", appA, appB, "tcp", 8080) })
	until(t, nsA, "tcp", addr(b, 8080), true)

	tagA := tagOf(t, f, appA)
	cell4 := f.Cells[noAgentCell-1]
	mark := func(tag string) func() {
		rule := []string{"PREROUTING", "-s", d.IP + "/32", "-j", "MARK", "--set-mark", "0x" + tag}
		if out, err := cell4.Exec(t.Context(), append([]string{"iptables", "-w", "-t", "mangle", "-A"}, rule...)...); err != nil {
			t.Fatalf("marking on cell 4: %v %s", err, out)
		}
		return func() {
			if out, err := cell4.Exec(context.Background(), append([]string{"iptables", "-w", "-t", "mangle", "-D"}, rule...)...); err != nil {
				t.Errorf("unmarking on cell 4: %v %s", err, out)
			}
		}
	}

	// Unmarked.
	if reach(t, nsD, "tcp", addr(b, 8080)) {
		t.Error("unmarked overlay traffic reaches B")
	}
	// Another group's mark (B's own tag is some other allowed-nowhere value).
	unmark := mark(tagOf(t, f, appB))
	if reach(t, nsD, "tcp", addr(b, 8080)) {
		t.Error("overlay traffic with a mark no policy names reaches B")
	}
	unmark()
	// A's mark is what GBP carries for A: the receiving cell cannot tell a forged one, so
	// it opens exactly what A may use and nothing else.
	unmark = mark(tagA)
	if !reach(t, nsD, "tcp", addr(b, 8080)) {
		t.Error("A's mark over GBP does not reach B on the allowed port: the mark is not carried")
	}
	if reach(t, nsD, "tcp", addr(b, 9090)) {
		t.Error("A's mark reaches B on a port no policy allows")
	}
	if reach(t, nsD, "udp", addr(b, 8080)) {
		t.Error("A's mark reaches B on udp, a protocol no policy allows")
	}
	unmark()

	// A container the agent has not seen yet: the agent of cell 2 is stopped while it is
	// created, so no rule names it.
	cell2 := f.Cells[1]
	if err := cell2.StopAgent(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cell2.StartAgent(context.Background()); err != nil {
			t.Errorf("restarting cell 2's agent: %v", err)
		}
	})
	fresh, _ := container(t, f, 2, newApp(t))
	for _, from := range []ns.NetNS{nsA, nsD} {
		if reach(t, from, "tcp", addr(fresh, 8080)) {
			t.Error("overlay traffic reaches a container its cell's agent has not seen yet")
		}
	}
}

// tagOf is the tag the policy server gave app (from `netman tags`).
func tagOf(t *testing.T, f *foundation.Foundation, app string) string {
	t.Helper()
	out, err := f.Netman(t.Context(), "tags")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 3 && fields[0] == app { // ID TYPE TAG
			return fields[2]
		}
	}
	t.Fatalf("no tag for %s in:\n%s", app, out)
	return ""
}

// TestFlanneldRestart: flanneld stops and starts on cell 2 while A on cell 1 holds a
// connection to B on cell 2. The connection lives on, the lease and the rules stay, and
// a container created afterwards works and is enforced.
func TestFlanneldRestart(t *testing.T) {
	f := sharedFoundation(t)
	appA, appB, appC := newApp(t), newApp(t), newApp(t)
	_, nsA := container(t, f, 1, appA)
	b, nsB := container(t, f, 2, appB)
	_, nsC := container(t, f, 3, appC)
	echo(t, nsB, 7000)
	policy(t, f, "add", appA, appB, "tcp", 7000)
	policy(t, f, "add", appA, appB, "tcp", 8080)
	t.Cleanup(func() {
		policy(t, f, "remove", appA, appB, "tcp", 7000)
		policy(t, f, "remove", appA, appB, "tcp", 8080)
	})
	until(t, nsA, "tcp", addr(b, 8080), true)
	conn := dialIn(t, nsA, addr(b, 7000))
	roundTrip(t, conn, "before")

	cell2 := f.Cells[1]
	before, err := cell2.Lease()
	if err != nil {
		t.Fatal(err)
	}
	if err := cell2.StopFlanneld(); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, conn, "while flanneld is stopped")
	if err := cell2.StartFlanneld(t.Context()); err != nil {
		t.Fatal(err)
	}
	after, err := cell2.Lease()
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("lease changed across the restart: %+v -> %+v", before, after)
	}
	roundTrip(t, conn, "after the restart")
	if reach(t, nsC, "tcp", addr(b, 8080)) {
		t.Error("after flanneld's restart C reaches B: rules lost")
	}
	// flanneld re-adds its FORWARD accept rules; netman's jump must still come first.
	out, err := cell2.Exec(t.Context(), "iptables", "-w", "-S", "FORWARD")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) < 2 || lines[1] != "-A FORWARD -j netman-forward" {
		t.Errorf("netman's jump is not first in FORWARD after flanneld's restart:\n%s", out)
	}
	// A new container on the restarted cell gets the network and the rules.
	appE := newApp(t)
	e, _ := container(t, f, 2, appE)
	until(t, nsA, "tcp", addr(e, 8080), false)
	policy(t, f, "add", appA, appE, "tcp", 8080)
	t.Cleanup(func() { policy(t, f, "remove", appA, appE, "tcp", 8080) })
	until(t, nsA, "tcp", addr(e, 8080), true)
}

// echo answers every line on TCP port in n with the same line, until the test ends.
func echo(t *testing.T, n ns.NetNS, port int) {
	t.Helper()
	var ln net.Listener
	if err := n.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
}

func dialIn(t *testing.T, n ns.NetNS, to string) net.Conn {
	t.Helper()
	var c net.Conn
	if err := n.Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp4", to, 3*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func roundTrip(t *testing.T, c net.Conn, when string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", when); err != nil {
		t.Fatalf("%s: writing on the established connection: %v", when, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != when {
		t.Fatalf("%s: the established connection answered %q, %v", when, line, err)
	}
}

// TestPolicyServerReplicaDown: with the first of the two replicas stopped, a policy
// created through the second is enforced across cells: the cells' agents reach the other
// replica by the same name, over mutual TLS.
func TestPolicyServerReplicaDown(t *testing.T) {
	f := sharedFoundation(t)
	appA, appB := newApp(t), newApp(t)
	_, nsA := container(t, f, 1, appA)
	b, _ := container(t, f, 2, appB)
	until(t, nsA, "tcp", addr(b, 8080), false)
	first, second := f.Servers[0], f.Servers[1]
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := first.Start(context.Background()); err != nil {
			t.Errorf("restarting the first replica: %v", err)
		}
	})
	args := func(verb string) []string {
		return []string{"policies", verb, appA, appB, "--protocol", "tcp", "--port", "8080"}
	}
	if _, err := second.Netman(t.Context(), args("add")...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := second.Netman(context.Background(), args("remove")...); err != nil {
			t.Error(err)
		}
	})
	// An agent's first request after the replica went may fail and back off a cycle or two.
	rulestest.Until(t, nsA, "tcp", addr(b, 8080), true, 30*time.Second)
}
