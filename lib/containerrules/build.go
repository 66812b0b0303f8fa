package containerrules

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// PortMapping forwards HostPort on the cell's instance address to ContainerPort.
type PortMapping struct {
	HostPort      int
	ContainerPort int
	Protocol      string // "tcp" (also when empty) or "udp"
}

// Spec is everything the rules of one container depend on.
type Spec struct {
	Handle string
	IP     netip.Addr // the container's IPv4 address
	// InstanceAddress is the cell's address that port mappings listen on; needed only
	// when there are PortMappings.
	InstanceAddress netip.Addr
	PortMappings    []PortMapping
	// Overlay are the ranges of container addresses (this cell's and, with an overlay
	// network, every cell's): traffic between them is container to container and left
	// to the policy agent.
	Overlay []netip.Prefix
	// Egress enforces security groups and masquerades what leaves the overlay, except
	// to NoMasquerade; nil leaves egress alone.
	Egress       *Egress
	NoMasquerade []netip.Prefix
	// HostServices are what the container may reach on the cell itself, besides replies
	// to the cell's own connections; everything else it sends to the cell is refused.
	HostServices []HostService
}

// Chain is a chain of one table and its rules, each without "-A <chain>".
type Chain struct {
	Table, Name string
	Rules       []string
}

// Jump is a rule in a built-in chain that leads to one of the container's chains.
type Jump struct {
	Table, Chain, Rule string
}

// Set is all the rules of one container.
type Set struct {
	Handle string
	Chains []Chain
	Jumps  []Jump
	// Skipped are the NetOutRules left out because they cannot be enforced as written.
	Skipped []error
}

// Build computes a container's rules. Bad input (a port out of range, a mapping without
// an instance address, a second mapping of one host port) is an error; a NetOutRule
// that cannot be enforced allows nothing and is listed in Set.Skipped.
func Build(s Spec) (Set, error) {
	if s.Handle == "" {
		return Set{}, errors.New("no container handle")
	}
	if !s.IP.Is4() {
		return Set{}, fmt.Errorf("container address %s is not IPv4", s.IP)
	}
	set := Set{Handle: s.Handle}
	ip := s.IP.String() + "/32"
	overlay := s.Overlay
	if len(overlay) == 0 {
		return Set{}, errors.New("no overlay range: container to container traffic could not be told apart")
	}

	var dnat, admit []string
	if len(s.PortMappings) > 0 {
		if !s.InstanceAddress.Is4() {
			return Set{}, errors.New("port mappings need the cell's IPv4 instance address")
		}
		inst := s.InstanceAddress.String()
		seen := map[string]bool{}
		for i, m := range s.PortMappings {
			proto := strings.ToLower(m.Protocol)
			if proto == "" {
				proto = "tcp"
			}
			if proto != "tcp" && proto != "udp" {
				return Set{}, fmt.Errorf("port mapping %d: protocol %q is not tcp or udp", i, m.Protocol)
			}
			if m.HostPort < 1 || m.HostPort > 65535 || m.ContainerPort < 1 || m.ContainerPort > 65535 {
				return Set{}, fmt.Errorf("port mapping %d: ports %d -> %d are not within 1-65535", i, m.HostPort, m.ContainerPort)
			}
			key := fmt.Sprintf("%s/%d", proto, m.HostPort)
			if seen[key] {
				return Set{}, fmt.Errorf("port mapping %d: host port %s mapped twice", i, key)
			}
			seen[key] = true
			dnat = append(dnat, fmt.Sprintf("-p %s -m %s --dport %d -j DNAT --to-destination %s:%d",
				proto, proto, m.HostPort, s.IP, m.ContainerPort))
			admit = append(admit, fmt.Sprintf("-p %s -m %s --dport %d -m conntrack --ctstate DNAT --ctorigdst %s/32 --ctorigdstport %d -j ACCEPT",
				proto, proto, m.ContainerPort, inst, m.HostPort))
		}
		name := chainName(kindDNAT, s.Handle)
		set.Chains = append(set.Chains, Chain{Table: "nat", Name: name, Rules: dnat})
		set.Jumps = append(set.Jumps, Jump{Table: "nat", Chain: "PREROUTING", Rule: "-d " + inst + "/32 -j " + name})
	}

	// What reaches the container from outside the overlay: connections through its
	// mappings (accepted here, whatever later chains say about containers), replies, and
	// nothing else. Container to container traffic is returned to the agent's chains.
	in := append(admit, "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")
	for _, p := range overlay {
		in = append(in, "-s "+p.Masked().String()+" -j RETURN")
	}
	in = append(in, "-p tcp -j REJECT --reject-with tcp-reset", "-j REJECT --reject-with icmp-port-unreachable")
	inName := chainName(kindIn, s.Handle)
	set.Chains = append(set.Chains, Chain{Table: "filter", Name: inName, Rules: in})
	set.Jumps = append(set.Jumps, Jump{Table: "filter", Chain: "FORWARD", Rule: "-d " + ip + " -j " + inName})

	host, err := hostChain(s.Handle, s.HostServices)
	if err != nil {
		return Set{}, err
	}
	set.Chains = append(set.Chains, host)
	set.Jumps = append(set.Jumps, Jump{Table: "filter", Chain: "INPUT", Rule: "-s " + ip + " -j " + host.Name})

	if s.Egress != nil {
		chains, skipped := EgressChains(s.Handle, overlay, *s.Egress)
		set.Chains = append(set.Chains, chains...)
		set.Skipped = skipped
		set.Jumps = append(set.Jumps, Jump{Table: "filter", Chain: "FORWARD", Rule: "-s " + ip + " -j " + EgressChain(s.Handle)})

		noMasq := s.NoMasquerade
		if len(noMasq) == 0 {
			noMasq = overlay
		}
		snat := make([]string, 0, len(noMasq)+1)
		for _, p := range noMasq {
			snat = append(snat, "-d "+p.Masked().String()+" -j RETURN")
		}
		snat = append(snat, "-j MASQUERADE")
		name := chainName(kindSNAT, s.Handle)
		set.Chains = append(set.Chains, Chain{Table: "nat", Name: name, Rules: snat})
		set.Jumps = append(set.Jumps, Jump{Table: "nat", Chain: "POSTROUTING", Rule: "-s " + ip + " -j " + name})
	}
	return set, nil
}

// restoreInput is the iptables-restore --noflush input that installs the set: each
// table's chains are declared (created, or emptied when a repeated ADD finds them),
// filled, and then jumped to from the top of the built-in chains.
func (s Set) restoreInput() []byte {
	var b strings.Builder
	for _, table := range []string{"nat", "filter"} {
		var chains []Chain
		var jumps []Jump
		for _, c := range s.Chains {
			if c.Table == table {
				chains = append(chains, c)
			}
		}
		for _, j := range s.Jumps {
			if j.Table == table {
				jumps = append(jumps, j)
			}
		}
		if len(chains) == 0 && len(jumps) == 0 {
			continue
		}
		b.WriteString("*" + table + "\n")
		for _, c := range chains {
			b.WriteString(":" + c.Name + " - [0:0]\n")
		}
		for _, c := range chains {
			for _, r := range c.Rules {
				b.WriteString("-A " + c.Name + " " + r + "\n")
			}
		}
		for _, j := range jumps {
			b.WriteString("-I " + j.Chain + " 1 " + j.Rule + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return []byte(b.String())
}
