package containerrules_test

import (
	"net/netip"
	"reflect"
	"testing"

	"netman/lib/apiwire"
	"netman/lib/containerrules"
)

func TestFromSecurityGroupRules(t *testing.T) {
	in := []apiwire.SecurityGroupRule{
		{Protocol: "tcp", Destination: "10.0.0.0/24,10.0.1.5", Ports: "80, 8000-8080"},
		{Protocol: "udp", Destination: "10.0.0.1-10.0.0.9", Ports: "53"},
		{Protocol: "icmp", Destination: "0.0.0.0/0", Type: -1, Code: -1},
		{Protocol: "all", Destination: "192.168.0.0/16", Log: true},
		{Protocol: "tcp", Destination: "not-an-ip", Ports: "80"},
		{Protocol: "sctp", Destination: "10.0.0.1"},
	}
	got, problems := containerrules.FromSecurityGroupRules(in)
	a := netip.MustParseAddr
	any := uint8(255)
	want := []containerrules.NetOutRule{
		{Protocol: containerrules.ProtocolTCP,
			Networks: []containerrules.IPRange{{Start: a("10.0.0.0"), End: a("10.0.0.255")}, {Start: a("10.0.1.5")}},
			Ports:    []containerrules.PortRange{{Start: 80}, {Start: 8000, End: 8080}}},
		{Protocol: containerrules.ProtocolUDP, Networks: []containerrules.IPRange{{Start: a("10.0.0.1"), End: a("10.0.0.9")}},
			Ports: []containerrules.PortRange{{Start: 53}}},
		{Protocol: containerrules.ProtocolICMP, Networks: []containerrules.IPRange{{Start: a("0.0.0.0"), End: a("255.255.255.255")}},
			ICMPs: &containerrules.ICMPControl{Type: 255, Code: &any}},
		{Protocol: containerrules.ProtocolAll, Networks: []containerrules.IPRange{{Start: a("192.168.0.0"), End: a("192.168.255.255")}}, Log: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if len(problems) != 2 {
		t.Errorf("problems = %v, want the two unreadable rules", problems)
	}
}
