package containerrules

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
)

// NetOutRule is garden's NetOutRule, the form in which garden-external-networker hands a
// container's application security groups to the plugin (runtimeConfig.netOutRules).
type NetOutRule struct {
	Protocol Protocol     `json:"protocol,omitempty"`
	Networks []IPRange    `json:"networks,omitempty"`
	Ports    []PortRange  `json:"ports,omitempty"`
	ICMPs    *ICMPControl `json:"icmps,omitempty"`
	Log      bool         `json:"log,omitempty"`
}

// Protocol is garden's protocol number: 0 all, 1 tcp, 2 udp, 3 icmp.
type Protocol uint8

// Garden's protocols.
const (
	ProtocolAll Protocol = iota
	ProtocolTCP
	ProtocolUDP
	ProtocolICMP
)

// IPRange is an inclusive range of IPv4 addresses; End defaults to Start.
type IPRange struct {
	Start netip.Addr `json:"start,omitempty"`
	End   netip.Addr `json:"end,omitempty"`
}

// PortRange is an inclusive range of ports; End defaults to Start.
type PortRange struct {
	Start uint16 `json:"start,omitempty"`
	End   uint16 `json:"end,omitempty"`
}

// ICMPControl selects ICMP messages; type 255 is any type, a missing code any code.
type ICMPControl struct {
	Type uint8  `json:"type,omitempty"`
	Code *uint8 `json:"code,omitempty"`
}

// DenyNetworks are destinations refused whatever a security group allows: Always for
// every container, Running for apps and tasks, Staging while an app stages (the
// metadata's container_workload says which).
type DenyNetworks struct {
	Always  []netip.Prefix
	Running []netip.Prefix
	Staging []netip.Prefix
}

// Egress is what a container may send out of the cell.
type Egress struct {
	Rules []NetOutRule
	// Workload is the metadata's container_workload: "app", "task" or "staging".
	Workload string
	Deny     DenyNetworks
	// Logging (the operator's iptables_logging) logs the new connections of rules with
	// log: true and every refused packet, each at most so many per second.
	Logging            bool
	AcceptedLogsPerSec int
	DeniedLogsPerSec   int
}

func (e Egress) denied() []netip.Prefix {
	out := slices.Clone(e.Deny.Always)
	switch e.Workload {
	case "app", "task":
		out = append(out, e.Deny.Running...)
	case "staging":
		out = append(out, e.Deny.Staging...)
	}
	return out
}

// EgressChains builds the container's egress chain (EgressChain(handle)) and the chains
// it jumps to. Traffic to the overlay is returned untouched to whoever judges container
// to container traffic. A NetOutRule that cannot be enforced as written (no networks,
// tcp or udp without ports, ports on icmp or all, an address that is not IPv4) allows
// nothing and is reported in the returned errors; the other rules still apply, as in
// silk (the CNI plugin cf-deployment ships).
func EgressChains(handle string, overlay []netip.Prefix, e Egress) ([]Chain, []error) {
	out, logc, rej := EgressChain(handle), chainName(kindLog, handle), chainName(kindRej, handle)
	rules := make([]string, 0, len(overlay)+4+len(e.Rules))
	for _, p := range overlay {
		rules = append(rules, "-d "+p.Masked().String()+" -j RETURN")
	}
	rules = append(rules,
		"-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-p tcp -m conntrack --ctstate INVALID -j DROP")
	for _, p := range e.denied() {
		rules = append(rules, "-d "+p.Masked().String()+" -j "+rej)
	}
	var problems []error
	logged := false
	seen := map[string]bool{}
	for i, r := range e.Rules {
		target := "ACCEPT"
		if r.Log && e.Logging {
			target = logc
		}
		specs, err := allowSpecs(r)
		if err != nil {
			problems = append(problems, fmt.Errorf("netOutRules[%d]: %w", i, err))
			continue
		}
		for _, s := range specs {
			rule := s + " -j " + target
			if seen[rule] {
				continue
			}
			seen[rule] = true
			rules = append(rules, rule)
			logged = logged || target == logc
		}
	}
	rules = append(rules, "-j "+rej)

	chains := []Chain{{Table: "filter", Name: out, Rules: rules}}
	if logged {
		chains = append(chains, Chain{Table: "filter", Name: logc, Rules: []string{
			fmt.Sprintf("-m conntrack --ctstate NEW -m limit --limit %d/sec --limit-burst %d -j LOG --log-prefix %q",
				positive(e.AcceptedLogsPerSec, 100), positive(e.AcceptedLogsPerSec, 100), logPrefix("OK", handle)),
			"-j ACCEPT",
		}})
	}
	var reject []string
	if e.Logging {
		reject = append(reject, fmt.Sprintf("-m limit --limit %d/sec --limit-burst %d -j LOG --log-prefix %q",
			positive(e.DeniedLogsPerSec, 1), positive(e.DeniedLogsPerSec, 1), logPrefix("DENY", handle)))
	}
	reject = append(reject,
		"-p tcp -j REJECT --reject-with tcp-reset",
		"-j REJECT --reject-with icmp-port-unreachable")
	chains = append(chains, Chain{Table: "filter", Name: rej, Rules: reject})
	return chains, problems
}

func positive(n, def int) int {
	if n > 0 {
		return n
	}
	return def
}

// allowSpecs are the match parts of the ACCEPT rules of one NetOutRule.
func allowSpecs(r NetOutRule) ([]string, error) {
	if len(r.Networks) == 0 {
		return nil, fmt.Errorf("no networks")
	}
	dests := make([]string, 0, len(r.Networks))
	for _, n := range r.Networks {
		d, err := destMatch(n)
		if err != nil {
			return nil, err
		}
		dests = append(dests, d)
	}
	var out []string
	switch r.Protocol {
	case ProtocolTCP, ProtocolUDP:
		proto := "tcp"
		if r.Protocol == ProtocolUDP {
			proto = "udp"
		}
		if len(r.Ports) == 0 {
			return nil, fmt.Errorf("%s rule without ports", proto)
		}
		for _, d := range dests {
			for _, p := range r.Ports {
				ports, err := portMatch(p)
				if err != nil {
					return nil, err
				}
				out = append(out, fmt.Sprintf("-p %s %s -m %s --dport %s", proto, d, proto, ports))
			}
		}
	case ProtocolICMP:
		if len(r.Ports) > 0 {
			return nil, fmt.Errorf("icmp rule with ports")
		}
		icmp := "any"
		if r.ICMPs != nil && r.ICMPs.Type != 255 {
			icmp = strconv.Itoa(int(r.ICMPs.Type))
			if r.ICMPs.Code != nil && *r.ICMPs.Code != 255 {
				icmp += "/" + strconv.Itoa(int(*r.ICMPs.Code))
			}
		}
		for _, d := range dests {
			out = append(out, fmt.Sprintf("-p icmp %s -m icmp --icmp-type %s", d, icmp))
		}
	case ProtocolAll:
		if len(r.Ports) > 0 {
			return nil, fmt.Errorf("rule for all protocols with ports")
		}
		out = dests
	default:
		return nil, fmt.Errorf("protocol %d is not 0 (all), 1 (tcp), 2 (udp) or 3 (icmp)", r.Protocol)
	}
	return out, nil
}

// destMatch matches a destination range: a /32 or a prefix when the range is one,
// iprange otherwise.
func destMatch(n IPRange) (string, error) {
	start, end := n.Start, n.End
	if !end.IsValid() {
		end = start
	}
	if !start.Is4() || !end.Is4() {
		return "", fmt.Errorf("network %s-%s is not an IPv4 range", n.Start, n.End)
	}
	if end.Less(start) {
		return "", fmt.Errorf("network %s-%s ends before it starts", start, end)
	}
	for bits := 0; bits <= 32; bits++ {
		p := netip.PrefixFrom(start, bits).Masked()
		if p.Addr() == start && lastAddr(p) == end {
			return "-d " + p.String(), nil
		}
	}
	return "-m iprange --dst-range " + start.String() + "-" + end.String(), nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= uint32(uint64(1)<<(32-p.Bits()) - 1)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func portMatch(p PortRange) (string, error) {
	end := p.End
	if end == 0 {
		end = p.Start
	}
	if p.Start == 0 || end < p.Start {
		return "", fmt.Errorf("port range %d-%d is not within 1-65535", p.Start, p.End)
	}
	if end == p.Start {
		return strconv.Itoa(int(p.Start)), nil
	}
	return strconv.Itoa(int(p.Start)) + ":" + strconv.Itoa(int(end)), nil
}
