package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"netman/internal/testsupport/iptablestest"
	"netman/internal/testsupport/testenv"
	"netman/lib/containerrules"
	"netman/lib/rules"
	"netman/lib/rules/rulestest"
	"netman/wrapper"
)

// The cell's address on the network the router (and the rest of the world) is on.
const (
	instanceAddress = "10.30.0.5"
	routerAddress   = "10.30.0.9"
)

// addRouter connects a "router" namespace to the cell by a veth (an underlay link,
// named so the harness does not count it as a container's): the cell holds
// instance_address, the router 10.30.0.9 plus the extra addresses (stand-ins for
// services outside the cell) and a route to the containers through the cell, so that it
// could reach them directly if the cell let it.
func (c *cell) addRouter(t *testing.T, extra ...string) ns.NetNS {
	t.Helper()
	router := rulestest.NewNS(t)
	err := c.host.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "underlay0r"}, PeerName: "rtr0p", PeerNamespace: netlink.NsFd(int(router.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr(instanceAddress + "/24")
		if err := netlink.AddrAdd(veth, addr); err != nil {
			return err
		}
		if err := rulestest.NoICMPRateLimit(); err != nil {
			return err
		}
		return netlink.LinkSetUp(veth)
	})
	if err != nil {
		t.Fatalf("cell side of the router link: %v", err)
	}
	err = router.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("rtr0p")
		if err != nil {
			return err
		}
		for _, a := range append([]string{routerAddress}, extra...) {
			addr, _ := netlink.ParseAddr(a + "/24")
			if err := netlink.AddrAdd(l, addr); err != nil {
				return err
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		_, dst, _ := net.ParseCIDR("10.255.0.0/16")
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Gw: net.ParseIP(instanceAddress)})
	})
	if err != nil {
		t.Fatalf("router side: %v", err)
	}
	return router
}

// rulesConf is the wrapper's conf with port mappings and egress enforced, plus extra.
func (c *cell) rulesConf(extra map[string]any) []byte {
	return c.conf("1.0.0", c.routedBridge(), c.rulesSettings(extra))
}

func (c *cell) rulesSettings(extra map[string]any) map[string]any {
	m := map[string]any{
		"instance_address":   instanceAddress,
		"iptables_lock_file": filepath.Join(c.dir, "iptables.lock"),
		"enforce_egress":     true,
		"overlay_network":    "10.255.0.0/16",
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// routedBridge is the bridge delegate as a cell has it: the containers' default route
// goes through the bridge, so they can answer and reach the world beyond the cell.
func (c *cell) routedBridge() map[string]any {
	d := c.bridgeDelegate()
	ipam := d["ipam"].(map[string]any)
	ipam["routes"] = []map[string]any{{"dst": "0.0.0.0/0"}}
	return d
}

// iptablesSave is the cell's nat and filter tables without counters or comments.
func (c *cell) iptablesSave(t *testing.T) string {
	t.Helper()
	var out string
	_ = c.host.Do(func(ns.NetNS) error { out = iptablestest.Save(t); return nil })
	return out
}

// expectIPTablesAsBefore fails the test unless the cell's iptables are what they were
// (before, from iptablesSave); when says after what.
func (c *cell) expectIPTablesAsBefore(t *testing.T, before, when string) {
	t.Helper()
	if got := c.iptablesSave(t); got != before {
		t.Fatalf("%s:\n%s\nbefore:\n%s", when, got, before)
	}
}

// serveSource answers each TCP connection on addr with the client's address as the
// server saw it.
func serveSource(t *testing.T, n ns.NetNS, addr string) {
	t.Helper()
	var ln net.Listener
	err := n.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listening on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = conn.Write([]byte(conn.RemoteAddr().(*net.TCPAddr).IP.String()))
			conn.Close()
		}
	}()
}

// ask connects from n to addr and returns what the server wrote; refused says the
// connection was actively refused (a REJECT or nobody listening), never a timeout.
func ask(n ns.NetNS, addr string) (answer string, refused bool, err error) {
	err = n.Do(func(ns.NetNS) error {
		conn, err := net.DialTimeout("tcp4", addr, 3*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 64)
		m, err := conn.Read(buf)
		answer = string(buf[:m])
		return err
	})
	if errors.Is(err, syscall.ECONNREFUSED) {
		return "", true, nil
	}
	return answer, false, err
}

func mustReach(t *testing.T, what string, n ns.NetNS, addr string) string {
	t.Helper()
	got, refused, err := ask(n, addr)
	if err != nil || refused || got == "" {
		t.Fatalf("%s: %s: answer %q, refused %v, error %v; want an answer", what, addr, got, refused, err)
	}
	return got
}

func mustRefuse(t *testing.T, what string, n ns.NetNS, addr string) {
	t.Helper()
	got, refused, err := ask(n, addr)
	if !refused {
		t.Fatalf("%s: %s: answer %q, error %v; want the connection refused", what, addr, got, err)
	}
}

// agent applies the reference agent's rules for these containers with no policies:
// every container closed to every other one.
func (c *cell) agent(t *testing.T, containers ...rules.Container) {
	t.Helper()
	err := c.host.Do(func(ns.NetNS) error {
		e, err := rules.NewEnforcer(filepath.Join(c.dir, "iptables.lock"))
		if err != nil {
			return err
		}
		rs, problems := rules.Build(containers, nil, rules.Overlay{})
		if len(problems) > 0 {
			return fmt.Errorf("%v", problems)
		}
		_, err = e.Apply(context.Background(), rs)
		return err
	})
	if err != nil {
		t.Fatalf("agent rules: %v", err)
	}
}

// The Diego shape: the router, outside the cell, reaches an app through
// instance_address:host_port and nothing else of it, whatever the agent's rules; DEL
// leaves the cell's iptables exactly as they were.
func TestPortMappingsFromOutsideTheCell(t *testing.T) {
	rulestest.RequireEnforcement(t)
	c := newCell(t, 1500)
	router := c.addRouter(t)
	c.agent(t) // the agent is running before the first container
	before := c.iptablesSave(t)

	app := newNS(t)
	conf := c.rulesConf(map[string]any{
		"metadata": metadataFor("app-1"),
		"runtimeConfig": map[string]any{"portMappings": []map[string]any{
			{"host_port": 61001, "container_port": 8080},                  // garden-external-networker's form
			{"hostPort": 61002, "containerPort": 2222, "protocol": "tcp"}, // the CNI convention
		}},
	})
	out := c.mustExec(invocation{command: "ADD", containerID: "app-1", netns: app, conf: conf})
	ip := parseResult(t, "1.0.0", out).IPs[0].Address.IP.String()
	serveSource(t, app, ":8080")
	serveSource(t, app, ":2222")
	serveSource(t, app, ":9999")

	check := func(when string) {
		t.Helper()
		if got := mustReach(t, when+": mapped port", router, instanceAddress+":61001"); got != routerAddress {
			t.Errorf("%s: the app saw the router as %s, want %s", when, got, routerAddress)
		}
		mustReach(t, when+": second mapping", router, instanceAddress+":61002")
		mustRefuse(t, when+": unmapped host port", router, instanceAddress+":61003")
		// Straight to the container's address, around the mapping.
		mustRefuse(t, when+": container address, mapped port", router, ip+":8080")
		mustRefuse(t, when+": container address, unmapped port", router, ip+":9999")
	}
	check("after ADD")

	// The agent learns of the container: closed to every other container.
	c.agent(t, rules.Container{Handle: "app-1", IP: ip, GroupID: "app-app-1"})
	check("with the agent's rules for the container")

	// The agent's jump first in FORWARD (it was restarted after the container started).
	err := c.host.Do(func(ns.NetNS) error {
		for _, args := range [][]string{{"-D", "FORWARD", "-j", rules.ForwardChain}, {"-I", "FORWARD", "1", "-j", rules.ForwardChain}} {
			if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	check("with the agent's chain before the container's")

	// DEL twice, as runtimes do; then the agent forgets the container.
	for range 2 {
		c.mustExec(invocation{command: "DEL", containerID: "app-1", netns: app, conf: c.rulesConf(nil)})
	}
	c.agent(t)
	c.expectIPTablesAsBefore(t, before, "iptables after DEL")
	mustRefuse(t, "after DEL", router, instanceAddress+":61001")
}

// Application security groups: what a rule allows is reached (masqueraded to the cell's
// address), every other address or port is refused, a deny network wins over an allow,
// replies pass, containers on the bridge still reach each other, and logging shows.
func TestEgressRules(t *testing.T) {
	rulestest.RequireEnforcement(t)
	c := newCell(t, 1500)
	router := c.addRouter(t, "10.30.0.10", "10.30.0.11")
	for _, a := range []string{routerAddress + ":8443", routerAddress + ":9000", "10.30.0.10:8443", "10.30.0.11:8443"} {
		serveSource(t, router, a)
	}
	err := c.host.Do(func(ns.NetNS) error { return rules.EnableBridgeNetfilter(context.Background()) })
	if errors.Is(err, rules.ErrNoBridgeNetfilter) {
		t.Fatalf("bridge netfilter: %v", err)
	}

	asgs := []map[string]any{
		// tcp 10.30.0.8-10.30.0.10 port 8443, logged
		{"protocol": 1, "networks": []map[string]any{{"start": "10.30.0.8", "end": "10.30.0.10"}}, "ports": []map[string]any{{"start": 8443, "end": 8443}}, "log": true},
		// unenforceable as written (tcp without ports): allows nothing
		{"protocol": 1, "networks": []map[string]any{{"start": "10.30.0.11", "end": "10.30.0.11"}}},
	}
	extra := map[string]any{
		"iptables_logging": true,
		"deny_networks":    map[string]any{"always": []string{"10.30.0.10/32"}, "staging": []string{"10.30.0.9/32"}},
		"dns_servers":      []string{"169.254.0.2"},
	}
	confFor := func(id, workload string) []byte {
		md := metadataFor(id)
		md["container_workload"] = workload
		m := map[string]any{"metadata": md, "runtimeConfig": map[string]any{
			"netOutRules":  asgs,
			"portMappings": []map[string]any{{"host_port": 61010, "container_port": 8080}},
		}}
		if workload != "app" {
			m["runtimeConfig"] = map[string]any{"netOutRules": asgs}
		}
		for k, v := range extra {
			m[k] = v
		}
		return c.rulesConf(m)
	}
	before := c.iptablesSave(t)

	app, peer, stager := newNS(t), newNS(t), newNS(t)
	out := c.mustExec(invocation{command: "ADD", containerID: "egress-app", netns: app, conf: confFor("egress-app", "app")})
	res := parseResult(t, "1.0.0", out)
	if got := res.DNS.Nameservers; len(got) != 1 || got[0] != "169.254.0.2" {
		t.Errorf("result nameservers %v, want dns_servers [169.254.0.2]", got)
	}
	peerOut := c.mustExec(invocation{command: "ADD", containerID: "egress-peer", netns: peer, conf: confFor("egress-peer", "task")})
	peerIP := parseResult(t, "1.0.0", peerOut).IPs[0].Address.IP.String()
	c.mustExec(invocation{command: "ADD", containerID: "egress-stager", netns: stager, conf: confFor("egress-stager", "staging")})
	serveSource(t, app, ":8080")
	serveSource(t, peer, ":7000")

	if got := mustReach(t, "allowed network and port", app, routerAddress+":8443"); got != instanceAddress {
		t.Errorf("the outside saw the container as %s, want it masqueraded to %s", got, instanceAddress)
	}
	mustRefuse(t, "allowed network, other port", app, routerAddress+":9000")
	mustRefuse(t, "other address", app, "10.30.0.11:8443")
	mustRefuse(t, "deny_networks.always inside an allowed range", app, "10.30.0.10:8443")
	mustRefuse(t, "deny_networks.staging for a staging container", stager, routerAddress+":8443")
	// Replies pass: the router's connection through the mapping gets its answer back.
	mustReach(t, "reply to a connection from outside", router, instanceAddress+":61010")
	// Container to container on the bridge is the agent's job, not the egress chain's.
	if got := mustReach(t, "another container on the cell", app, peerIP+":7000"); got != res.IPs[0].Address.IP.String() {
		t.Errorf("the peer saw %s, want the app's own address (no masquerade on the overlay)", got)
	}

	// The logged rule and the refusals were logged: their LOG rules counted packets.
	handle := "egress-app"
	logged := map[string]bool{}
	err = c.host.Do(func(ns.NetNS) error {
		out, err := exec.Command("iptables", "-t", "filter", "-S", "-v").Output()
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			if len(f) < 2 || !strings.Contains(l, "-j LOG") || !strings.Contains(l, strings.TrimPrefix(containerrules.EgressChain(handle), "nm-out-")) {
				continue
			}
			// "-A chain ... -c <packets> <bytes>"
			for i := range f {
				if f[i] == "-c" && i+1 < len(f) {
					if n, _ := strconv.Atoi(f[i+1]); n > 0 {
						logged[f[1][:strings.LastIndex(f[1], "-")]] = true
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !logged["nm-log"] || !logged["nm-rej"] {
		t.Errorf("LOG rules that counted packets: %v; want the allowed connection (nm-log) and the refusals (nm-rej)", logged)
	}

	for _, id := range []string{"egress-app", "egress-peer", "egress-stager"} {
		c.mustExec(invocation{command: "DEL", containerID: id, conf: c.rulesConf(nil)})
	}
	c.expectIPTablesAsBefore(t, before, "iptables after DEL")
}

// GC drops the records of containers the runtime no longer has, and their rules with them.
func TestGCRemovesTheRulesOfStaleContainers(t *testing.T) {
	rulestest.RequireEnforcement(t)
	c := newCell(t, 1500)
	before := c.iptablesSave(t)
	for i, id := range []string{"gc-live", "gc-gone"} {
		c.mustExec(invocation{command: "ADD", containerID: id, netns: newNS(t), conf: c.conf("1.1.0", c.routedBridge(), c.rulesSettings(map[string]any{
			"metadata":      metadataFor(id),
			"runtimeConfig": map[string]any{"portMappings": []map[string]any{{"host_port": 61000 + i, "container_port": 8080}}},
		}))})
	}
	valid := []map[string]string{{"containerID": "gc-live", "ifname": "eth0"}}
	c.mustExec(invocation{command: "GC", conf: c.conf("1.1.0", c.routedBridge(), c.rulesSettings(map[string]any{"cni.dev/valid-attachments": valid}))})
	after := c.iptablesSave(t)
	for id, want := range map[string]bool{"gc-live": true, "gc-gone": false} {
		if got := strings.Contains(after, containerrules.EgressChain(id)); got != want {
			t.Errorf("after GC, %s's egress chain present: %v, want %v\n%s", id, got, want, after)
		}
	}
	c.mustExec(invocation{command: "DEL", containerID: "gc-live", conf: c.rulesConf(nil)})
	c.expectIPTablesAsBefore(t, before, "after GC and DEL")
}

// An ADD that fails after its rules were installed (here: the record cannot be written)
// or because iptables refuses them leaves no rule, no IP and no interface behind.
func TestFailedAddLeavesNoRule(t *testing.T) {
	rulestest.RequireEnforcement(t)
	c := newCell(t, 1500)
	before := c.iptablesSave(t)
	mustWrite(t, c.datastore(), `{"half-written":{"handle":"half-wr`)
	container := newNS(t)
	settings := map[string]any{
		"metadata":      metadataFor("doomed"),
		"runtimeConfig": map[string]any{"portMappings": []map[string]any{{"host_port": 61001, "container_port": 8080}}},
	}
	_, err := c.exec(invocation{command: "ADD", containerID: "doomed", netns: container, conf: c.rulesConf(settings)})
	expectCode(t, err, wrapper.ErrDatastoreCorrupt)
	c.expectIPTablesAsBefore(t, before, "iptables after the failed ADD")
	c.expectNothingLeft(t, "netman-test", "after the failed ADD")

	// iptables refuses the rules. A fake, for failure injection: the kernel refuses only
	// malformed rules, which the wrapper never writes, so PATH leads this one ADD to an
	// iptables and iptables-restore that fail.
	if err := os.Remove(c.datastore()); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for _, name := range []string{"iptables", "iptables-restore"} {
		mustWrite(t, filepath.Join(bin, name), "#!/bin/sh\necho refused >&2\nexit 1\n")
		if err := os.Chmod(filepath.Join(bin, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	_, err = c.exec(invocation{command: "ADD", containerID: "doomed", netns: container, conf: c.rulesConf(settings)})
	ce := expectCode(t, err, wrapper.ErrNetRules)
	if !strings.Contains(ce.Details, "refused") {
		t.Errorf("error details %q do not carry iptables' message", ce.Details)
	}
	if _, ok := c.recordOf("doomed"); ok {
		t.Error("a record was written for the failed ADD")
	}
	c.expectNothingLeft(t, "netman-test", "after the ADD iptables refused")
}

// Each ADD and each DEL changes iptables with exactly one iptables-restore. A shim on
// PATH counts the calls and runs the real program, so the rules are real.
func TestOneRestorePerAddAndDel(t *testing.T) {
	rulestest.RequireEnforcement(t)
	real := testenv.RequireCommand(t, "iptables-restore")
	c := newCell(t, 1500)
	bin, calls := t.TempDir(), filepath.Join(t.TempDir(), "calls")
	mustWrite(t, filepath.Join(bin, "iptables-restore"), fmt.Sprintf("#!/bin/sh\necho call >>%s\nexec %s \"$@\"\n", calls, real))
	if err := os.Chmod(filepath.Join(bin, "iptables-restore"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	count := func() int {
		b, _ := os.ReadFile(calls)
		return strings.Count(string(b), "call\n")
	}
	container := newNS(t)
	c.mustExec(invocation{command: "ADD", containerID: "counted", netns: container, conf: c.ruledConf("counted", 61001)})
	if n := count(); n != 1 {
		t.Errorf("ADD with 2 port mappings and 5 security group rules ran iptables-restore %d times, want 1", n)
	}
	c.mustExec(invocation{command: "DEL", containerID: "counted", netns: container, conf: c.rulesConf(nil)})
	if n := count(); n != 2 {
		t.Errorf("DEL ran iptables-restore %d times, want 1", n-1)
	}
}

// What a container may reach on the cell itself (INPUT): the listed host services and
// DNS on a link-local dns_servers entry; every other port of the cell is refused,
// although something listens there; replies to the cell's own connections pass; DEL
// leaves the cell's iptables as they were.
func TestHostServices(t *testing.T) {
	rulestest.RequireEnforcement(t)
	c := newCell(t, 1500)
	const cellAddress = "10.10.0.5" // the cell's underlay address (newCell)
	err := c.host.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr("169.254.0.2/32") // bosh-dns' address on a cell
		return netlink.AddrAdd(lo, addr)
	})
	if err != nil {
		t.Fatal(err)
	}
	serveSource(t, c.host, cellAddress+":9001")
	serveSource(t, c.host, ":9002") // every address of the cell, the bridge's too
	serveSource(t, c.host, "169.254.0.2:53")
	before := c.iptablesSave(t)

	app := newNS(t)
	conf := c.rulesConf(map[string]any{
		"metadata":          metadataFor("host-app"),
		"host_tcp_services": []string{cellAddress + ":9001"},
		"dns_servers":       []string{"169.254.0.2"},
	})
	out := c.mustExec(invocation{command: "ADD", containerID: "host-app", netns: app, conf: conf})
	res := parseResult(t, "1.0.0", out)
	ip, gateway := res.IPs[0].Address.IP.String(), res.IPs[0].Gateway.String()
	serveSource(t, app, ":8080")

	if got := mustReach(t, "allowed host service", app, cellAddress+":9001"); got != ip {
		t.Errorf("the cell saw the container as %s, want %s", got, ip)
	}
	mustReach(t, "DNS (tcp) on the link-local dns_servers entry", app, "169.254.0.2:53")
	mustRefuse(t, "another port of the cell's address", app, cellAddress+":9002")
	mustRefuse(t, "the bridge's address", app, gateway+":9002")
	mustRefuse(t, "an allowed port on another address of the cell", app, gateway+":9001")
	// The cell's own connection to the container: its answers come back through INPUT.
	mustReach(t, "the cell connecting to the container", c.host, ip+":8080")

	c.mustExec(invocation{command: "DEL", containerID: "host-app", netns: app, conf: c.rulesConf(nil)})
	c.expectIPTablesAsBefore(t, before, "iptables after DEL")
}
