package containerrules

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"netman/lib/apiwire"
)

// FromSecurityGroupRules turns Cloud Controller's security group rules (as the policy
// server's internal security_groups list carries them) into garden's NetOutRules, the
// one form EgressChains builds from. A rule that cannot be read allows nothing and is
// reported; the others still apply, as for netOutRules given at ADD.
func FromSecurityGroupRules(in []apiwire.SecurityGroupRule) ([]NetOutRule, []error) {
	out := make([]NetOutRule, 0, len(in))
	var problems []error
	for i, r := range in {
		n, err := fromSecurityGroupRule(r)
		if err != nil {
			problems = append(problems, fmt.Errorf("security group rule %d (%s %s): %w", i, r.Protocol, r.Destination, err))
			continue
		}
		out = append(out, n)
	}
	return out, problems
}

func fromSecurityGroupRule(r apiwire.SecurityGroupRule) (NetOutRule, error) {
	var n NetOutRule
	switch strings.ToLower(strings.TrimSpace(r.Protocol)) {
	case "all":
		n.Protocol = ProtocolAll
	case "tcp":
		n.Protocol = ProtocolTCP
	case "udp":
		n.Protocol = ProtocolUDP
	case "icmp":
		n.Protocol = ProtocolICMP
		n.ICMPs = &ICMPControl{Type: icmpValue(r.Type)}
		code := icmpValue(r.Code)
		n.ICMPs.Code = &code
	default:
		return n, fmt.Errorf("protocol %q is not tcp, udp, icmp or all", r.Protocol)
	}
	n.Log = r.Log
	// Cloud Controller allows a comma-separated list of destinations: an address, a
	// CIDR or a range "a-b".
	for _, d := range strings.Split(r.Destination, ",") {
		d = strings.TrimSpace(d)
		var rg IPRange
		var err error
		if start, end, ok := strings.Cut(d, "-"); ok {
			if rg.Start, err = netip.ParseAddr(strings.TrimSpace(start)); err == nil {
				rg.End, err = netip.ParseAddr(strings.TrimSpace(end))
			}
		} else if strings.Contains(d, "/") {
			var p netip.Prefix
			if p, err = netip.ParsePrefix(d); err == nil {
				p = p.Masked()
				rg = IPRange{Start: p.Addr(), End: lastAddr(p)}
				if !p.Addr().Is4() {
					err = fmt.Errorf("not IPv4")
				}
			}
		} else {
			rg.Start, err = netip.ParseAddr(d)
		}
		if err != nil {
			return n, fmt.Errorf("destination %q: %v", d, err)
		}
		n.Networks = append(n.Networks, rg)
	}
	if strings.TrimSpace(r.Ports) != "" {
		for _, p := range strings.Split(r.Ports, ",") {
			p = strings.TrimSpace(p)
			start, end, _ := strings.Cut(p, "-")
			s, err := strconv.ParseUint(strings.TrimSpace(start), 10, 16)
			if err != nil {
				return n, fmt.Errorf("ports %q: %q is not a port", r.Ports, p)
			}
			pr := PortRange{Start: uint16(s)}
			if end != "" {
				e, err := strconv.ParseUint(strings.TrimSpace(end), 10, 16)
				if err != nil {
					return n, fmt.Errorf("ports %q: %q is not a port range", r.Ports, p)
				}
				pr.End = uint16(e)
			}
			n.Ports = append(n.Ports, pr)
		}
	}
	return n, nil
}

// icmpValue maps Cloud Controller's -1 ("any") to garden's 255.
func icmpValue(v int) uint8 {
	if v < 0 || v > 255 {
		return 255
	}
	return uint8(v)
}
