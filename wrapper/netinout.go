package wrapper

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"netman/lib/containerrules"
	"netman/lib/xtables"
)

// ErrNetRules: the container's port mapping or egress rules could not be installed or
// removed (iptables refused them, or the iptables lock could not be had).
const ErrNetRules uint = 110

// CellRules are the settings of the per-container iptables rules (lib/containerrules):
// port mappings (netin), the egress firewall (netout) and what containers may reach on
// the cell itself. The names are silk's where
// silk has the setting.
type CellRules struct {
	// InstanceAddress is the cell's address; port mappings forward its host ports.
	InstanceAddress string `json:"instance_address,omitempty"`
	// EnforceEgress installs each container's egress chain from runtimeConfig.netOutRules
	// and masquerades what leaves the overlay.
	EnforceEgress bool `json:"enforce_egress,omitempty"`
	// IPTablesLockFile is the flock the cell's iptables writers share (garden's).
	IPTablesLockFile string `json:"iptables_lock_file,omitempty"`
	// OverlayNetwork is the range of every cell's container addresses; traffic within it
	// is container to container and left to the policy agent. Unset: flannel's
	// FLANNEL_NETWORK (from the delegate's subnet file) with a flannel delegate. The
	// container's own subnet always counts as overlay.
	OverlayNetwork string `json:"overlay_network,omitempty"`
	// NoMasqueradeCIDRRange is not masqueraded; by default the overlay.
	NoMasqueradeCIDRRange string            `json:"no_masquerade_cidr_range,omitempty"`
	DenyNetworks          *DenyNetworksConf `json:"deny_networks,omitempty"`
	IPTablesLogging       bool              `json:"iptables_logging,omitempty"`
	// Rates of the LOG rules (per second): refused packets, new allowed connections.
	IPTablesDeniedLogsPerSec   int `json:"iptables_denied_logs_per_sec,omitempty"`
	IPTablesAcceptedLogsPerSec int `json:"iptables_accepted_logs_per_sec,omitempty"`
	// DNSServers go into the result's DNS nameservers; those that are link-local (the
	// cell's bosh-dns, 169.254.0.0/16) are also reachable on port 53, tcp and udp.
	DNSServers []string `json:"dns_servers,omitempty"`
	// HostTCPServices and HostUDPServices ("address:port", silk's names) are the services
	// on the cell itself containers may reach. Replies to the cell's own connections pass;
	// everything else a container sends to the cell is refused.
	HostTCPServices []string `json:"host_tcp_services,omitempty"`
	HostUDPServices []string `json:"host_udp_services,omitempty"`
}

// DenyNetworksConf lists CIDRs no security group can open, by container_workload.
type DenyNetworksConf struct {
	Always  []string `json:"always,omitempty"`
	Running []string `json:"running,omitempty"`
	Staging []string `json:"staging,omitempty"`
}

// rulesActive says whether the wrapper manages iptables rules for containers at all.
func (r *CellRules) rulesActive() bool { return r.InstanceAddress != "" || r.EnforceEgress }

func (r *CellRules) lockFile() string {
	if r.IPTablesLockFile != "" {
		return r.IPTablesLockFile
	}
	return xtables.DefaultLockFile
}

// portMapping accepts both garden-external-networker's form (host_port,
// container_port) and the CNI convention (hostPort, containerPort, protocol).
type portMapping struct {
	HostPortSnake      *int   `json:"host_port"`
	ContainerPortSnake *int   `json:"container_port"`
	HostPort           *int   `json:"hostPort"`
	ContainerPort      *int   `json:"containerPort"`
	Protocol           string `json:"protocol"`
}

func pick(name string, a, b *int) (int, error) {
	switch {
	case a != nil && b != nil && *a != *b:
		return 0, fmt.Errorf("%s given twice with different values", name)
	case a != nil:
		return *a, nil
	case b != nil:
		return *b, nil
	}
	return 0, fmt.Errorf("no %s", name)
}

// runtimeValue decodes runtimeConfig[key] into v; a missing key leaves v alone.
func (c *Config) runtimeValue(key string, v any) error {
	raw, ok := c.RuntimeConfig[key]
	if !ok || raw == nil {
		return nil
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("runtimeConfig.%s: %w", key, err)
	}
	return nil
}

func parsePrefixes(what string, in []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(in))
	for _, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return nil, fmt.Errorf("%s: %q is not an IPv4 CIDR", what, s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// ruleSpec gathers everything the container's rules depend on; any bad value is an
// invalid network config (code 7), so nothing is installed on guesswork.
func (c *Config) ruleSpec(handle string, res *current.Result, ip net.IP) (containerrules.Spec, []string, error) {
	r := &c.CellRules
	spec := containerrules.Spec{Handle: handle}
	var warnings []string
	addr, ok := netip.AddrFromSlice(ip.To4())
	if !ok {
		return spec, nil, fmt.Errorf("container address %s is not IPv4", ip)
	}
	spec.IP = addr
	for _, ipc := range res.IPs {
		if ipc.Address.IP.Equal(ip) {
			ones, _ := ipc.Address.Mask.Size()
			spec.Overlay = append(spec.Overlay, netip.PrefixFrom(addr, ones).Masked())
		}
	}
	overlay, what := r.OverlayNetwork, "overlay_network"
	if overlay == "" && c.DelegateType() == "flannel" {
		// flannel's network spans every cell; its daemon writes it into the subnet file.
		file, _ := c.Delegate["subnetFile"].(string)
		if file == "" {
			file = defaultFlannelSubnetFile
		}
		var err error
		if overlay, err = containerrules.FlannelNetwork(file); err != nil {
			return spec, nil, fmt.Errorf("overlay_network not set and %w", err)
		}
		what = "FLANNEL_NETWORK in " + file
	}
	if overlay != "" {
		ps, err := parsePrefixes(what, []string{overlay})
		if err != nil {
			return spec, nil, err
		}
		spec.Overlay = append(ps, spec.Overlay...)
	}
	if r.InstanceAddress != "" {
		a, err := netip.ParseAddr(r.InstanceAddress)
		if err != nil || !a.Is4() {
			return spec, nil, fmt.Errorf("instance_address %q is not an IPv4 address", r.InstanceAddress)
		}
		spec.InstanceAddress = a
	}
	var mappings []portMapping
	if err := c.runtimeValue("portMappings", &mappings); err != nil {
		return spec, nil, err
	}
	for i, m := range mappings {
		h, err := pick("host port", m.HostPortSnake, m.HostPort)
		if err != nil {
			return spec, nil, fmt.Errorf("runtimeConfig.portMappings[%d]: %w", i, err)
		}
		cp, err := pick("container port", m.ContainerPortSnake, m.ContainerPort)
		if err != nil {
			return spec, nil, fmt.Errorf("runtimeConfig.portMappings[%d]: %w", i, err)
		}
		spec.PortMappings = append(spec.PortMappings, containerrules.PortMapping{HostPort: h, ContainerPort: cp, Protocol: m.Protocol})
	}
	if len(spec.PortMappings) > 0 && r.InstanceAddress == "" {
		return spec, nil, fmt.Errorf("runtimeConfig.portMappings given but no instance_address to map them on")
	}
	services, err := r.hostServices()
	if err != nil {
		return spec, nil, err
	}
	spec.HostServices = services
	var netOut []containerrules.NetOutRule
	if err := c.runtimeValue("netOutRules", &netOut); err != nil {
		return spec, nil, err
	}
	if !r.EnforceEgress {
		if len(netOut) > 0 {
			warnings = append(warnings, "runtimeConfig.netOutRules ignored: enforce_egress is off, egress is not filtered")
		}
		return spec, warnings, nil
	}
	e := &containerrules.Egress{
		Rules:              netOut,
		Logging:            r.IPTablesLogging,
		DeniedLogsPerSec:   r.IPTablesDeniedLogsPerSec,
		AcceptedLogsPerSec: r.IPTablesAcceptedLogsPerSec,
	}
	if w, ok := c.Metadata["container_workload"].(string); ok {
		e.Workload = w
	}
	if d := r.DenyNetworks; d != nil {
		var err error
		if e.Deny.Always, err = parsePrefixes("deny_networks.always", d.Always); err != nil {
			return spec, nil, err
		}
		if e.Deny.Running, err = parsePrefixes("deny_networks.running", d.Running); err != nil {
			return spec, nil, err
		}
		if e.Deny.Staging, err = parsePrefixes("deny_networks.staging", d.Staging); err != nil {
			return spec, nil, err
		}
	}
	spec.Egress = e
	if r.NoMasqueradeCIDRRange != "" {
		ps, err := parsePrefixes("no_masquerade_cidr_range", []string{r.NoMasqueradeCIDRRange})
		if err != nil {
			return spec, nil, err
		}
		spec.NoMasquerade = ps
	}
	return spec, warnings, nil
}

// hostServices lists what containers may reach on the cell: host_tcp_services,
// host_udp_services and, as silk does, DNS on each link-local dns_servers entry.
func (r *CellRules) hostServices() ([]containerrules.HostService, error) {
	var out []containerrules.HostService
	for _, d := range r.DNSServers {
		a, err := netip.ParseAddr(d)
		if err != nil {
			return nil, fmt.Errorf("dns_servers: %q is not an IP address", d)
		}
		if a.Is4() && a.IsLinkLocalUnicast() {
			dns := netip.AddrPortFrom(a, 53)
			out = append(out, containerrules.HostService{Protocol: "udp", Addr: dns}, containerrules.HostService{Protocol: "tcp", Addr: dns})
		}
	}
	for _, l := range []struct {
		key, proto string
		list       []string
	}{{"host_tcp_services", "tcp", r.HostTCPServices}, {"host_udp_services", "udp", r.HostUDPServices}} {
		for _, s := range l.list {
			h, err := containerrules.ParseHostService(l.proto, s)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", l.key, err)
			}
			out = append(out, h)
		}
	}
	return out, nil
}

// defaultFlannelSubnetFile is where the flannel CNI plugin reads its subnet by default.
const defaultFlannelSubnetFile = "/run/flannel/subnet.env"

// addNetRules installs the container's port mappings and egress rules, in one
// iptables-restore, and adds dns_servers to the result. On error nothing is installed.
func (p *Plugin) addNetRules(ctx context.Context, cfg *Config, handle string, result types.Result, ip net.IP) (types.Result, *types.Error) {
	if len(cfg.DNSServers) == 0 && !cfg.rulesActive() {
		return result, nil
	}
	res, err := current.NewResultFromResult(result)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "reading delegate result", err.Error())
	}
	for _, s := range cfg.DNSServers {
		if net.ParseIP(s) == nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid wrapper network config", fmt.Sprintf("dns_servers: %q is not an IP address", s))
		}
	}
	if len(cfg.DNSServers) > 0 {
		res.DNS.Nameservers = append([]string(nil), cfg.DNSServers...)
	}
	if !cfg.rulesActive() {
		return res, nil
	}
	spec, warnings, err := cfg.ruleSpec(handle, res, ip)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid port mappings, egress or host service settings", err.Error())
	}
	set, err := containerrules.Build(spec)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid port mappings, egress or host service settings", err.Error())
	}
	for _, w := range warnings {
		p.Logger.Warn(w, "container", handle)
	}
	for _, s := range set.Skipped {
		// As silk does: a rule that cannot be enforced allows nothing.
		p.Logger.Warn("security group rule skipped: it allows nothing", "container", handle, "reason", s.Error())
	}
	app, err := containerrules.NewApplier(cfg.lockFile())
	if err != nil {
		return nil, types.NewError(ErrNetRules, "installing port mappings and egress rules", err.Error())
	}
	if err := app.Add(ctx, set); err != nil {
		return nil, types.NewError(ErrNetRules, "installing port mappings and egress rules", err.Error())
	}
	return res, nil
}

// delNetRules removes every rule addNetRules made for the container; it needs nothing
// but the handle, so it works when the network namespace is gone.
func (p *Plugin) delNetRules(ctx context.Context, cfg *Config, handle string) *types.Error {
	if !cfg.rulesActive() {
		return nil
	}
	app, err := containerrules.NewApplier(cfg.lockFile())
	if err == nil {
		err = app.Remove(ctx, handle)
	}
	if err != nil {
		return types.NewError(ErrNetRules, "removing port mappings and egress rules", err.Error())
	}
	return nil
}

// undoNetRules removes the rules of a failed ADD and adds what went wrong to cause.
func (p *Plugin) undoNetRules(ctx context.Context, cfg *Config, handle string, cause *types.Error) *types.Error {
	if err := p.delNetRules(ctx, cfg, handle); err != nil {
		p.Logger.Error("undoing port mappings and egress rules", "cause", cause.Msg, "error", err.Details)
		cause.Details = strings.TrimSpace(cause.Details + "; removing its iptables rules also failed: " + err.Details)
	}
	return cause
}
