package containerrules

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func u8(v uint8) *uint8 { return &v }

func TestAllowSpecs(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		name string
		rule NetOutRule
		want []string
		bad  string
	}{
		{"tcp port range to a prefix", NetOutRule{Protocol: ProtocolTCP, Networks: []IPRange{{a("10.1.0.0"), a("10.1.255.255")}}, Ports: []PortRange{{8000, 8080}}},
			[]string{"-p tcp -d 10.1.0.0/16 -m tcp --dport 8000:8080"}, ""},
		{"udp single port to one address", NetOutRule{Protocol: ProtocolUDP, Networks: []IPRange{{Start: a("8.8.8.8")}}, Ports: []PortRange{{Start: 53}}},
			[]string{"-p udp -d 8.8.8.8/32 -m udp --dport 53"}, ""},
		{"all to an odd range", NetOutRule{Networks: []IPRange{{a("10.0.0.3"), a("10.0.0.9")}}},
			[]string{"-m iprange --dst-range 10.0.0.3-10.0.0.9"}, ""},
		{"icmp type and code", NetOutRule{Protocol: ProtocolICMP, Networks: []IPRange{{Start: a("1.2.3.4")}}, ICMPs: &ICMPControl{Type: 8, Code: u8(0)}},
			[]string{"-p icmp -d 1.2.3.4/32 -m icmp --icmp-type 8/0"}, ""},
		{"icmp any", NetOutRule{Protocol: ProtocolICMP, Networks: []IPRange{{Start: a("1.2.3.4")}}, ICMPs: &ICMPControl{Type: 255}},
			[]string{"-p icmp -d 1.2.3.4/32 -m icmp --icmp-type any"}, ""},
		{"several networks and ports", NetOutRule{Protocol: ProtocolTCP, Networks: []IPRange{{Start: a("1.1.1.1")}, {Start: a("2.2.2.2")}}, Ports: []PortRange{{Start: 80}, {Start: 443}}},
			[]string{"-p tcp -d 1.1.1.1/32 -m tcp --dport 80", "-p tcp -d 1.1.1.1/32 -m tcp --dport 443", "-p tcp -d 2.2.2.2/32 -m tcp --dport 80", "-p tcp -d 2.2.2.2/32 -m tcp --dport 443"}, ""},
		{"tcp without ports", NetOutRule{Protocol: ProtocolTCP, Networks: []IPRange{{Start: a("1.1.1.1")}}}, nil, "without ports"},
		{"no networks", NetOutRule{Protocol: ProtocolTCP, Ports: []PortRange{{Start: 1}}}, nil, "no networks"},
		{"all with ports", NetOutRule{Networks: []IPRange{{Start: a("1.1.1.1")}}, Ports: []PortRange{{Start: 1}}}, nil, "with ports"},
		{"reversed range", NetOutRule{Networks: []IPRange{{a("1.1.1.9"), a("1.1.1.1")}}}, nil, "ends before"},
		{"ipv6", NetOutRule{Networks: []IPRange{{Start: a("::1")}}}, nil, "not an IPv4"},
		{"bad protocol", NetOutRule{Protocol: 9, Networks: []IPRange{{Start: a("1.1.1.1")}}}, nil, "protocol 9"},
		{"reversed ports", NetOutRule{Protocol: ProtocolTCP, Networks: []IPRange{{Start: a("1.1.1.1")}}, Ports: []PortRange{{9, 1}}}, nil, "not within"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := allowSpecs(tt.rule)
			if tt.bad != "" {
				if err == nil || !strings.Contains(err.Error(), tt.bad) {
					t.Fatalf("got %v, %v; want an error with %q", got, err, tt.bad)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestGardenJSON(t *testing.T) {
	in := `[{"protocol":1,"networks":[{"start":"10.0.0.0","end":"10.0.0.255"}],"ports":[{"start":443,"end":443}],"log":true},
	        {"protocol":3,"networks":[{"start":"0.0.0.0","end":"255.255.255.255"}],"icmps":{"type":0,"code":0}},
	        {"networks":[{"start":"192.168.0.1"}]}]`
	var rules []NetOutRule
	if err := json.Unmarshal([]byte(in), &rules); err != nil {
		t.Fatal(err)
	}
	chains, skipped := EgressChains("h", nil, Egress{Rules: rules, Logging: true})
	if len(skipped) != 0 {
		t.Fatal(skipped)
	}
	out := chains[0].Rules
	want := []string{
		"-p tcp -d 10.0.0.0/24 -m tcp --dport 443 -j " + chainName(kindLog, "h"),
		"-p icmp -d 0.0.0.0/0 -m icmp --icmp-type 0/0 -j ACCEPT",
		"-d 192.168.0.1/32 -j ACCEPT",
	}
	for _, w := range want {
		if !slices.Contains(out, w) {
			t.Errorf("egress chain %q lacks %q", out, w)
		}
	}
}

func TestEgressOrder(t *testing.T) {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	allow := NetOutRule{Protocol: ProtocolTCP, Networks: []IPRange{{a("10.9.0.0"), a("10.9.255.255")}}, Ports: []PortRange{{Start: 80}}}
	e := Egress{
		Rules:    []NetOutRule{allow, allow, {Protocol: ProtocolTCP}},
		Workload: "staging",
		Deny:     DenyNetworks{Always: []netip.Prefix{p("10.9.1.0/24")}, Running: []netip.Prefix{p("10.9.2.0/24")}, Staging: []netip.Prefix{p("10.9.3.0/24")}},
	}
	chains, skipped := EgressChains("handle-1", []netip.Prefix{p("10.255.0.0/16")}, e)
	if len(skipped) != 1 || !strings.Contains(skipped[0].Error(), "netOutRules[2]") {
		t.Fatalf("skipped %v, want netOutRules[2] reported", skipped)
	}
	rej := chainName(kindRej, "handle-1")
	want := []string{
		"-d 10.255.0.0/16 -j RETURN",
		"-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-p tcp -m conntrack --ctstate INVALID -j DROP",
		"-d 10.9.1.0/24 -j " + rej,
		"-d 10.9.3.0/24 -j " + rej,
		"-p tcp -d 10.9.0.0/16 -m tcp --dport 80 -j ACCEPT",
		"-j " + rej,
	}
	if !slices.Equal(chains[0].Rules, want) {
		t.Fatalf("egress chain\n%q\nwant\n%q", chains[0].Rules, want)
	}
	if len(chains) != 2 || chains[1].Name != rej || len(chains[1].Rules) != 2 {
		t.Fatalf("without logging want only the reject chain without LOG, got %+v", chains[1:])
	}
}

func TestBuild(t *testing.T) {
	base := Spec{
		Handle: "c1", IP: netip.MustParseAddr("10.255.0.7"), InstanceAddress: netip.MustParseAddr("10.10.0.5"),
		Overlay: []netip.Prefix{netip.MustParsePrefix("10.255.0.0/16")},
	}
	bad := []struct {
		name string
		mod  func(*Spec)
		want string
	}{
		{"host port 0", func(s *Spec) { s.PortMappings = []PortMapping{{HostPort: 0, ContainerPort: 8080}} }, "not within"},
		{"container port too big", func(s *Spec) { s.PortMappings = []PortMapping{{HostPort: 1, ContainerPort: 70000}} }, "not within"},
		{"sctp", func(s *Spec) { s.PortMappings = []PortMapping{{HostPort: 1, ContainerPort: 2, Protocol: "sctp"}} }, "not tcp or udp"},
		{"twice", func(s *Spec) {
			s.PortMappings = []PortMapping{{HostPort: 1, ContainerPort: 2}, {HostPort: 1, ContainerPort: 3, Protocol: "TCP"}}
		}, "mapped twice"},
		{"no instance address", func(s *Spec) {
			s.InstanceAddress = netip.Addr{}
			s.PortMappings = []PortMapping{{HostPort: 1, ContainerPort: 2}}
		}, "instance address"},
		{"no handle", func(s *Spec) { s.Handle = "" }, "handle"},
		{"ipv6 container", func(s *Spec) { s.IP = netip.MustParseAddr("fd00::1") }, "IPv4"},
		{"no overlay", func(s *Spec) { s.Overlay = nil }, "overlay"},
		{"loopback host service", func(s *Spec) {
			s.HostServices = []HostService{{Protocol: "tcp", Addr: netip.MustParseAddrPort("127.0.0.1:9001")}}
		}, "loopback"},
		{"host service port 0", func(s *Spec) {
			s.HostServices = []HostService{{Protocol: "udp", Addr: netip.MustParseAddrPort("169.254.0.2:0")}}
		}, "port 0"},
		{"host service sctp", func(s *Spec) {
			s.HostServices = []HostService{{Protocol: "sctp", Addr: netip.MustParseAddrPort("169.254.0.2:53")}}
		}, "not tcp or udp"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			tt.mod(&s)
			if _, err := Build(s); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error with %q", err, tt.want)
			}
		})
	}

	s := base
	s.PortMappings = []PortMapping{{HostPort: 61001, ContainerPort: 8080}, {HostPort: 61002, ContainerPort: 2222, Protocol: "udp"}}
	s.Egress = &Egress{}
	dns := netip.MustParseAddrPort("169.254.0.2:53")
	s.HostServices = []HostService{{"udp", dns}, {"tcp", dns}, {"udp", dns}, {"tcp", netip.MustParseAddrPort("10.10.0.5:9001")}}
	set, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	in := string(set.restoreInput())
	for _, w := range []string{
		"-A nm-dnat-" + chainID("c1") + " -p tcp -m tcp --dport 61001 -j DNAT --to-destination 10.255.0.7:8080",
		"-A nm-dnat-" + chainID("c1") + " -p udp -m udp --dport 61002 -j DNAT --to-destination 10.255.0.7:2222",
		"-I PREROUTING 1 -d 10.10.0.5/32 -j nm-dnat-" + chainID("c1"),
		"-I POSTROUTING 1 -s 10.255.0.7/32 -j nm-snat-" + chainID("c1"),
		"-A nm-snat-" + chainID("c1") + " -d 10.255.0.0/16 -j RETURN",
		"-A nm-in-" + chainID("c1") + " -p tcp -m tcp --dport 8080 -m conntrack --ctstate DNAT --ctorigdst 10.10.0.5/32 --ctorigdstport 61001 -j ACCEPT",
		"-I FORWARD 1 -d 10.255.0.7/32 -j nm-in-" + chainID("c1"),
		"-I FORWARD 1 -s 10.255.0.7/32 -j nm-out-" + chainID("c1"),
		"-I INPUT 1 -s 10.255.0.7/32 -j nm-host-" + chainID("c1"),
	} {
		if !strings.Contains(in, w+"\n") {
			t.Errorf("restore input lacks %q:\n%s", w, in)
		}
	}
	host := chainName(kindHost, "c1")
	var hostRules []string
	for _, c := range set.Chains {
		if c.Name == host {
			hostRules = c.Rules
		}
	}
	// Replies first, each service once, then everything else refused.
	wantHost := []string{
		"-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-d 169.254.0.2/32 -p udp -m udp --dport 53 -j ACCEPT",
		"-d 169.254.0.2/32 -p tcp -m tcp --dport 53 -j ACCEPT",
		"-d 10.10.0.5/32 -p tcp -m tcp --dport 9001 -j ACCEPT",
		"-p tcp -j REJECT --reject-with tcp-reset",
		"-j REJECT --reject-with icmp-port-unreachable",
	}
	if !slices.Equal(hostRules, wantHost) {
		t.Errorf("host chain\n%q\nwant\n%q", hostRules, wantHost)
	}
	if strings.Count(in, "COMMIT") != 2 {
		t.Errorf("want one nat and one filter block:\n%s", in)
	}
	for _, c := range set.Chains {
		if len(c.Name) > 28 || !strings.HasPrefix(c.Name, Prefix) {
			t.Errorf("chain name %q: over 28 characters or without the prefix", c.Name)
		}
	}
}

func TestParseHostService(t *testing.T) {
	for _, tt := range []struct{ in, bad string }{
		{"169.254.0.2:53", ""},
		{"10.0.16.5:8080", ""},
		{"169.254.0.2", "address:port"},
		{"169.254.0.2:port", "address:port"},
		{"[fd00::1]:53", "IPv4"},
		{"0.0.0.0:53", "IPv4"},
		{"127.0.0.1:8722", "loopback"},
		{"169.254.0.2:0", "port 0"},
	} {
		h, err := ParseHostService("udp", tt.in)
		if tt.bad == "" && (err != nil || h.Addr.String() != tt.in) {
			t.Errorf("%q: got %v, %v", tt.in, h, err)
		}
		if tt.bad != "" && (err == nil || !strings.Contains(err.Error(), tt.bad)) {
			t.Errorf("%q: got %v, want an error with %q", tt.in, err, tt.bad)
		}
	}
}

func TestLogPrefix(t *testing.T) {
	got := logPrefix("DENY", "a-very-long-handle-with spaces\"and quotes-0123456789")
	if len(got) != 29 || strings.ContainsAny(got[:28], " \"") || !strings.HasPrefix(got, "DENY_a-very") {
		t.Fatalf("log prefix %q", got)
	}
}
