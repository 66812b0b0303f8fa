package containerrules

import (
	"fmt"
	"net/netip"
)

// HostService is an address and port on the cell itself that containers may reach
// (silk's host_tcp_services and host_udp_services, and DNS on the cell's link-local
// resolvers).
type HostService struct {
	Protocol string // "tcp" or "udp"
	Addr     netip.AddrPort
}

// ParseHostService reads "address:port" as a service of protocol on the cell.
func ParseHostService(protocol, s string) (HostService, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return HostService{}, fmt.Errorf("%q is not an IPv4 address:port", s)
	}
	h := HostService{Protocol: protocol, Addr: ap}
	return h, h.validate()
}

func (h HostService) validate() error {
	a := h.Addr.Addr()
	switch {
	case h.Protocol != "tcp" && h.Protocol != "udp":
		return fmt.Errorf("host service %s: protocol %q is not tcp or udp", h.Addr, h.Protocol)
	case !a.Is4() || a.IsUnspecified():
		return fmt.Errorf("host service %s: not an IPv4 address:port", h.Addr)
	case a.IsLoopback():
		// The kernel drops a container's packets to 127.0.0.0/8 before any rule sees them.
		return fmt.Errorf("host service %s: a loopback address is never reachable from a container", h.Addr)
	case h.Addr.Port() == 0:
		return fmt.Errorf("host service %s: port 0", h.Addr)
	}
	return nil
}

// hostChain is what the container may send to the cell itself (INPUT): replies to
// connections the cell opened, the listed services, and nothing else, so that garden,
// the agents' debug and metrics ports, bosh-agent and every other service of the cell stay
// out of a container's reach.
func hostChain(handle string, services []HostService) (Chain, error) {
	rules := []string{"-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"}
	seen := map[HostService]bool{}
	for _, h := range services {
		if err := h.validate(); err != nil {
			return Chain{}, err
		}
		if seen[h] {
			continue
		}
		seen[h] = true
		rules = append(rules, fmt.Sprintf("-d %s/32 -p %s -m %s --dport %d -j ACCEPT", h.Addr.Addr(), h.Protocol, h.Protocol, h.Addr.Port()))
	}
	rules = append(rules, "-p tcp -j REJECT --reject-with tcp-reset", "-j REJECT --reject-with icmp-port-unreachable")
	return Chain{Table: "filter", Name: chainName(kindHost, handle), Rules: rules}, nil
}
