// Package models holds the domain types both halves of netman share, their order and
// the protocol interner. Wire formats (the JSON of each API version) are in
// lib/apiwire; these types are what the store keeps and the agents enforce.
package models

// Policy allows new connections from the apps of the source policy group to the
// destination group on one protocol and a range of ports.
type Policy struct {
	Source      Source
	Destination Destination
}

// Source is the sending side of a policy. Tag is the group's tag: upper-case, zero-padded
// hex of tag_length bytes (for example "0001"), assigned by the policy server.
type Source struct {
	ID  string
	Tag string
}

// Destination is the receiving side of a policy.
type Destination struct {
	ID       string
	Tag      string
	Protocol string // "tcp" or "udp"
	Ports    Ports
}

// Ports is an inclusive port range; a single port has Start == End.
type Ports struct {
	Start int
	End   int
}

// Protocols a policy may name.
const (
	ProtocolTCP = "tcp"
	ProtocolUDP = "udp"
)

// Change is what one version of the policy store did: Added (true) or removed (false)
// Policies, or, with no policies, changed only groups (a tag a client asked for), which
// no policy list shows. The store writes one per version; caches replay them in order.
type Change struct {
	Version  int64
	Added    bool
	Policies []Policy
}
