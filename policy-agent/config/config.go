// Package config reads and checks the policy agent's JSON configuration file.
//
// Unknown fields are refused, naming the field, so a typo in the BOSH template fails the
// deploy instead of silently running with a default. Parse checks the file's content only;
// CheckFiles also loads the certificates it names.
package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"netman/lib/containerrules"
	"netman/lib/jsonconfig"
	"netman/lib/mutualtls"
	"netman/lib/rules"
	"netman/lib/xtables"
)

// Config is the whole file.
type Config struct {
	PolicyServerURL     string `json:"policy_server_url"`
	CACertFile          string `json:"ca_cert_file"`
	ClientCertFile      string `json:"client_cert_file"`
	ClientKeyFile       string `json:"client_key_file"`
	Datastore           string `json:"datastore"`
	PollIntervalSeconds int    `json:"poll_interval_seconds"`
	IPTablesLockFile    string `json:"iptables_lock_file"`
	HealthCheckPort     int    `json:"health_check_port"`
	DebugServerPort     int    `json:"debug_server_port"`
	// ForcePolicyPollCyclePort is where, on 127.0.0.1, GET /force-policy-poll-cycle runs
	// a cycle at once (the name and default of silk's vxlan-policy-agent).
	ForcePolicyPollCyclePort int    `json:"force_policy_poll_cycle_port"`
	RequestTimeoutSeconds    int    `json:"request_timeout_seconds"`
	LogLevel                 string `json:"log_level"`
	// OverlayInterface is the cell's VXLAN device (flanneld's "flannel.<VNI>"); traffic it
	// brings from other cells is judged like local traffic. Empty: no overlay.
	OverlayInterface string `json:"overlay_interface"`
	// VXLANGBP says the overlay carries marks in VXLAN GBP ("GBP": true in flannel's
	// backend config), which limits tags to 16 bits.
	VXLANGBP bool `json:"vxlan_gbp"`

	// EnableASGSyncing applies the security groups the policy server serves to the
	// containers' egress chains every ASGPollIntervalSeconds (silk's names), replacing the
	// rules the wrapper got at ADD. Egress holds the wrapper's settings those chains are
	// built with; the BOSH job copies them from the netman-cni job's link. Unlike the
	// job's (true, when the link is there), the file's default is off: without the
	// egress settings there is nothing to build the chains with.
	EnableASGSyncing       bool   `json:"enable_asg_syncing"`
	ASGPollIntervalSeconds int    `json:"asg_poll_interval_seconds"`
	Egress                 Egress `json:"egress"`
}

// Egress are the netman-cni settings (the same names) that every container's egress
// chain is built with besides its security groups.
type Egress struct {
	OverlayNetwork string `json:"overlay_network"`
	// FlannelSubnetFile is where FLANNEL_NETWORK is read when overlay_network is empty
	// (netman-cni with delegate flannel).
	FlannelSubnetFile          string       `json:"flannel_subnet_file"`
	DenyNetworks               DenyNetworks `json:"deny_networks"`
	IPTablesLogging            bool         `json:"iptables_logging"`
	IPTablesDeniedLogsPerSec   int          `json:"iptables_denied_logs_per_sec"`
	IPTablesAcceptedLogsPerSec int          `json:"iptables_accepted_logs_per_sec"`
}

// DenyNetworks lists CIDRs no security group can open, by container_workload.
type DenyNetworks struct {
	Always  []string `json:"always"`
	Running []string `json:"running"`
	Staging []string `json:"staging"`
}

// Default is what a file leaves out becomes (the BOSH job's defaults).
func Default() Config {
	return Config{
		PollIntervalSeconds:      5,
		IPTablesLockFile:         xtables.DefaultLockFile,
		HealthCheckPort:          4005,
		DebugServerPort:          22223,
		ForcePolicyPollCyclePort: 8722,
		RequestTimeoutSeconds:    5,
		LogLevel:                 "info",
		OverlayInterface:         "flannel.1",
		VXLANGBP:                 true,
		ASGPollIntervalSeconds:   60,
	}
}

// Load reads, parses and validates the file at path.
func Load(path string) (*Config, error) {
	return jsonconfig.Load(path, Default(), (*Config).Validate)
}

// Parse decodes data over the defaults and validates the result.
func Parse(data []byte) (*Config, error) {
	return jsonconfig.Parse(data, Default(), (*Config).Validate)
}

// Validate checks every field, naming the first one that is wrong.
func (c *Config) Validate() error {
	u, err := url.Parse(c.PolicyServerURL)
	switch {
	case c.PolicyServerURL == "":
		return errors.New(`field "policy_server_url": required`)
	case err != nil || u.Scheme != "https" || u.Host == "":
		return fmt.Errorf(`field "policy_server_url": %q is not https://host:port`, c.PolicyServerURL)
	}
	for _, f := range []struct{ name, value string }{
		{"ca_cert_file", c.CACertFile},
		{"client_cert_file", c.ClientCertFile},
		{"client_key_file", c.ClientKeyFile},
		{"datastore", c.Datastore},
		{"iptables_lock_file", c.IPTablesLockFile},
	} {
		if strings.TrimSpace(f.value) == "" {
			return fmt.Errorf("field %q: required", f.name)
		}
	}
	if c.PollIntervalSeconds < 1 || c.PollIntervalSeconds > 3600 {
		return fmt.Errorf(`field "poll_interval_seconds": %d is not within 1-3600`, c.PollIntervalSeconds)
	}
	if c.RequestTimeoutSeconds < 1 || c.RequestTimeoutSeconds > 300 {
		return fmt.Errorf(`field "request_timeout_seconds": %d is not within 1-300`, c.RequestTimeoutSeconds)
	}
	for _, p := range []struct {
		name string
		port int
	}{{"health_check_port", c.HealthCheckPort}, {"debug_server_port", c.DebugServerPort}, {"force_policy_poll_cycle_port", c.ForcePolicyPollCyclePort}} {
		if p.port < 1 || p.port > 65535 {
			return fmt.Errorf("field %q: %d is not a port (1-65535)", p.name, p.port)
		}
	}
	if c.HealthCheckPort == c.DebugServerPort {
		return fmt.Errorf(`field "debug_server_port": %d is also the health_check_port`, c.DebugServerPort)
	}
	if c.ForcePolicyPollCyclePort == c.HealthCheckPort || c.ForcePolicyPollCyclePort == c.DebugServerPort {
		return fmt.Errorf(`field "force_policy_poll_cycle_port": %d is also the health_check_port or debug_server_port`, c.ForcePolicyPollCyclePort)
	}
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		return err
	}
	if c.OverlayInterface != "" && !validInterfaceName(c.OverlayInterface) {
		return fmt.Errorf(`field "overlay_interface": %q is not a network interface name (1-15 characters, no "/", ":" or space)`, c.OverlayInterface)
	}
	if c.VXLANGBP && c.OverlayInterface == "" {
		return errors.New(`field "vxlan_gbp": true needs an "overlay_interface" to carry the marks`)
	}
	if c.ASGPollIntervalSeconds < 1 || c.ASGPollIntervalSeconds > 3600 {
		return fmt.Errorf(`field "asg_poll_interval_seconds": %d is not within 1-3600`, c.ASGPollIntervalSeconds)
	}
	if c.EnableASGSyncing {
		if strings.TrimSpace(c.Egress.OverlayNetwork) == "" && strings.TrimSpace(c.Egress.FlannelSubnetFile) == "" {
			return errors.New(`field "egress.overlay_network": required with enable_asg_syncing unless egress.flannel_subnet_file is set (the wrapper's overlay)`)
		}
		if _, _, err := c.EgressSettings(); err != nil {
			return err
		}
	}
	return nil
}

// validInterfaceName is the kernel's rule for device names (dev_valid_name).
func validInterfaceName(s string) bool {
	if len(s) > 15 || s == "." || s == ".." {
		return false
	}
	return !strings.ContainsAny(s, "/: \t\n")
}

// Overlay is the overlay as the rules package takes it.
func (c *Config) Overlay() rules.Overlay {
	return rules.Overlay{Interface: c.OverlayInterface, GBP: c.VXLANGBP}
}

// EgressSettings parses egress: the overlay and what every container's egress chain has
// besides its rules and workload.
func (c *Config) EgressSettings() ([]netip.Prefix, containerrules.Egress, error) {
	e := containerrules.Egress{
		Logging:            c.Egress.IPTablesLogging,
		DeniedLogsPerSec:   c.Egress.IPTablesDeniedLogsPerSec,
		AcceptedLogsPerSec: c.Egress.IPTablesAcceptedLogsPerSec,
	}
	var overlay []netip.Prefix
	var err error
	if strings.TrimSpace(c.Egress.OverlayNetwork) != "" {
		if overlay, err = prefixes("egress.overlay_network", []string{c.Egress.OverlayNetwork}); err != nil {
			return nil, e, err
		}
	}
	for _, f := range []struct {
		name string
		in   []string
		out  *[]netip.Prefix
	}{
		{"egress.deny_networks.always", c.Egress.DenyNetworks.Always, &e.Deny.Always},
		{"egress.deny_networks.running", c.Egress.DenyNetworks.Running, &e.Deny.Running},
		{"egress.deny_networks.staging", c.Egress.DenyNetworks.Staging, &e.Deny.Staging},
	} {
		if *f.out, err = prefixes(f.name, f.in); err != nil {
			return nil, e, err
		}
	}
	if e.DeniedLogsPerSec < 0 || e.AcceptedLogsPerSec < 0 {
		return nil, e, errors.New(`fields "egress.iptables_denied_logs_per_sec", "egress.iptables_accepted_logs_per_sec": must not be negative`)
	}
	return overlay, e, nil
}

func prefixes(field string, in []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(in))
	for _, s := range in {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil || !p.Addr().Is4() {
			return nil, fmt.Errorf("field %q: %q is not an IPv4 CIDR", field, s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// ASGPollInterval is asg_poll_interval_seconds as a duration.
func (c *Config) ASGPollInterval() time.Duration {
	return time.Duration(c.ASGPollIntervalSeconds) * time.Second
}

// PollInterval is poll_interval_seconds as a duration.
func (c *Config) PollInterval() time.Duration {
	return time.Duration(c.PollIntervalSeconds) * time.Second
}

// RequestTimeout is request_timeout_seconds as a duration.
func (c *Config) RequestTimeout() time.Duration {
	return time.Duration(c.RequestTimeoutSeconds) * time.Second
}

// CheckFiles loads the certificates the configuration names and returns the client's
// mutual TLS configuration.
func (c *Config) CheckFiles() (*tls.Config, error) {
	cfg, err := mutualtls.ClientConfig(c.ClientCertFile, c.ClientKeyFile, c.CACertFile)
	if err != nil {
		return nil, fmt.Errorf("fields \"client_cert_file\", \"client_key_file\", \"ca_cert_file\": %w", err)
	}
	return cfg, nil
}

// ParseLogLevel reads log_level: debug, info, warn or error.
func ParseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil || strings.ContainsAny(s, "+-") {
		return 0, fmt.Errorf(`field "log_level": %q is not debug, info, warn or error`, s)
	}
	return l, nil
}
