package wrapper

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"netman/lib/datastore"
	"netman/lib/mtu"
)

// Config is the wrapper's network configuration: the static file from the BOSH job plus
// what the runtime injects for each container.
type Config struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"`

	// Datastore is the path of the container record file policy agents read.
	Datastore string `json:"datastore"`
	// DatastoreFileOwner and DatastoreFileGroup (user/group names or numeric IDs) own
	// the datastore files when set, so an agent running as that user can read them.
	DatastoreFileOwner string `json:"datastore_file_owner,omitempty"`
	DatastoreFileGroup string `json:"datastore_file_group,omitempty"`

	// Delegate is the configuration of the plugin that sets up the interface,
	// e.g. bridge or flannel. It is passed on as written, plus name, cniVersion,
	// runtimeConfig and the container MTU where missing.
	Delegate map[string]any `json:"delegate"`

	// MTU of container interfaces; 0 detects it from the underlay interface.
	MTU int `json:"mtu,omitempty"`
	// UnderlayIP or UnderlayInterface (at most one) name the host interface the overlay
	// uses for MTU detection; without either, the interface of the IPv4 default route.
	UnderlayIP        string `json:"underlay_ip,omitempty"`
	UnderlayInterface string `json:"underlay_interface,omitempty"`
	// EncapsulationOverhead replaces the default overhead subtracted from the host MTU:
	// 50 for a flannel (VXLAN) delegate, 0 for any other.
	EncapsulationOverhead *int `json:"encapsulation_overhead,omitempty"`

	// PolicyAgentForcePollAddress (host:port) is where the cell's policy agent serves
	// GET /force-policy-poll-cycle; after every ADD and DEL the wrapper asks it to run a
	// cycle at once. Empty: no nudge, the agent finds the change on its next poll.
	PolicyAgentForcePollAddress string `json:"policy_agent_force_poll_address,omitempty"`

	// CellRules: port mappings and egress rules (netinout.go).
	CellRules

	// Metadata is the runtime's per-container data (app_id, space_id, org_id,
	// policy_group_id and whatever else it sends), recorded verbatim. When the runtime
	// sends no top-level metadata, network.properties is used instead.
	Metadata      map[string]any `json:"metadata,omitempty"`
	RuntimeConfig map[string]any `json:"runtimeConfig,omitempty"`
	Network       *Network       `json:"network,omitempty"`

	// PrevResult (CHECK) and ValidAttachments (GC) come from the runtime.
	PrevResult       json.RawMessage       `json:"prevResult,omitempty"`
	ValidAttachments *[]types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`
}

// Network is the form in which garden-external-networker passes CF properties.
type Network struct {
	Properties map[string]any `json:"properties,omitempty"`
}

// Default encapsulation overhead per delegate type; VXLAN adds 50 bytes of headers.
var defaultOverhead = map[string]int{"flannel": 50}

// LoadConfig parses and validates the wrapper's network configuration. It needs none of
// the runtime's per-container fields, so it also checks the static file a BOSH job
// renders. Errors are *types.Error with the code the runtime should see.
func LoadConfig(stdin []byte) (*Config, error) {
	return loadConfig(stdin, (*Config).validate)
}

// LoadDelConfig parses the configuration of a DEL and checks only what DEL uses: the
// datastore and the delegate. A setting only ADD uses (an mtu too small, say, or
// oversized metadata) never keeps a runtime from deleting a container.
func LoadDelConfig(stdin []byte) (*Config, error) {
	return loadConfig(stdin, (*Config).validateDel)
}

func loadConfig(stdin []byte, validate func(*Config) error) (*Config, error) {
	c, err := parseConfig(stdin)
	if err != nil {
		return nil, err
	}
	if err := validate(c); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid wrapper network config", err.Error())
	}
	return c, nil
}

func parseConfig(stdin []byte) (*Config, error) {
	dec := json.NewDecoder(bytes.NewReader(stdin))
	// Numbers stay json.Number so metadata and delegate settings pass through digit for digit.
	dec.UseNumber()
	c := &Config{}
	if err := dec.Decode(c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decoding wrapper network config", err.Error())
	}
	if dec.More() {
		return nil, types.NewError(types.ErrDecodingFailure, "decoding wrapper network config", "data after the JSON object")
	}
	if c.CNIVersion == "" {
		// The spec's meaning of a missing version.
		c.CNIVersion = "0.1.0"
	}
	if c.Metadata == nil && c.Network != nil && c.Network.Properties != nil {
		c.Metadata = c.Network.Properties
	}
	return c, nil
}

// validateDel checks what every command needs.
func (c *Config) validateDel() error {
	if c.Datastore == "" {
		return fmt.Errorf("missing datastore")
	}
	if c.Delegate == nil {
		return fmt.Errorf("missing delegate")
	}
	t, ok := c.Delegate["type"].(string)
	if !ok || t == "" {
		return fmt.Errorf("delegate has no type")
	}
	if t == "wrapper" {
		return fmt.Errorf("delegate type wrapper would call itself")
	}
	if inner, ok := c.Delegate["delegate"]; ok && t == "flannel" {
		if _, isMap := inner.(map[string]any); !isMap {
			return fmt.Errorf("delegate.delegate is not an object")
		}
	}
	return nil
}

// validate checks the whole configuration.
func (c *Config) validate() error {
	if err := c.validateDel(); err != nil {
		return err
	}
	if c.MTU != 0 {
		if err := mtu.Validate(c.MTU); err != nil {
			return err
		}
	}
	if err := validateOperatorMTU(c.Delegate); err != nil {
		return err
	}
	if c.EncapsulationOverhead != nil && *c.EncapsulationOverhead < 0 {
		return fmt.Errorf("encapsulation_overhead %d is negative", *c.EncapsulationOverhead)
	}
	if c.UnderlayIP != "" && c.UnderlayInterface != "" {
		// Two answers to one question; the BOSH job refuses this as well.
		return fmt.Errorf("set at most one of underlay_ip and underlay_interface")
	}
	if c.UnderlayIP != "" {
		if _, err := netip.ParseAddr(c.UnderlayIP); err != nil {
			return fmt.Errorf("underlay_ip: %w", err)
		}
	}
	if c.PolicyAgentForcePollAddress != "" {
		if _, port, err := net.SplitHostPort(c.PolicyAgentForcePollAddress); err != nil || port == "" {
			return fmt.Errorf("policy_agent_force_poll_address %q is not host:port", c.PolicyAgentForcePollAddress)
		}
	}
	if _, err := datastore.EncodeMetadata(c.Metadata); err != nil {
		return err
	}
	return nil
}

// validateOperatorMTU refuses an mtu the operator wrote where the delegate reads it
// (bridge: its own, flannel: its inner delegate's) when no container can use it. The
// wrapper never replaces that mtu, so this is the only place it is checked before an
// interface gets it. 0 is left to the delegate, which reads it as its default.
func validateOperatorMTU(delegate map[string]any) error {
	v := mtuTarget(maps.Clone(delegate))["mtu"]
	if v == nil {
		return nil
	}
	n, isNumber := v.(json.Number)
	m, err := n.Int64()
	if !isNumber || err != nil {
		return fmt.Errorf("delegate mtu %v is not a whole number", v)
	}
	if m == 0 {
		return nil
	}
	if err := mtu.Validate(int(m)); err != nil {
		return fmt.Errorf("delegate mtu: %w", err)
	}
	return nil
}

// DelegateType is the plugin the wrapper delegates to.
func (c *Config) DelegateType() string { return c.Delegate["type"].(string) }

func (c *Config) overhead() int {
	if c.EncapsulationOverhead != nil {
		return *c.EncapsulationOverhead
	}
	return defaultOverhead[c.DelegateType()]
}

// mtuTarget is the map in the delegate's configuration whose "mtu" sets the container
// interface's MTU: flannel hands its inner delegate to the bridge plugin, every other
// plugin reads its own top-level mtu. The map is part of the delegate copy, so setting
// it never changes c.
func mtuTarget(delegate map[string]any) map[string]any {
	if delegate["type"] != "flannel" {
		return delegate
	}
	inner, _ := delegate["delegate"].(map[string]any)
	inner = maps.Clone(inner)
	if inner == nil {
		inner = map[string]any{}
	}
	delegate["delegate"] = inner
	return inner
}

// delegateOptions says what a command adds to the delegate's configuration.
type delegateOptions struct {
	mtu              bool // set the container MTU unless the operator wrote one
	prevResult       bool
	validAttachments bool
	// cniVersion is the version the delegate is called with; empty: the runtime's.
	cniVersion string
}

// delegateConf renders the configuration passed to the delegate: the operator's
// delegate object with the parent's cniVersion (or the one negotiated with the delegate),
// the parent's name when the delegate has none, the runtime's runtimeConfig and, when
// asked for, the container MTU, prevResult (in the delegate's version) and valid
// attachments.
func (c *Config) delegateConf(opts delegateOptions, hostMTU func(mtu.Underlay) (int, error)) ([]byte, error) {
	d := maps.Clone(c.Delegate)
	cniVersion := c.CNIVersion
	if opts.cniVersion != "" {
		cniVersion = opts.cniVersion
	}
	d["cniVersion"] = cniVersion
	if _, ok := d["name"]; !ok {
		d["name"] = c.Name
	}
	if _, ok := d["runtimeConfig"]; !ok && c.RuntimeConfig != nil {
		d["runtimeConfig"] = c.RuntimeConfig
	}
	if opts.prevResult && len(c.PrevResult) > 0 {
		prev, err := c.prevResultAs(cniVersion)
		if err != nil {
			return nil, err
		}
		d["prevResult"] = prev
	}
	if opts.validAttachments && c.ValidAttachments != nil {
		d["cni.dev/valid-attachments"] = *c.ValidAttachments
	}
	if opts.mtu {
		if target := mtuTarget(d); target["mtu"] == nil {
			m, err := c.containerMTU(hostMTU)
			if err != nil {
				return nil, err
			}
			target["mtu"] = m
		}
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "encoding delegate config", err.Error())
	}
	return b, nil
}

// prevResultAs is the runtime's prevResult in version v.
func (c *Config) prevResultAs(v string) (json.RawMessage, error) {
	if v == c.CNIVersion {
		return c.PrevResult, nil
	}
	prev, err := version.NewResult(c.CNIVersion, c.PrevResult)
	if err == nil {
		prev, err = prev.GetAsVersion(v)
	}
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "converting prevResult to the delegate's version "+v, err.Error())
	}
	b, err := json.Marshal(prev)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "encoding prevResult", err.Error())
	}
	return b, nil
}

// containerMTU is the configured MTU, or the underlay's MTU minus the encapsulation
// overhead. Detection runs only here, so a delegate whose MTU the operator set costs
// no netlink round trip.
func (c *Config) containerMTU(hostMTU func(mtu.Underlay) (int, error)) (int, error) {
	if c.MTU != 0 {
		return c.MTU, nil
	}
	host, err := hostMTU(mtu.Underlay{IP: c.UnderlayIP, Interface: c.UnderlayInterface})
	if err != nil {
		return 0, types.NewError(ErrMTU, "detecting host MTU", err.Error())
	}
	m, err := mtu.Container(host, c.overhead())
	if err != nil {
		return 0, types.NewError(ErrMTU, "container MTU too small", err.Error())
	}
	return m, nil
}
