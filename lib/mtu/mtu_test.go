package mtu_test

import (
	"errors"
	"net"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"netman/internal/testsupport/testenv"
	"netman/lib/mtu"
)

// hostNS makes a throwaway network namespace standing in for a cell: "underlay0" with
// the given MTU (one end of a veth pair) carries the IPv4 default route, "other0" (MTU 1280) carries a second
// default route with a worse metric and another address.
func hostNS(t testing.TB, underlayMTU int) ns.NetNS {
	t.Helper()
	testenv.RequireRoot(t)
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		netns.Close()
		_ = testutils.UnmountNS(netns)
	})
	err = netns.Do(func(ns.NetNS) error {
		for _, l := range []struct {
			name, cidr, gw string
			mtu, metric    int
		}{
			{"underlay0", "10.10.0.5/24", "10.10.0.1", underlayMTU, 100},
			{"other0", "192.168.77.5/24", "192.168.77.1", 1280, 200},
		} {
			// A veth pair with both ends up: the kernel here may lack the dummy driver.
			link := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: l.name, MTU: l.mtu}, PeerName: l.name + "p"}
			if err := netlink.LinkAdd(link); err != nil {
				return err
			}
			peer, err := netlink.LinkByName(l.name + "p")
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(peer); err != nil {
				return err
			}
			addr, err := netlink.ParseAddr(l.cidr)
			if err != nil {
				return err
			}
			if err := netlink.AddrAdd(link, addr); err != nil {
				return err
			}
			if err := netlink.LinkSetUp(link); err != nil {
				return err
			}
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP(l.gw), Priority: l.metric}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("setting up host namespace: %v", err)
	}
	return netns
}

func TestHostMTU(t *testing.T) {
	for _, hostMTU := range []int{1500, 9000, 1460} {
		netns := hostNS(t, hostMTU)
		for _, tc := range []struct {
			name     string
			underlay mtu.Underlay
			want     int
		}{
			{"default route", mtu.Underlay{}, hostMTU},
			{"underlay interface", mtu.Underlay{Interface: "other0"}, 1280},
			{"underlay ip", mtu.Underlay{IP: "192.168.77.5"}, 1280},
			{"underlay ip wins over interface", mtu.Underlay{IP: "10.10.0.5", Interface: "other0"}, hostMTU},
		} {
			err := netns.Do(func(ns.NetNS) error {
				got, err := mtu.HostMTU(tc.underlay)
				if err != nil {
					return err
				}
				if got != tc.want {
					t.Errorf("host mtu %d, %s: got %d, want %d", hostMTU, tc.name, got, tc.want)
				}
				return nil
			})
			if err != nil {
				t.Errorf("host mtu %d, %s: %v", hostMTU, tc.name, err)
			}
		}
	}
}

func TestHostMTUErrors(t *testing.T) {
	netns := hostNS(t, 1500)
	empty, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { empty.Close(); _ = testutils.UnmountNS(empty) }()

	for _, tc := range []struct {
		name     string
		in       ns.NetNS
		underlay mtu.Underlay
	}{
		{"unknown interface", netns, mtu.Underlay{Interface: "nope0"}},
		{"ip nobody holds", netns, mtu.Underlay{IP: "10.99.0.1"}},
		{"not an ip", netns, mtu.Underlay{IP: "cell-7"}},
		{"no default route", empty, mtu.Underlay{}},
	} {
		err := tc.in.Do(func(ns.NetNS) error {
			_, err := mtu.HostMTU(tc.underlay)
			return err
		})
		if err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func TestContainer(t *testing.T) {
	for _, tc := range []struct {
		host, overhead, want int
		tooSmall             bool
	}{
		{host: 1500, overhead: 50, want: 1450},
		{host: 9000, overhead: 50, want: 8950},
		{host: 1460, overhead: 50, want: 1410},
		{host: 1500, overhead: 0, want: 1500},
		{host: 600, overhead: 50, tooSmall: true},
		{host: 576, overhead: 0, want: 576},
	} {
		got, err := mtu.Container(tc.host, tc.overhead)
		if tc.tooSmall {
			if !errors.Is(err, mtu.ErrTooSmall) {
				t.Errorf("Container(%d, %d) = %d, %v; want ErrTooSmall", tc.host, tc.overhead, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Container(%d, %d) = %d, %v; want %d", tc.host, tc.overhead, got, err, tc.want)
		}
	}
	if _, err := mtu.Container(1500, -1); err == nil {
		t.Error("a negative overhead was accepted")
	}
	if err := mtu.Validate(-1500); !errors.Is(err, mtu.ErrTooSmall) {
		t.Errorf("Validate(-1500) = %v", err)
	}
}
