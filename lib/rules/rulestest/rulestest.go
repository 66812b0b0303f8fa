// Package rulestest gives enforcement tests a throwaway cell: a network namespace with a
// bridge, containers in namespaces of their own, and probes that ask "can this container
// open a connection to that one?". Nothing of the real host's network is touched.
package rulestest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"netman/internal/testsupport/testenv"
	"netman/lib/rules"
)

// NewNS creates a throwaway network namespace with its loopback up, removed when the
// test ends.
func NewNS(t testing.TB) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("creating network namespace: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		_ = testutils.UnmountNS(n)
	})
	if err := n.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	}); err != nil {
		t.Fatalf("bringing up loopback: %v", err)
	}
	return n
}

// RequireEnforcement stops the test unless it can create namespaces and run iptables.
func RequireEnforcement(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "iptables")
	testenv.RequireCommand(t, "iptables-restore")
}

// Cell is a namespace with a bridge "br0" that bridges traffic through iptables. The bridge
// holds 10.0.0.1/24, the containers' gateway, as the bridge plugin sets it up: the cell needs
// a route to its containers to send them the answers REJECT generates.
type Cell struct {
	NS ns.NetNS
}

// NewCell creates the cell's namespace, its bridge, and turns on bridge netfilter inside it.
func NewCell(t testing.TB) *Cell {
	t.Helper()
	RequireEnforcement(t)
	c := &Cell{NS: NewNS(t)}
	err := c.NS.Do(func(ns.NetNS) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("adding bridge: %w", err)
		}
		gw, err := netlink.ParseAddr("10.0.0.1/24")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(br, gw); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(br); err != nil {
			return err
		}
		if err := NoICMPRateLimit(); err != nil {
			return err
		}
		return rules.EnableBridgeNetfilter(t.Context())
	})
	if err != nil {
		t.Fatalf("setting up cell: %v", err)
	}
	return c
}

// AddContainer creates a container namespace attached to br0 with address ip/24 on eth0.
func (c *Cell) AddContainer(t testing.TB, name, ip string) ns.NetNS {
	t.Helper()
	cont := NewNS(t)
	err := c.NS.Do(func(ns.NetNS) error {
		br, err := netlink.LinkByName("br0")
		if err != nil {
			return err
		}
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: "v-" + name, MasterIndex: br.Attrs().Index},
			PeerName:      "eth0",
			PeerNamespace: netlink.NsFd(int(cont.Fd())),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("adding veth: %w", err)
		}
		return netlink.LinkSetUp(veth)
	})
	if err != nil {
		t.Fatalf("attaching %s: %v", name, err)
	}
	err = cont.Do(func(ns.NetNS) error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addr, err := netlink.ParseAddr(ip + "/24")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(eth0, addr); err != nil {
			return err
		}
		return netlink.LinkSetUp(eth0)
	})
	if err != nil {
		t.Fatalf("configuring %s: %v", name, err)
	}
	return cont
}

// Serve answers "ok" on TCP and UDP port in the namespace n until the test ends.
func Serve(t testing.TB, n ns.NetNS, port int) {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	// Sockets belong to the namespace they were created in; serving them from any thread
	// afterwards is fine.
	err := n.Do(func(ns.NetNS) error {
		var err error
		if ln, err = net.Listen("tcp4", ":"+strconv.Itoa(port)); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp4", ":"+strconv.Itoa(port))
		return err
	})
	if err != nil {
		t.Fatalf("listening on %d: %v", port, err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = conn.Write([]byte("ok"))
			conn.Close()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
}

// Reach reports whether a new connection (tcp) or exchange (udp) from namespace n to addr
// gets an answer within timeout. A reject answers with "connection refused"; anything
// else unexpected is returned as an error.
func Reach(n ns.NetNS, proto, addr string, timeout time.Duration) (bool, error) {
	var ok bool
	err := n.Do(func(ns.NetNS) error {
		conn, err := net.DialTimeout(proto+"4", addr, timeout)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(timeout))
		if proto == "udp" {
			if _, err := conn.Write([]byte("ping")); err != nil {
				return err
			}
		}
		buf := make([]byte, 8)
		m, err := conn.Read(buf)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		ok = m > 0
		return nil
	})
	if isRefused(err) {
		return false, nil
	}
	return ok, err
}

// Until probes from n every 50 ms until Reach gives want, and returns how long that
// took; it fails the test when that has not happened within limit. Enforcement is
// applied by another process (an agent's cycle), so its moment is only seen by probing.
func Until(t testing.TB, n ns.NetNS, proto, addr string, want bool, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if ok, _ := Reach(n, proto, addr, time.Second); ok == want {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%s %s: reachable did not become %v within %v", proto, addr, want, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// NoICMPRateLimit lifts the kernel's per-peer limit on ICMP errors in the namespace of the
// calling thread. A real cell keeps it; tests that probe many rejected UDP exchanges in a
// few seconds would otherwise see timeouts where a reject is sent.
func NoICMPRateLimit() error {
	return os.WriteFile("/proc/sys/net/ipv4/icmp_ratelimit", []byte("0\n"), 0o644)
}
