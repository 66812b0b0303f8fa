package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"netman/lib/models"
)

// Chain names. Every chain netman owns starts with Prefix; Cleanup and the stale-chain
// sweep touch nothing else.
const (
	Prefix       = "netman-"
	ForwardChain = "netman-forward"
	ClosedChain  = "netman-closed"
	RejectChain  = "netman-reject"
	DenyChain    = "netman-deny"
	inPrefix     = "netman-in-"
	table        = "filter"
)

// Container is a container on this cell as enforcement sees it.
type Container struct {
	Handle  string
	IP      string // IPv4 address, or a CIDR whose address is the container's
	GroupID string // policy_group_id; empty when the runtime gave none
}

// Ruleset is the complete content of netman's chains: chain name → rule specs, each
// without the leading "-A chain". Two equal Rulesets program the same filtering.
type Ruleset struct {
	Chains map[string][]string
}

// RuleCount is the number of rules in all chains.
func (r Ruleset) RuleCount() int {
	n := 0
	for _, rs := range r.Chains {
		n += len(rs)
	}
	return n
}

// Equal reports whether r and o contain the same chains with the same rules in order.
func (r Ruleset) Equal(o Ruleset) bool {
	if len(r.Chains) != len(o.Chains) {
		return false
	}
	for name, rs := range r.Chains {
		os, ok := o.Chains[name]
		if !ok || !slices.Equal(rs, os) {
			return false
		}
	}
	return true
}

// Overlay is the cell's VXLAN device, through which containers of other cells reach the
// containers of this one. The zero value is a cell without one (containers on one bridge
// only).
type Overlay struct {
	// Interface is the device's name (flanneld's vxlan backend: "flannel.<VNI>").
	// Everything that arrives through it and is forwarded is container traffic from
	// another cell, so it is judged like traffic from a local container.
	Interface string
	// GBP says the device carries the low 16 bits of a packet's mark in the VXLAN Group
	// Based Policy header. A tag that does not fit could not identify its group on the
	// receiving cell, so policies with wider tags are refused.
	GBP bool
}

// GBPTagBits is how much of a mark VXLAN GBP carries across cells.
const GBPTagBits = 16

// ErrTagTooWide refuses a tag that VXLAN GBP cannot carry.
var ErrTagTooWide = fmt.Errorf("wider than the %d bits VXLAN GBP carries across cells (the policy server's tag_length must be at most 2)", GBPTagBits)

// Build computes the rules that enforce policies for containers on a cell with overlay.
// A policy or container that cannot be enforced (a malformed or, with GBP, too wide tag,
// a bad port or address) is left out and reported in the returned errors; everything
// else is still enforced, because one bad record must not freeze the rules of a whole
// cell. Leaving a policy out only ever refuses more.
func Build(containers []Container, policies []models.Policy, overlay Overlay) (Ruleset, []error) {
	var problems []error

	type local struct {
		ip            netip.Addr
		group, handle string
		// claimed: another record names this address too, so the agent cannot tell
		// which app it belongs to. It gets no mark and admits nothing (closed): one of
		// the claimants is a stale record, and enforcing either one could give a
		// container another app's policies.
		claimed bool
	}
	locals := make([]local, 0, len(containers))
	for _, c := range containers {
		ip, err := parseIPv4(c.IP)
		if err != nil {
			problems = append(problems, fmt.Errorf("container %s: %w", c.Handle, err))
			continue
		}
		locals = append(locals, local{ip: ip, group: c.GroupID, handle: c.Handle})
	}
	// Sorted by address then handle, so the rules and the problems do not depend on the
	// order the datastore gave.
	slices.SortFunc(locals, func(a, b local) int {
		if c := a.ip.Compare(b.ip); c != 0 {
			return c
		}
		return strings.Compare(a.handle, b.handle)
	})
	kept := locals[:0]
	for _, l := range locals {
		if n := len(kept); n > 0 && kept[n-1].ip == l.ip {
			problems = append(problems, fmt.Errorf("container %s: ip %s is also container %s's; closed until one record is gone", l.handle, l.ip, kept[n-1].handle))
			kept[n-1].claimed = true
			continue
		}
		kept = append(kept, l)
	}
	locals = kept
	localGroups := map[string]bool{}
	for _, l := range locals {
		if l.group != "" && !l.claimed {
			localGroups[l.group] = true
		}
	}

	// Tags of local groups, learnt from either end of any policy, and the allow rules
	// of each local destination group.
	tags := map[string]uint64{}
	width := 0
	allows := map[string][]allow{}
	for _, p := range policies {
		a, err := checkPolicy(p, overlay.GBP)
		if err != nil {
			problems = append(problems, fmt.Errorf("policy %s -> %s: %w", p.Source.ID, p.Destination.ID, err))
			continue
		}
		width = max(width, len(p.Source.Tag), len(p.Destination.Tag))
		if localGroups[p.Source.ID] {
			tags[p.Source.ID] = a.source
		}
		if localGroups[p.Destination.ID] {
			tags[p.Destination.ID] = a.dest
			allows[p.Destination.ID] = append(allows[p.Destination.ID], a)
		}
	}
	mask := fmt.Sprintf("0x%x", uint64(1)<<(4*uint(max(width, 1)))-1)

	chains := map[string][]string{}
	var marks, dispatch []string
	// Bridged traffic is always between two containers of this cell, including ones the
	// agent has not seen yet: a container the runtime just created is closed, not open,
	// until the next cycle knows it.
	reject := []string{bridged + " -j " + DenyChain}
	// What came through the overlay is from a container of another cell, whether that cell
	// runs netman or not: refused unless a policy admitted it, like a local source.
	fromOverlay := ""
	if overlay.Interface != "" {
		fromOverlay = "-i " + overlay.Interface
		reject = append(reject, fromOverlay+" -j "+DenyChain)
	}
	for _, l := range locals {
		addr := l.ip.String() + "/32"
		reject = append(reject, "-s "+addr+" -j "+DenyChain)
		if l.claimed {
			dispatch = append(dispatch, "-d "+addr+" -j "+ClosedChain)
			continue
		}
		tag, tagged := tags[l.group]
		if tagged {
			marks = append(marks, fmt.Sprintf("-s %s -j MARK --set-xmark 0x%x/%s", addr, tag, mask))
		}
		if len(allows[l.group]) > 0 {
			name := InChain(tag)
			dispatch = append(dispatch, "-d "+addr+" -j "+name)
			if _, done := chains[name]; !done {
				chains[name] = inRules(allows[l.group], mask)
			}
		} else {
			dispatch = append(dispatch, "-d "+addr+" -j "+ClosedChain)
		}
	}
	chains[ForwardChain] = append(append(marks, dispatch...), bridged+" -j "+ClosedChain)
	if fromOverlay != "" {
		// A container the agent has not seen yet is closed to other cells too.
		chains[ForwardChain] = append(chains[ForwardChain], fromOverlay+" -j "+ClosedChain)
	}
	chains[ClosedChain] = []string{established, "-j " + RejectChain}
	chains[RejectChain] = reject
	chains[DenyChain] = deny
	return Ruleset{Chains: chains}, problems
}

// InChain names the chain that admits traffic to the group with this tag.
func InChain(tag uint64) string { return fmt.Sprintf("%s%04X", inPrefix, tag) }

const (
	established = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
	bridged     = "-m physdev --physdev-is-bridged"
)

// deny refuses loudly so that clients fail at once instead of waiting for a timeout. TCP
// gets a reset: ICMP errors are rate limited per peer, resets are not.
var deny = []string{
	"-p tcp -j REJECT --reject-with tcp-reset",
	"-j REJECT --reject-with icmp-port-unreachable",
}

type allow struct {
	source, dest uint64
	protocol     string
	start, end   int
}

func inRules(as []allow, mask string) []string {
	slices.SortFunc(as, func(a, b allow) int {
		if c := strings.Compare(a.protocol, b.protocol); c != 0 {
			return c
		}
		if a.start != b.start {
			return a.start - b.start
		}
		if a.end != b.end {
			return a.end - b.end
		}
		return int(a.source) - int(b.source)
	})
	as = slices.Compact(as)
	out := make([]string, 0, len(as)+2)
	out = append(out, established)
	for _, a := range as {
		port := strconv.Itoa(a.start)
		if a.end != a.start {
			port += ":" + strconv.Itoa(a.end)
		}
		out = append(out, fmt.Sprintf("-p %s -m %s --dport %s -m mark --mark 0x%x/%s -j ACCEPT",
			a.protocol, a.protocol, port, a.source, mask))
	}
	return append(out, "-j "+RejectChain)
}

func checkPolicy(p models.Policy, gbp bool) (allow, error) {
	src, err := parseTag(p.Source.Tag, gbp)
	if err != nil {
		return allow{}, fmt.Errorf("source tag: %w", err)
	}
	dst, err := parseTag(p.Destination.Tag, gbp)
	if err != nil {
		return allow{}, fmt.Errorf("destination tag: %w", err)
	}
	proto := p.Destination.Protocol
	if proto != models.ProtocolTCP && proto != models.ProtocolUDP {
		return allow{}, fmt.Errorf("protocol %q is not tcp or udp", proto)
	}
	start, end := p.Destination.Ports.Start, p.Destination.Ports.End
	if start < 1 || end > 65535 || start > end {
		return allow{}, fmt.Errorf("port range %d-%d is not within 1-65535", start, end)
	}
	return allow{source: src, dest: dst, protocol: proto, start: start, end: end}, nil
}

var errZeroTag = errors.New("tag 0 would match unmarked packets")

// parseTag reads a tag as the policy server prints it: 1 to 8 hex digits, never zero,
// and with gbp at most 16 bits.
func parseTag(s string, gbp bool) (uint64, error) {
	if len(s) == 0 || len(s) > 8 {
		return 0, fmt.Errorf("tag %q is not 1 to 8 hex digits", s)
	}
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("tag %q is not hex", s)
	}
	if v == 0 {
		return 0, errZeroTag
	}
	// The width the server gives (its digits), not the value: the marks' mask follows it.
	if gbp && (v>>GBPTagBits != 0 || len(s) > GBPTagBits/4) {
		return 0, fmt.Errorf("tag %s: %w", s, ErrTagTooWide)
	}
	return v, nil
}

func parseIPv4(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		s = p.Addr().String()
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("ip %q is not an address", s)
	}
	if !ip.Is4() {
		return netip.Addr{}, fmt.Errorf("ip %s is not IPv4 (only IPv4 is enforced)", s)
	}
	return ip, nil
}
