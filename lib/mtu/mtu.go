// Package mtu finds the MTU of the host interface that carries the container overlay and
// derives the MTU containers must use so that encapsulated packets are not fragmented.
package mtu

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// Minimum is the smallest MTU accepted for a container interface: the IPv4 minimum
// datagram every host must accept (RFC 791).
const Minimum = 576

// ErrTooSmall is returned for an MTU below Minimum.
var ErrTooSmall = errors.New("mtu is below the minimum of 576")

// Underlay names the host interface that carries the overlay. At most one field is
// used: IP first, then Interface; with neither, the interface of the IPv4 default route.
type Underlay struct {
	IP        string
	Interface string
}

// HostMTU returns the MTU of the underlay interface, looked up in the network namespace
// of the calling thread. Dumps (addresses, routes) go through netlinksafe, which retries
// a dump the kernel interrupted because the table changed meanwhile: on a cell creating
// containers that happens all the time, and is no reason to fail an ADD.
func HostMTU(u Underlay) (int, error) {
	link, err := underlayLink(u)
	if err != nil {
		return 0, err
	}
	return link.Attrs().MTU, nil
}

func underlayLink(u Underlay) (netlink.Link, error) {
	switch {
	case u.IP != "":
		return linkByIP(u.IP)
	case u.Interface != "":
		link, err := netlinksafe.LinkByName(u.Interface)
		if err != nil {
			return nil, fmt.Errorf("finding underlay interface %q: %w", u.Interface, err)
		}
		return link, nil
	default:
		return defaultRouteLink()
	}
}

func linkByIP(s string) (netlink.Link, error) {
	ip := net.ParseIP(s)
	if ip == nil {
		return nil, fmt.Errorf("underlay ip %q is not an IP address", s)
	}
	addrs, err := netlinksafe.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			link, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("finding the interface holding %s: %w", ip, err)
			}
			return link, nil
		}
	}
	return nil, fmt.Errorf("no interface holds underlay ip %s", ip)
}

// defaultRouteLink picks the IPv4 default route with the lowest metric, as the kernel
// would for traffic to another cell.
func defaultRouteLink() (netlink.Link, error) {
	routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	var best *netlink.Route
	for i, r := range routes {
		if r.Dst != nil && !(r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) {
			continue
		}
		if r.LinkIndex == 0 && len(r.MultiPath) == 0 {
			continue
		}
		if best == nil || r.Priority < best.Priority {
			best = &routes[i]
		}
	}
	if best == nil {
		return nil, errors.New("no IPv4 default route to find the underlay interface by; set underlay_interface or underlay_ip")
	}
	index := best.LinkIndex
	if index == 0 {
		index = best.MultiPath[0].LinkIndex
	}
	link, err := netlink.LinkByIndex(index)
	if err != nil {
		return nil, fmt.Errorf("finding the default route's interface: %w", err)
	}
	return link, nil
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}

// Container returns the MTU for container interfaces behind a host interface of
// hostMTU when encapsulation adds overhead bytes.
func Container(hostMTU, overhead int) (int, error) {
	if overhead < 0 {
		return 0, fmt.Errorf("encapsulation overhead %d is negative", overhead)
	}
	m := hostMTU - overhead
	if err := Validate(m); err != nil {
		return 0, fmt.Errorf("host mtu %d minus overhead %d: %w", hostMTU, overhead, err)
	}
	return m, nil
}

// Validate rejects an MTU no container interface can use.
func Validate(m int) error {
	if m < Minimum {
		return fmt.Errorf("%w: %d", ErrTooSmall, m)
	}
	return nil
}
