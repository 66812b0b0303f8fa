package wrapper

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
)

func bridgeResult(t *testing.T) (*current.Result, net.IP) {
	t.Helper()
	ip, ipnet, _ := net.ParseCIDR("10.255.0.7/16")
	ipnet.IP = ip
	return &current.Result{CNIVersion: "1.0.0", IPs: []*current.IPConfig{{Address: *ipnet}}}, ip
}

func TestRuleSpec(t *testing.T) {
	dir := t.TempDir()
	subnet := filepath.Join(dir, "subnet.env")
	if err := os.WriteFile(subnet, []byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bridge := `"delegate": {"type": "bridge"}`
	flannel := fmt.Sprintf(`"delegate": {"type": "flannel", "subnetFile": %q}`, subnet)
	tests := []struct {
		name, conf string
		overlay    string // wanted overlay ranges, comma separated
		mappings   string // wanted "host>container/proto", comma separated
		egress     bool
		bad        string
	}{
		{"garden's form", bridge + `, "instance_address": "10.0.0.5", "runtimeConfig": {"portMappings": [{"host_port": 61001, "container_port": 8080}]}`,
			"10.255.0.0/16", "61001>8080/", false, ""},
		{"CNI convention", bridge + `, "instance_address": "10.0.0.5", "runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "udp"}]}`,
			"10.255.0.0/16", "80>8080/udp", false, ""},
		{"both forms agreeing", bridge + `, "instance_address": "10.0.0.5", "runtimeConfig": {"portMappings": [{"hostPort": 80, "host_port": 80, "containerPort": 1}]}`,
			"10.255.0.0/16", "80>1/", false, ""},
		{"flannel overlay from the subnet file", flannel + `, "enforce_egress": true`, "10.244.0.0/16,10.255.0.0/16", "", true, ""},
		{"overlay_network wins", flannel + `, "enforce_egress": true, "overlay_network": "10.250.0.0/15"`, "10.250.0.0/15,10.255.0.0/16", "", true, ""},
		{"both forms disagreeing", bridge + `, "instance_address": "10.0.0.5", "runtimeConfig": {"portMappings": [{"hostPort": 80, "host_port": 81, "containerPort": 1}]}`, "", "", false, "different values"},
		{"no container port", bridge + `, "instance_address": "10.0.0.5", "runtimeConfig": {"portMappings": [{"host_port": 80}]}`, "", "", false, "no container port"},
		{"mappings without instance_address", bridge + `, "enforce_egress": true, "runtimeConfig": {"portMappings": [{"host_port": 80, "container_port": 1}]}`, "", "", false, "instance_address"},
		{"bad instance_address", bridge + `, "instance_address": "cell-1"`, "", "", false, "instance_address"},
		{"bad deny network", bridge + `, "enforce_egress": true, "deny_networks": {"running": ["10.0.0.0/33"]}`, "", "", false, "deny_networks.running"},
		{"bad overlay", bridge + `, "enforce_egress": true, "overlay_network": "10.0.0.0"`, "", "", false, "overlay_network"},
		{"bad no_masquerade", bridge + `, "enforce_egress": true, "no_masquerade_cidr_range": "x"`, "", "", false, "no_masquerade_cidr_range"},
		{"flannel without its subnet file", `"delegate": {"type": "flannel", "subnetFile": "/nonexistent/subnet.env"}, "enforce_egress": true`, "", "", false, "flannel subnet file"},
		{"bad host_tcp_services", bridge + `, "instance_address": "10.0.0.5", "host_tcp_services": ["169.254.0.2"]`, "", "", false, "host_tcp_services"},
		{"loopback host_udp_services", bridge + `, "instance_address": "10.0.0.5", "host_udp_services": ["127.0.0.1:53"]`, "", "", false, "host_udp_services"},
		{"netOutRules not garden's shape", bridge + `, "enforce_egress": true, "runtimeConfig": {"netOutRules": [{"networks": [{"start": "not-an-ip"}]}]}`, "", "", false, "netOutRules"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := LoadConfig([]byte(`{"cniVersion": "1.0.0", "name": "n", "type": "wrapper", "datastore": "/d", ` + tt.conf + `}`))
			if err != nil {
				t.Fatal(err)
			}
			res, ip := bridgeResult(t)
			spec, _, err := cfg.ruleSpec("h", res, ip)
			if tt.bad != "" {
				if err == nil || !strings.Contains(err.Error(), tt.bad) {
					t.Fatalf("got %v, want an error with %q", err, tt.bad)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var overlay, mappings []string
			for _, p := range spec.Overlay {
				overlay = append(overlay, p.String())
			}
			for _, m := range spec.PortMappings {
				mappings = append(mappings, fmt.Sprintf("%d>%d/%s", m.HostPort, m.ContainerPort, m.Protocol))
			}
			if strings.Join(overlay, ",") != tt.overlay || strings.Join(mappings, ",") != tt.mappings || (spec.Egress != nil) != tt.egress {
				t.Fatalf("overlay %v, mappings %v, egress %v; want %s, %s, %v", overlay, mappings, spec.Egress != nil, tt.overlay, tt.mappings, tt.egress)
			}
		})
	}
}

func TestHostServices(t *testing.T) {
	cfg, err := LoadConfig([]byte(`{"cniVersion": "1.0.0", "name": "n", "type": "wrapper", "datastore": "/d", "delegate": {"type": "bridge"},
		"instance_address": "10.0.0.5", "dns_servers": ["169.254.0.2", "8.8.8.8"],
		"host_tcp_services": ["10.0.0.5:9001"], "host_udp_services": ["169.254.0.2:9003"]}`))
	if err != nil {
		t.Fatal(err)
	}
	res, ip := bridgeResult(t)
	spec, _, err := cfg.ruleSpec("h", res, ip)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range spec.HostServices {
		got = append(got, h.Protocol+" "+h.Addr.String())
	}
	// DNS on the link-local resolver only: 8.8.8.8 is not on the cell, egress rules decide.
	want := "udp 169.254.0.2:53,tcp 169.254.0.2:53,tcp 10.0.0.5:9001,udp 169.254.0.2:9003"
	if strings.Join(got, ",") != want {
		t.Fatalf("host services %v, want %s", got, want)
	}
}

func TestNetOutRulesIgnoredWithoutEgressSaySo(t *testing.T) {
	cfg, err := LoadConfig([]byte(`{"cniVersion": "1.0.0", "name": "n", "type": "wrapper", "datastore": "/d", "delegate": {"type": "bridge"},
		"instance_address": "10.0.0.5", "runtimeConfig": {"netOutRules": [{"networks": [{"start": "1.1.1.1"}]}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	res, ip := bridgeResult(t)
	spec, warnings, err := cfg.ruleSpec("h", res, ip)
	if err != nil || spec.Egress != nil || len(warnings) != 1 || !strings.Contains(warnings[0], "enforce_egress") {
		t.Fatalf("egress %v, warnings %v, error %v; want no egress and a warning naming enforce_egress", spec.Egress, warnings, err)
	}
}
