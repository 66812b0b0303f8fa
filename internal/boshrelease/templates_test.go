package boshrelease

import (
	"bytes"
	"encoding/json"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"netman/internal/testsupport/freeport"
	"netman/internal/testsupport/pgtest"
	"netman/internal/testsupport/testenv"
	"netman/lib/mutualtls/mutualtlstest"
	"netman/wrapper"
)

// Properties a test deployment sets; each test changes what it is about.
func policyServerProps(t testing.TB) map[string]any {
	t.Helper()
	ca := mutualtlstest.NewAuthority(t, "netman test CA")
	cert, key := ca.Issue(t, mutualtlstest.ServerLeaf())
	return map[string]any{
		"policy-server.ca_cert":     string(ca.CertPEM),
		"policy-server.server_cert": string(cert),
		"policy-server.server_key":  string(key),
		"database.host":             "db.service.cf.internal",
		"database.username":         "network_policy",
		"database.password":         "p@ss:w/rd?#&%",
	}
}

// externalAPIProps turns on the external API: UAA for tokens, HTTPS with its own cert.
func externalAPIProps(t testing.TB) map[string]any {
	ca := mutualtlstest.NewAuthority(t, "external CA")
	cert, key := ca.Issue(t, mutualtlstest.Leaf{CommonName: "api.example.com", DNSNames: []string{"api.example.com"}})
	return map[string]any{
		"uaa_ca":                   string(mutualtlstest.NewAuthority(t, "UAA CA").CertPEM),
		"policy-server.jwt_issuer": "https://uaa.example.com/oauth/token",
		"enable_tls":               true,
		"server_cert":              string(cert),
		"server_key":               string(key),
	}
}

// ccProps turns on the Cloud Controller integration with cf-deployment's credentials.
func ccProps(t testing.TB) map[string]any {
	ca := mutualtlstest.NewAuthority(t, "service_cf_internal_ca")
	cert, key := ca.Issue(t, mutualtlstest.Leaf{CommonName: "policy_server_asg_syncer_cc_client", Client: true})
	return map[string]any{
		"policy-server.cc_url":                              "https://cloud-controller-ng.service.cf.internal:9024",
		"policy-server.cc_ca_cert":                          string(ca.CertPEM),
		"policy-server.cc_internal_url":                     "https://cloud-controller-ng.service.cf.internal:9023",
		"policy-server.cc_internal.ca_cert":                 string(ca.CertPEM),
		"policy-server.cc_internal.client_cert":             string(cert),
		"policy-server.cc_internal.client_key":              string(key),
		"policy-server.uaa_client_secret":                   "network-policy-secret",
		"policy-server.enable_space_developer_self_service": true,
	}
}

func policyAgentProps(t testing.TB) map[string]any {
	t.Helper()
	ca := mutualtlstest.NewAuthority(t, "netman test CA")
	cert, key := ca.Issue(t, mutualtlstest.ClientLeaf())
	return map[string]any{
		"ca_cert":     string(ca.CertPEM),
		"client_cert": string(cert),
		"client_key":  string(key),
	}
}

// The properties each job cannot render without.
func requiredProps(t testing.TB) map[string]map[string]any {
	return map[string]map[string]any{
		"policy-server": policyServerProps(t),
		"policy-agent":  policyAgentProps(t),
		"netman-cni":    {},
		"cni-flannel":   {},
	}
}

var propertyUse = regexp.MustCompile(`(?:^|[^.\w])(?:p|if_p)\(\s*"([^"]+)"`)

// TestJobSpecs checks what `bosh create-release` and the director rely on: a spec whose
// name is its directory, exactly the templates that exist, a monit file, packages that
// exist, every property described, and every property a template reads declared.
func TestJobSpecs(t *testing.T) {
	root := repoRoot(t)
	for _, job := range jobNames(t) {
		t.Run(job, func(t *testing.T) {
			spec := readJobSpec(t, job)
			if spec.Name != job {
				t.Errorf("spec name %q, directory %q", spec.Name, job)
			}
			if _, err := os.Stat(filepath.Join(root, "jobs", job, "monit")); err != nil {
				t.Errorf("no monit file: %v", err)
			}

			entries, err := os.ReadDir(filepath.Join(root, "jobs", job, "templates"))
			if err != nil {
				t.Fatal(err)
			}
			var onDisk, listed []string
			for _, e := range entries {
				onDisk = append(onDisk, e.Name())
			}
			for src := range spec.Templates {
				listed = append(listed, src)
			}
			sort.Strings(onDisk)
			sort.Strings(listed)
			if !reflect.DeepEqual(onDisk, listed) {
				t.Errorf("templates/ holds %v but the spec lists %v", onDisk, listed)
			}

			for _, pkg := range spec.Packages {
				if _, err := os.Stat(filepath.Join(root, "packages", pkg, "spec")); err != nil {
					t.Errorf("package %q is not in packages/: %v", pkg, err)
				}
			}
			for name, p := range spec.Properties {
				if p == nil || strings.TrimSpace(p.Description) == "" {
					t.Errorf("property %s has no description", name)
				}
			}
			for _, src := range listed {
				// os.ReadFile follows the netman-cni templates' links to cni-flannel.
				text, err := os.ReadFile(filepath.Join(root, "jobs", job, "templates", src))
				if err != nil {
					t.Fatalf("template %s: %v", src, err)
				}
				for _, m := range propertyUse.FindAllStringSubmatch(string(text), -1) {
					if _, ok := spec.Properties[m[1]]; !ok {
						t.Errorf("template %s reads property %s, which the spec does not declare", src, m[1])
					}
				}
			}
			for _, provided := range spec.Provides {
				var names []string
				_ = json.Unmarshal(provided["properties"], &names)
				for _, n := range names {
					if _, ok := spec.Properties[n]; !ok {
						t.Errorf("link provides undeclared property %s", n)
					}
				}
			}
		})
	}
}

// TestMissingPropertyIsNamed removes, one at a time, each property a job needs and has no
// default for, and expects the render to fail naming it, as a BOSH deploy would.
func TestMissingPropertyIsNamed(t *testing.T) {
	for job, full := range requiredProps(t) {
		spec := readJobSpec(t, job)
		for name, p := range spec.Properties {
			if p.Default != nil {
				continue
			}
			if _, set := full[name]; !set {
				continue // optional: read with if_p
			}
			t.Run(job+"/"+name, func(t *testing.T) {
				_, err := render(t, job, props(without(full, name)), nil)
				if err == nil {
					t.Fatalf("rendered without %s", name)
				}
				if !strings.Contains(err.Error(), name) {
					t.Errorf("error does not name %s: %v", name, err)
				}
			})
		}
	}
}

// TestInvalidPropertiesAreRefused: values the binaries would refuse fail at render time,
// before anything reaches a VM, with a message naming the property.
func TestInvalidPropertiesAreRefused(t *testing.T) {
	ps := policyServerProps(t)
	pa := policyAgentProps(t)
	cases := []struct {
		job   string
		props map[string]any
		want  string
	}{
		{"netman-cni", map[string]any{"delegate": "silk"}, "delegate"},
		{"netman-cni", map[string]any{"mtu": 500}, "mtu"},
		{"netman-cni", map[string]any{"encapsulation_overhead": -1}, "encapsulation_overhead"},
		{"netman-cni", map[string]any{"underlay_interface": "eth0", "underlay_ip": "10.0.0.5"}, "underlay_interface"},
		{"netman-cni", map[string]any{"datastore": "relative/store.json"}, "datastore"},
		{"cni-flannel", map[string]any{"delegate": "silk"}, "delegate"},
		{"netman-cni", map[string]any{"host_tcp_services": []string{"169.254.0.2"}}, "host_tcp_services"},
		{"netman-cni", map[string]any{"host_udp_services": []string{"127.0.0.1:53"}}, "host_udp_services"},
		{"cni-flannel", map[string]any{"host_tcp_services": []string{"169.254.0.2:70000"}}, "host_tcp_services"},
		{"policy-server", with(ps, map[string]any{"policy-server.ca_cert": "not a certificate"}), "policy-server.ca_cert"},
		{"policy-server", with(ps, map[string]any{"policy-server.server_key": ""}), "policy-server.server_key"},
		{"policy-server", with(ps, map[string]any{"database.host": ""}), "database.host"},
		{"policy-agent", with(pa, map[string]any{"poll_interval_seconds": 0}), "poll_interval_seconds"},
		{"policy-agent", with(pa, map[string]any{"client_key": "x"}), "client_key"},
		{"policy-server", with(ps, map[string]any{"policy-server.uaa_url": "http://uaa"}), "policy-server.uaa_url"},
		{"policy-server", with(with(ps, ccProps(t)), map[string]any{"policy-server.uaa_client_secret": ""}), "policy-server.uaa_client_secret"},
		{"policy-server", with(with(ps, externalAPIProps(t)), with(ccProps(t), map[string]any{"policy-server.cc_internal_url": ""})), "policy-server.asg_sync_enabled"},
		{"policy-server", with(with(ps, externalAPIProps(t)), with(ccProps(t), map[string]any{"policy-server.cc_internal.client_key": ""})), "policy-server.cc_internal.client_key"},
		{"policy-server", with(ps, map[string]any{"uaa_hostname": "", "uaa_ca": "pem"}), "uaa_ca"},
		{"policy-server", with(ps, map[string]any{"enable_tls": true}), "server_cert"},
		{"policy-server", with(ps, map[string]any{"enable_tls": true, "server_cert": "-----BEGIN CERTIFICATE-----"}), "server_key"},
	}
	for _, c := range cases {
		t.Run(c.job+"/"+c.want, func(t *testing.T) {
			_, err := render(t, c.job, props(c.props), nil)
			if err == nil {
				t.Fatalf("rendered with %v", c.props)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error does not name %s: %v", c.want, err)
			}
		})
	}
}

// TestWrapperConfTemplate renders the CNI jobs' wrapper configuration and loads it with
// the wrapper's own loader, the code that reads it on a cell.
func TestWrapperConfTemplate(t *testing.T) {
	cases := []struct {
		name  string
		job   string
		props map[string]any
		check func(t *testing.T, raw map[string]any, c *wrapper.Config)
	}{
		{"netman-cni defaults: bridge, MTU detected", "netman-cni", nil, func(t *testing.T, raw map[string]any, c *wrapper.Config) {
			if c.DelegateType() != "bridge" || c.MTU != 0 || c.EncapsulationOverhead != nil {
				t.Errorf("delegate %s, mtu %d, overhead %v", c.DelegateType(), c.MTU, c.EncapsulationOverhead)
			}
			ipam, _ := c.Delegate["ipam"].(map[string]any)
			if ipam["type"] != "host-local" || ipam["subnet"] != "10.255.0.0/16" {
				t.Errorf("bridge ipam %v", ipam)
			}
			if _, ok := raw["mtu"]; ok {
				t.Error("mtu written although 0 (detect) was asked for")
			}
			if c.PolicyAgentForcePollAddress != "127.0.0.1:8722" {
				t.Errorf("policy_agent_force_poll_address %q, want the policy-agent job's default 127.0.0.1:8722", c.PolicyAgentForcePollAddress)
			}
		}},
		{"cni-flannel defaults: the spec's flannel delegate", "cni-flannel", nil, func(t *testing.T, raw map[string]any, c *wrapper.Config) {
			want := map[string]any{
				"name": "cni-flannel", "type": "flannel",
				"subnetFile": "/var/vcap/data/flannel/subnet.env",
				"dataDir":    "/var/vcap/data/flannel/data",
				"delegate":   map[string]any{"bridge": "cni-flannel0", "isDefaultGateway": true, "ipMasq": false},
			}
			if !reflect.DeepEqual(raw["delegate"], want) {
				t.Errorf("delegate %v, want %v", raw["delegate"], want)
			}
		}},
		{"explicit MTU and IPsec overhead", "netman-cni", map[string]any{"mtu": 8950, "encapsulation_overhead": 73, "underlay_ip": "10.0.16.5"},
			func(t *testing.T, raw map[string]any, c *wrapper.Config) {
				if c.MTU != 8950 || c.EncapsulationOverhead == nil || *c.EncapsulationOverhead != 73 || c.UnderlayIP != "10.0.16.5" {
					t.Errorf("mtu %d overhead %v underlay_ip %q", c.MTU, c.EncapsulationOverhead, c.UnderlayIP)
				}
			}},
		{"agent nudge address", "netman-cni", map[string]any{"policy_agent_force_poll_address": "127.0.0.1:18722"},
			func(t *testing.T, raw map[string]any, c *wrapper.Config) {
				if c.PolicyAgentForcePollAddress != "127.0.0.1:18722" {
					t.Errorf("policy_agent_force_poll_address %q", c.PolicyAgentForcePollAddress)
				}
			}},
		{"host services closed by default, as silk's", "cni-flannel", nil, func(t *testing.T, raw map[string]any, c *wrapper.Config) {
			if len(c.HostTCPServices) != 0 || len(c.HostUDPServices) != 0 || len(c.DNSServers) != 0 {
				t.Errorf("host_tcp_services %v, host_udp_services %v, dns_servers %v; want none", c.HostTCPServices, c.HostUDPServices, c.DNSServers)
			}
		}},
		{"host services and link-local DNS", "cni-flannel", map[string]any{"host_tcp_services": []string{"169.254.0.2:9001"}, "host_udp_services": []string{"10.0.16.5:9003"}, "dns_servers": []string{"169.254.0.2"}},
			func(t *testing.T, raw map[string]any, c *wrapper.Config) {
				if !reflect.DeepEqual(c.HostTCPServices, []string{"169.254.0.2:9001"}) || !reflect.DeepEqual(c.HostUDPServices, []string{"10.0.16.5:9003"}) {
					t.Errorf("host_tcp_services %v, host_udp_services %v", c.HostTCPServices, c.HostUDPServices)
				}
			}},
		{"underlay interface and datastore owner", "netman-cni", map[string]any{"underlay_interface": "eth1", "datastore_file_group": "vcap", "datastore": "/var/vcap/data/x/store.json"},
			func(t *testing.T, raw map[string]any, c *wrapper.Config) {
				if c.UnderlayInterface != "eth1" || c.DatastoreFileGroup != "vcap" || c.Datastore != "/var/vcap/data/x/store.json" {
					t.Errorf("underlay_interface %q group %q datastore %q", c.UnderlayInterface, c.DatastoreFileGroup, c.Datastore)
				}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := mustRender(t, c.job, props(c.props), nil)
			path := filepath.Join(dir, "config", "cni", "30-cni-wrapper-plugin.conf")
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := wrapper.LoadConfig(data)
			if err != nil {
				t.Fatalf("wrapper.LoadConfig refuses the rendered file: %v\n%s", err, data)
			}
			raw := readJSON(t, path)
			if raw["type"] != "wrapper" || raw["name"] != "cni-wrapper" || cfg.CNIVersion != "0.3.1" ||
				cfg.Datastore == "" {
				t.Errorf("top-level fields: %s", data)
			}
			c.check(t, raw, cfg)
			checkScripts(t, dir)
		})
	}

	// The two CNI jobs share one template: the same properties give the same file.
	for _, delegate := range []string{"flannel", "bridge"} {
		p := props(map[string]any{"delegate": delegate})
		a, _ := os.ReadFile(filepath.Join(mustRender(t, "netman-cni", p, nil), "config", "cni", "30-cni-wrapper-plugin.conf"))
		b, _ := os.ReadFile(filepath.Join(mustRender(t, "cni-flannel", p, nil), "config", "cni", "30-cni-wrapper-plugin.conf"))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("delegate %s: netman-cni and cni-flannel differ:\n%s\n%s", delegate, a, b)
		}
	}
}

// TestPolicyAgentTemplate checks the agent's config, with and without the policy-server link.
func TestPolicyAgentTemplate(t *testing.T) {
	base := policyAgentProps(t)
	cni := func(kv map[string]any) map[string]any {
		p := map[string]any{"delegate": "bridge", "enforce_egress": true, "overlay_network": "", "bridge.subnet": "10.255.0.0/16",
			"flannel.subnet_file":  "/var/vcap/data/flannel/subnet.env",
			"deny_networks.always": []any{"169.254.0.0/16"}, "deny_networks.running": []any{}, "deny_networks.staging": []any{"10.0.0.0/8"},
			"iptables_logging": false, "iptables_denied_logs_per_sec": 1, "iptables_accepted_logs_per_sec": 100}
		maps.Copy(p, kv)
		return map[string]any{"netman-cni": map[string]any{"properties": props(p)}}
	}
	egress := func(overlay, subnetFile string) map[string]any {
		return map[string]any{"overlay_network": overlay, "flannel_subnet_file": subnetFile,
			"deny_networks":    map[string]any{"always": []any{"169.254.0.0/16"}, "running": []any{}, "staging": []any{"10.0.0.0/8"}},
			"iptables_logging": false, "iptables_denied_logs_per_sec": 1.0, "iptables_accepted_logs_per_sec": 100.0}
	}
	cases := []struct {
		name       string
		props      map[string]any
		links      map[string]any
		wantURL    string
		wantEgress map[string]any // nil: dynamic security groups off
	}{
		{"no link", base, nil, "https://policy-server.service.cf.internal:4003", nil},
		{"security groups with the bridge's subnet as overlay", base, cni(nil), "https://policy-server.service.cf.internal:4003",
			egress("10.255.0.0/16", "")},
		{"security groups with netman-cni's overlay_network", base, cni(map[string]any{"overlay_network": "10.240.0.0/12", "delegate": "flannel"}),
			"https://policy-server.service.cf.internal:4003", egress("10.240.0.0/12", "")},
		{"security groups with flannel's network", base, cni(map[string]any{"delegate": "flannel"}),
			"https://policy-server.service.cf.internal:4003", egress("", "/var/vcap/data/flannel/subnet.env")},
		{"security groups off", with(base, map[string]any{"enable_asg_syncing": false}), cni(nil), "https://policy-server.service.cf.internal:4003", nil},
		{"no egress chains to update", base, cni(map[string]any{"enforce_egress": false}), "https://policy-server.service.cf.internal:4003", nil},
		{"port from the link", base, map[string]any{"policy-server": map[string]any{
			"properties": props(map[string]any{"policy-server.internal_listen_port": 14003}),
		}}, "https://policy-server.service.cf.internal:14003", nil},
		{"explicit port wins", with(base, map[string]any{"policy_server_port": 24003, "policy_server_hostname": "ps.example"}),
			map[string]any{"policy-server": map[string]any{"properties": props(map[string]any{"policy-server.internal_listen_port": 14003})}},
			"https://ps.example:24003", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := mustRender(t, "policy-agent", props(c.props), c.links)
			cfg := readJSON(t, filepath.Join(dir, "config", "policy-agent.json"))
			want := map[string]any{
				"policy_server_url":            c.wantURL,
				"ca_cert_file":                 "/var/vcap/jobs/policy-agent/config/certs/ca.crt",
				"client_cert_file":             "/var/vcap/jobs/policy-agent/config/certs/client.crt",
				"client_key_file":              "/var/vcap/jobs/policy-agent/config/certs/client.key",
				"datastore":                    "/var/vcap/data/container-metadata/store.json",
				"poll_interval_seconds":        5.0,
				"iptables_lock_file":           "/var/vcap/data/garden-cni/iptables.lock",
				"health_check_port":            4005.0,
				"debug_server_port":            22223.0,
				"force_policy_poll_cycle_port": 8722.0,
				"request_timeout_seconds":      5.0,
				"log_level":                    "info",
				"overlay_interface":            "flannel.1",
				"vxlan_gbp":                    true,
				"enable_asg_syncing":           c.wantEgress != nil,
				"asg_poll_interval_seconds":    60.0,
			}
			if c.wantEgress != nil {
				want["egress"] = c.wantEgress
			}
			if !reflect.DeepEqual(cfg, want) {
				t.Errorf("policy-agent.json\n got %v\nwant %v", cfg, want)
			}
			for file, prop := range map[string]string{"ca.crt": "ca_cert", "client.crt": "client_cert", "client.key": "client_key"} {
				got, _ := os.ReadFile(filepath.Join(dir, "config", "certs", file))
				if strings.TrimSpace(string(got)) != strings.TrimSpace(c.props[prop].(string)) {
					t.Errorf("certs/%s does not hold property %s", file, prop)
				}
			}
			cfgPath := relocate(t, dir, "policy-agent", "policy-agent.json")
			if out, err := exec.Command(buildCmd(t, "policy-agent"), "-config-file", cfgPath, "-validate-config").CombinedOutput(); err != nil {
				t.Fatalf("policy-agent -validate-config refuses the rendered config: %v\n%s", err, out)
			}
			checkBPM(t, dir, "policy-agent")
			bpm, _ := os.ReadFile(filepath.Join(dir, "config", "bpm.yml"))
			flannel := c.wantEgress != nil && c.wantEgress["flannel_subnet_file"] != ""
			if got := strings.Contains(string(bpm), "path: /var/vcap/data/flannel\n"); got != flannel {
				t.Errorf("bpm.yml mounts flannel's subnet file directory: %v, want %v\n%s", got, flannel, bpm)
			}
			checkScripts(t, dir)
		})
	}
}

// TestPolicyServerTemplateValidates renders the policy-server job and hands the result to
// the real binary's -validate-config, with the certificates where the job puts them.
func TestPolicyServerTemplateValidates(t *testing.T) {
	bin := buildCmd(t, "policy-server")
	for _, c := range []struct {
		name    string
		set     map[string]any
		sslmode string
	}{
		{"plain", nil, "disable"},
		{"tls to the database", map[string]any{"database.require_ssl": true}, "require"},
		{"verified tls to the database", map[string]any{"database.require_ssl": true,
			"database.ca_cert": string(mutualtlstest.NewAuthority(t, "db CA").CertPEM)}, "verify-full"},
		{"verified tls to the database, any host name", map[string]any{"database.require_ssl": true, "database.skip_hostname_validation": true,
			"database.ca_cert": string(mutualtlstest.NewAuthority(t, "db CA").CertPEM)}, "verify-ca"},
		{"external API with UAA and HTTPS", externalAPIProps(t), "disable"},
		{"Cloud Controller integration", with(externalAPIProps(t), ccProps(t)), "disable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := with(policyServerProps(t), c.set)
			dir := mustRender(t, "policy-server", props(p), nil)
			cfgPath := relocate(t, dir, "policy-server", "policy-server.json")
			cfg := readJSON(t, cfgPath)
			db := cfg["database"].(map[string]any)
			u, err := url.Parse(db["connection_string"].(string))
			if err != nil {
				t.Fatalf("connection_string: %v", err)
			}
			pw, _ := u.User.Password()
			if u.User.Username() != "network_policy" || pw != p["database.password"] ||
				u.Host != "db.service.cf.internal:5432" || u.Path != "/network_policy" || u.Query().Get("sslmode") != c.sslmode {
				t.Errorf("connection_string does not carry the database properties: user %q host %q path %q query %q",
					u.User.Username(), u.Host, u.Path, u.RawQuery)
			}
			for prop, file := range map[string]string{"policy-server.ca_cert": "ca.crt", "policy-server.server_cert": "server.crt", "policy-server.server_key": "server.key"} {
				got, _ := os.ReadFile(filepath.Join(dir, "config", "certs", file))
				if strings.TrimSpace(string(got)) != strings.TrimSpace(p[prop].(string)) {
					t.Errorf("certs/%s does not hold %s", file, prop)
				}
			}
			for prop, field := range map[string]string{
				"uaa_ca": "uaa_ca_cert_file", "server_cert": "external_server_cert_file", "server_key": "external_server_key_file",
			} {
				file, _ := cfg[field].(string)
				if _, set := p[prop]; set != (file != "") {
					t.Errorf("property %s set: %v, but config field %s is %q", prop, set, field, file)
				}
				if file != "" {
					got, _ := os.ReadFile(file)
					if strings.TrimSpace(string(got)) != strings.TrimSpace(p[prop].(string)) {
						t.Errorf("%s does not hold %s", field, prop)
					}
				}
			}
			// cf-networking's uaa_hostname and uaa_port give the URL netman fetches token keys from.
			if cfg["uaa_url"] != "https://uaa.service.cf.internal:8443" {
				t.Errorf("uaa_url %v, want the one uaa_hostname and uaa_port default to", cfg["uaa_url"])
			}
			out, err := exec.Command(bin, "-config-file", cfgPath, "-validate-config").CombinedOutput()
			if err != nil {
				t.Fatalf("policy-server -validate-config refuses the rendered config: %v\n%s", err, out)
			}
			checkBPM(t, dir, "policy-server")
			checkScripts(t, dir)
		})
	}
}

// TestPolicyServerJobRuns goes one step further on a real Postgres: the rendered config
// migrates the database (what pre-start runs), starts the server, and the rendered
// post-start script sees it healthy.
func TestPolicyServerJobRuns(t *testing.T) {
	testenv.RequireCommand(t, "curl")
	bin := buildCmd(t, "policy-server")
	dsn, err := url.Parse(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(dsn.Host)
	pw, _ := dsn.User.Password()
	ports := freeport.Take(t, 4)
	p := with(policyServerProps(t), map[string]any{
		"policy-server.listen_ip":                    "127.0.0.1",
		"policy-server.listen_port":                  ports[0],
		"policy-server.internal_listen_port":         ports[1],
		"policy-server.health_check_port":            ports[2],
		"policy-server.debug_server_port":            ports[3],
		"policy-server.health_check_timeout_seconds": 30,
		"database.host":                              host,
		"database.port":                              port,
		"database.name":                              strings.TrimPrefix(dsn.Path, "/"),
		"database.username":                          dsn.User.Username(),
		"database.password":                          pw,
		"max_open_connections":                       4,
		"max_idle_connections":                       2,
		"database.connect_timeout_seconds":           5,
	})
	dir := mustRender(t, "policy-server", props(p), nil)
	cfgPath := relocate(t, dir, "policy-server", "policy-server.json")

	if out, err := exec.Command(bin, "-config-file", cfgPath, "-migrate-only").CombinedOutput(); err != nil {
		t.Fatalf("-migrate-only with the rendered config: %v\n%s", err, out)
	}

	server := exec.Command(bin, "-config-file", cfgPath)
	var logs bytes.Buffer
	server.Stdout, server.Stderr = &logs, &logs
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- server.Wait() }()
	t.Cleanup(func() {
		_ = server.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = server.Process.Kill()
		}
	})

	postStart := exec.Command("bash", filepath.Join(dir, "bin", "post-start"))
	if out, err := postStart.CombinedOutput(); err != nil {
		t.Fatalf("post-start: %v\n%s\nserver log:\n%s", err, out, logs.String())
	}

	_ = server.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("policy-server did not exit 0 on SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Errorf("policy-server still running 15s after SIGTERM")
	}
}

// relocate stands in for /var/vcap/jobs/<job>: the rendered config names files under
// that directory, and the test's copy lives in dir.
func relocate(t testing.TB, dir, job, config string) string {
	t.Helper()
	path := filepath.Join(dir, "config", config)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data = bytes.ReplaceAll(data, []byte("/var/vcap/jobs/"+job+"/"), []byte(dir+"/"))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// What pre-start does to the secrets.
	certs, _ := filepath.Glob(filepath.Join(dir, "config", "certs", "*"))
	for _, f := range certs {
		if err := os.Chmod(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// checkBPM parses config/bpm.yml and checks that it runs the job's binary with its config.
func checkBPM(t testing.TB, dir, job string) {
	t.Helper()
	var bpm struct {
		Processes []struct {
			Name       string   `json:"name"`
			Executable string   `json:"executable"`
			Args       []string `json:"args"`
		} `json:"processes"`
	}
	yamlFile(t, filepath.Join(dir, "config", "bpm.yml"), &bpm)
	if len(bpm.Processes) != 1 {
		t.Fatalf("bpm.yml: %d processes", len(bpm.Processes))
	}
	p := bpm.Processes[0]
	wantArgs := []string{"-config-file", "/var/vcap/jobs/" + job + "/config/" + job + ".json"}
	if p.Name != job || p.Executable != "/var/vcap/packages/"+job+"/bin/"+job || !reflect.DeepEqual(p.Args, wantArgs) {
		t.Errorf("bpm.yml process %+v", p)
	}
	monit, err := os.ReadFile(filepath.Join(repoRoot(t), "jobs", job, "monit"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(monit), "/var/vcap/sys/run/bpm/"+job+"/"+p.Name+".pid") ||
		!strings.Contains(string(monit), "bpm start "+job) {
		t.Errorf("monit does not watch the bpm process %s:\n%s", p.Name, monit)
	}
}

// checkScripts runs bash -n over every rendered script.
func checkScripts(t testing.TB, dir string) {
	t.Helper()
	scripts, _ := filepath.Glob(filepath.Join(dir, "bin", "*"))
	for _, s := range scripts {
		if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("%s is not valid bash: %v\n%s", filepath.Base(s), err, out)
		}
	}
}

var (
	buildMu    sync.Mutex
	buildCache = map[string]string{}
)

// buildCmd builds ./cmd/<name> once per test run.
func buildCmd(t testing.TB, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := buildCache[name]; ok {
		return bin
	}
	bin := filepath.Join(binDir, name)
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/"+name)
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/%s: %v\n%s", name, err, out)
	}
	buildCache[name] = bin
	return bin
}

// TestPolicyServerTakesCFNetworkingProperties renders the job with the properties
// cf-deployment gives cf-networking's policy-server job (after use-postgres.yml) plus the
// internal API's certificates netman's ops file sets, and hands the result to the binary.
func TestPolicyServerTakesCFNetworkingProperties(t *testing.T) {
	internal := policyServerProps(t)
	external := externalAPIProps(t)
	p := map[string]any{
		"uaa_client_secret":                   "secret",
		"uaa_ca":                              external["uaa_ca"],
		"enable_tls":                          true,
		"server_cert":                         external["server_cert"],
		"server_key":                          external["server_key"],
		"database.type":                       "postgres",
		"database.host":                       "sql-db.service.cf.internal",
		"database.port":                       5524,
		"database.name":                       "network_policy",
		"database.username":                   "network_policy",
		"database.password":                   "pw",
		"policy-server.ca_cert":               internal["policy-server.ca_cert"],
		"policy-server.server_cert":           internal["policy-server.server_cert"],
		"policy-server.server_key":            internal["policy-server.server_key"],
		"enable_space_developer_self_service": true, // cf-networking's; not declared, so BOSH hides it
	}
	dir := mustRender(t, "policy-server", props(p), nil)
	cfgPath := relocate(t, dir, "policy-server", "policy-server.json")
	cfg := readJSON(t, cfgPath)
	u, _ := url.Parse(cfg["database"].(map[string]any)["connection_string"].(string))
	if u == nil || u.Host != "sql-db.service.cf.internal:5524" || u.Path != "/network_policy" {
		t.Errorf("connection string %v", cfg["database"])
	}
	if cfg["uaa_url"] != "https://uaa.service.cf.internal:8443" || cfg["external_server_cert_file"] == nil {
		t.Errorf("UAA URL %v, external TLS %v: the external API is not served over TLS", cfg["uaa_url"], cfg["external_server_cert_file"])
	}
	if out, err := exec.Command(buildCmd(t, "policy-server"), "-config-file", cfgPath, "-validate-config").CombinedOutput(); err != nil {
		t.Fatalf("policy-server -validate-config: %v\n%s", err, out)
	}

	// Without database.host the database link's provider is the host (use-postgres.yml's
	// postgres job provides one).
	linked := mustRender(t, "policy-server", props(without(p, "database.host")),
		map[string]any{"database": map[string]any{"address": "q-s0.database.default.cf.bosh"}})
	cfg = readJSON(t, filepath.Join(linked, "config", "policy-server.json"))
	if u, _ := url.Parse(cfg["database"].(map[string]any)["connection_string"].(string)); u == nil || u.Hostname() != "q-s0.database.default.cf.bosh" {
		t.Errorf("connection string with the database link: %v", cfg["database"])
	}
	if _, err := render(t, "policy-server", props(without(p, "database.host")), nil); err == nil || !strings.Contains(err.Error(), "database.host") {
		t.Errorf("no host and no link: %v, want an error naming database.host", err)
	}
}

// TestPolicyServerPreStartRefusesMySQL: cf-deployment's default database is MySQL. The job
// renders, and pre-start stops within seconds naming Postgres and the ops file to apply,
// instead of retrying migrations for minutes.
func TestPolicyServerPreStartRefusesMySQL(t *testing.T) {
	dir := mustRender(t, "policy-server", props(with(policyServerProps(t), map[string]any{
		"database.type": "mysql", "database.port": 3306,
	})), nil)
	start := time.Now()
	out, err := exec.Command("bash", filepath.Join(dir, "bin", "pre-start")).CombinedOutput()
	if err == nil {
		t.Fatalf("pre-start succeeded with database.type mysql:\n%s", out)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("pre-start took %v to refuse MySQL", took)
	}
	for _, want := range []string{"needs Postgres", `database.type is "mysql"`, "operations/use-postgres.yml"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("pre-start output does not say %q:\n%s", want, out)
		}
	}
}

// TestPromScraperConfigs: cf-deployment's prom_scraper scrapes the targets that jobs list in
// config/prom_scraper_config.yml, on 127.0.0.1; both netman programs serve /metrics there.
func TestPromScraperConfigs(t *testing.T) {
	for job, c := range map[string]struct {
		props map[string]any
		port  string
	}{
		"policy-server": {with(policyServerProps(t), map[string]any{"policy-server.debug_server_port": 22999}), "policy-server.debug_server_port"},
		"policy-agent":  {with(policyAgentProps(t), map[string]any{"debug_server_port": 22998}), "debug_server_port"},
	} {
		t.Run(job, func(t *testing.T) {
			dir := mustRender(t, job, props(c.props), nil)
			var target struct {
				Port     int    `json:"port"`
				SourceID string `json:"source_id"`
				Instance string `json:"instance_id"`
				Scheme   string `json:"scheme"`
				Path     string `json:"path"`
			}
			yamlFile(t, filepath.Join(dir, "config", "prom_scraper_config.yml"), &target)
			if target.Port != c.props[c.port] || target.SourceID != job || target.Scheme != "http" ||
				target.Path != "/metrics" || target.Instance != "test-id" {
				t.Errorf("prom_scraper target %+v, want port %v (%s), source_id %s, http, /metrics", target, c.props[c.port], c.port, job)
			}
		})
	}
}
