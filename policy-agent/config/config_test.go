package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"netman/lib/mutualtls/mutualtlstest"
	"netman/policy-agent/config"
)

// rendered is what the BOSH template writes with its defaults.
const rendered = `{
  "policy_server_url": "https://policy-server.service.cf.internal:4003",
  "ca_cert_file": "/var/vcap/jobs/policy-agent/config/certs/ca.crt",
  "client_cert_file": "/var/vcap/jobs/policy-agent/config/certs/client.crt",
  "client_key_file": "/var/vcap/jobs/policy-agent/config/certs/client.key",
  "datastore": "/var/vcap/data/container-metadata/store.json",
  "poll_interval_seconds": 5,
  "iptables_lock_file": "/var/vcap/data/garden-cni/iptables.lock",
  "health_check_port": 4005,
  "debug_server_port": 22223
}`

func TestParseRenderedTemplate(t *testing.T) {
	c, err := config.Parse([]byte(rendered))
	if err != nil {
		t.Fatal(err)
	}
	if c.PollInterval().Seconds() != 5 || c.RequestTimeoutSeconds != 5 || c.LogLevel != "info" {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestOverlayDefaultsToFlannelWithGBP(t *testing.T) {
	c, err := config.Parse([]byte(rendered))
	if err != nil {
		t.Fatal(err)
	}
	// The release's default delegate is flannel with GBP: a cell that leaves the overlay
	// out of its file is still closed to other cells.
	if o := c.Overlay(); o.Interface != "flannel.1" || !o.GBP {
		t.Errorf("Overlay() = %+v, want flannel.1 with GBP", o)
	}
	c, err = config.Parse([]byte(strings.Replace(rendered, `"debug_server_port": 22223`,
		`"debug_server_port": 22223, "overlay_interface": "", "vxlan_gbp": false`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if o := c.Overlay(); o.Interface != "" || o.GBP {
		t.Errorf("Overlay() = %+v, want none", o)
	}
}

func TestParseMinimal(t *testing.T) {
	c, err := config.Parse([]byte(`{"policy_server_url":"https://127.0.0.1:4003","ca_cert_file":"ca","client_cert_file":"c","client_key_file":"k","datastore":"d"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.PollIntervalSeconds != 5 || c.IPTablesLockFile == "" || c.HealthCheckPort == 0 || c.DebugServerPort == 0 {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestParseRefusesNamingTheField(t *testing.T) {
	replace := func(old, new string) string { return strings.Replace(rendered, old, new, 1) }
	tests := []struct {
		name, input, field string
	}{
		{"unknown field", replace(`"datastore"`, `"datastor": "x", "datastore"`), "datastor"},
		{"wrong type", replace(`"poll_interval_seconds": 5`, `"poll_interval_seconds": "5"`), "poll_interval_seconds"},
		{"zero interval", replace(`"poll_interval_seconds": 5`, `"poll_interval_seconds": 0`), "poll_interval_seconds"},
		{"plain http", replace(`https://policy`, `http://policy`), "policy_server_url"},
		{"missing url", replace(`"policy_server_url": "https://policy-server.service.cf.internal:4003",`, ``), "policy_server_url"},
		{"missing datastore", replace(`"/var/vcap/data/container-metadata/store.json"`, `""`), "datastore"},
		{"missing key", replace(`"/var/vcap/jobs/policy-agent/config/certs/client.key"`, `" "`), "client_key_file"},
		{"empty lock file", replace(`"/var/vcap/data/garden-cni/iptables.lock"`, `""`), "iptables_lock_file"},
		{"bad port", replace(`4005`, `70000`), "health_check_port"},
		{"same ports", replace(`22223`, `4005`), "debug_server_port"},
		{"force poll port taken", replace(`"debug_server_port": 22223`, `"debug_server_port": 22223, "force_policy_poll_cycle_port": 4005`), "force_policy_poll_cycle_port"},
		{"force poll port out of range", replace(`"debug_server_port": 22223`, `"debug_server_port": 22223, "force_policy_poll_cycle_port": 0`), "force_policy_poll_cycle_port"},
		{"log level", replace(`"debug_server_port": 22223`, `"debug_server_port": 22223, "log_level": "chatty"`), "log_level"},
		{"timeout", replace(`"debug_server_port": 22223`, `"debug_server_port": 22223, "request_timeout_seconds": 0`), "request_timeout_seconds"},
		{"overlay name", replace(`"debug_server_port": 22223`, `"debug_server_port": 22223, "overlay_interface": "flannel/1"`), "overlay_interface"},
		{"overlay name too long", replace(`"debug_server_port": 22223`, `"debug_server_port": 22223, "overlay_interface": "flannel.1234567890"`), "overlay_interface"},
		{"gbp without an overlay", replace(`"debug_server_port": 22223`, `"debug_server_port": 22223, "overlay_interface": ""`), "vxlan_gbp"},
		{"asg interval", replace(`"debug_server_port": 22223`, `"debug_server_port": 22223, "asg_poll_interval_seconds": 0`), "asg_poll_interval_seconds"},
		{"asg without overlay", replace(`"debug_server_port": 22223`, `"debug_server_port": 22223, "enable_asg_syncing": true`), "egress.overlay_network"},
		{"asg bad overlay", replace(`"debug_server_port": 22223`, `"debug_server_port": 22223, "enable_asg_syncing": true, "egress": {"overlay_network": "10.255.0.0"}`), "egress.overlay_network"},
		{"asg bad deny network", replace(`"debug_server_port": 22223`, `"debug_server_port": 22223, "enable_asg_syncing": true, "egress": {"overlay_network": "10.255.0.0/16", "deny_networks": {"staging": ["x"]}}`), "egress.deny_networks.staging"},
		{"asg unknown egress field", replace(`"debug_server_port": 22223`, `"debug_server_port": 22223, "egress": {"ovrlay": "10.255.0.0/16"}`), "ovrlay"},
		{"not json", `{`, "parsing JSON"},
		{"trailing data", rendered + `{}`, "data after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tt.input))
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("Parse = %v, want an error naming %q", err, tt.field)
			}
		})
	}
}

func TestParseASGSettings(t *testing.T) {
	c, err := config.Parse([]byte(strings.Replace(rendered, `"debug_server_port": 22223`, `"debug_server_port": 22223,
  "enable_asg_syncing": true,
  "egress": {"overlay_network": "10.255.0.0/16", "deny_networks": {"always": ["169.254.0.0/16"], "running": ["10.0.0.0/8"]},
    "iptables_logging": true, "iptables_denied_logs_per_sec": 2}`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if c.ASGPollInterval().Seconds() != 60 {
		t.Errorf("asg_poll_interval_seconds default = %v, want silk's 60", c.ASGPollInterval())
	}
	overlay, e, err := c.EgressSettings()
	if err != nil {
		t.Fatal(err)
	}
	if len(overlay) != 1 || overlay[0].String() != "10.255.0.0/16" || len(e.Deny.Always) != 1 || len(e.Deny.Running) != 1 ||
		len(e.Deny.Staging) != 0 || !e.Logging || e.DeniedLogsPerSec != 2 {
		t.Errorf("EgressSettings = %v, %+v", overlay, e)
	}
}

func TestLoadAndCheckFiles(t *testing.T) {
	dir := t.TempDir()
	f, _ := mutualtlstest.WriteFiles(t, dir)
	body := strings.NewReplacer(
		"/var/vcap/jobs/policy-agent/config/certs/ca.crt", f.CACert,
		"/var/vcap/jobs/policy-agent/config/certs/client.crt", f.ClientCert,
		"/var/vcap/jobs/policy-agent/config/certs/client.key", f.ClientKey,
	).Replace(rendered)
	path := filepath.Join(dir, "agent.json")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CheckFiles(); err != nil {
		t.Errorf("CheckFiles: %v", err)
	}
	c.ClientKeyFile = filepath.Join(dir, "missing.key")
	if _, err := c.CheckFiles(); err == nil || !strings.Contains(err.Error(), "client_key_file") {
		t.Errorf("CheckFiles with a missing key = %v", err)
	}
	if _, err := config.Load(filepath.Join(dir, "nope.json")); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}
