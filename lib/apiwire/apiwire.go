// Package apiwire holds the JSON shapes of the policy server's APIs, one definition of
// each, shared by the server that writes them and the clients (lib/policyclient, the
// netman CLI) that read them. Request bodies the server validates field by field are
// decoded with the server's own stricter types.
package apiwire

import "netman/lib/models"

// Paths of the internal API that clients poll.
const (
	InternalPoliciesV0Path    = "/networking/v0/internal/policies"
	InternalPoliciesV1Path    = "/networking/v1/internal/policies"
	InternalLastUpdatedV1Path = "/networking/v1/internal/policies_last_updated"
)

// Error is every error response: {"error": "..."}.
type Error struct {
	Error string `json:"error"`
}

// Ports is an inclusive port range.
type Ports struct {
	Start int `json:"start"`
	End   int `json:"end"`
}

// The internal API (mutual TLS, for agents): each side of a policy with its tag.

// InternalPoliciesV0 is the body of GET /networking/v0/internal/policies. The server
// writes the same shape with its own encoder, which allocates nothing per policy.
type InternalPoliciesV0 struct {
	Policies []InternalPolicyV0 `json:"policies"`
}

// InternalPolicyV0 is one policy as the v0 internal API shows it.
type InternalPolicyV0 struct {
	Destination InternalDestinationV0 `json:"destination"`
	Source      InternalSource        `json:"source"`
}

// InternalSource is the sending group and its tag.
type InternalSource struct {
	ID  string `json:"id"`
	Tag string `json:"tag"`
}

// InternalDestinationV0 is the receiving group. Port is the first port of the range;
// Ports is only present when the policy covers more than one port.
type InternalDestinationV0 struct {
	ID       string `json:"id"`
	Port     int    `json:"port"`
	Ports    *Ports `json:"ports,omitempty"`
	Protocol string `json:"protocol"`
	Tag      string `json:"tag"`
}

// InternalPoliciesV1 is the body of GET /networking/v1/internal/policies.
type InternalPoliciesV1 struct {
	TotalPolicies int                `json:"total_policies"`
	Policies      []InternalPolicyV1 `json:"policies"`
}

// InternalPolicyV1 is a policy as agents see it through v1: with both tags. Its fields
// are in the order of v0's (the server keeps the bytes the two share once).
type InternalPolicyV1 struct {
	Destination InternalDestinationV1 `json:"destination"`
	Source      InternalSource        `json:"source"`
}

// InternalDestinationV1 is the destination group, its ports, protocol and tag.
type InternalDestinationV1 struct {
	ID       string `json:"id"`
	Ports    Ports  `json:"ports"`
	Protocol string `json:"protocol"`
	Tag      string `json:"tag"`
}

// The external API (bearer tokens): policies without tags.

// Source is the source of a policy in external responses (no tag).
type Source struct {
	ID string `json:"id"`
}

// PoliciesV0 is the body of GET /networking/v0/external/policies.
type PoliciesV0 struct {
	TotalPolicies int        `json:"total_policies"`
	Policies      []PolicyV0 `json:"policies"`
}

// PolicyV0 is a policy as v0 shows it. A port range (made through v1) shows its first
// port as Port and the whole range as Ports, as the v0 internal API does.
type PolicyV0 struct {
	Source      Source        `json:"source"`
	Destination DestinationV0 `json:"destination"`
}

// DestinationV0 is the destination of a v0 policy.
type DestinationV0 struct {
	ID       string `json:"id"`
	Protocol string `json:"protocol"`
	Port     int    `json:"port"`
	Ports    *Ports `json:"ports,omitempty"`
}

// PoliciesV1 is the body of GET /networking/v1/external/policies.
type PoliciesV1 struct {
	TotalPolicies int        `json:"total_policies"`
	Policies      []PolicyV1 `json:"policies"`
}

// PoliciesRequestV1 is the body of the v1 create and delete requests (POST
// /networking/v1/external/policies and .../policies/delete): the server refuses
// total_policies in them.
type PoliciesRequestV1 struct {
	Policies []PolicyV1 `json:"policies"`
}

// PolicyV1 is a policy as the v1 external API shows it.
type PolicyV1 struct {
	Source      Source        `json:"source"`
	Destination DestinationV1 `json:"destination"`
}

// PolicyV1Of is p as the v1 external API shows it.
func PolicyV1Of(p models.Policy) PolicyV1 {
	return PolicyV1{
		Source: Source{ID: p.Source.ID},
		Destination: DestinationV1{ID: p.Destination.ID, Protocol: p.Destination.Protocol,
			Ports: Ports{Start: p.Destination.Ports.Start, End: p.Destination.Ports.End}},
	}
}

// DestinationV1 is the destination of a v1 external policy.
type DestinationV1 struct {
	ID       string `json:"id"`
	Protocol string `json:"protocol"`
	Ports    Ports  `json:"ports"`
}

// TagsV0 is the body of GET /networking/v0/external/tags.
type TagsV0 struct {
	Tags []TagV0 `json:"tags"`
}

// TagV0 is one group's tag.
type TagV0 struct {
	ID  string `json:"id"`
	Tag string `json:"tag"`
}

// TagsV1 is the body of GET /networking/v1/external/tags.
type TagsV1 struct {
	Tags []TagV1 `json:"tags"`
}

// TagV1 is one group's tag with the group's type; it is also the response of
// PUT /networking/v1/internal/tags.
type TagV1 struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Tag  string `json:"tag"`
}

// Whoami is the body of GET .../whoami.
type Whoami struct {
	UserName string   `json:"user_name"`
	UserID   string   `json:"user_id,omitempty"`
	ClientID string   `json:"client_id,omitempty"`
	Scope    []string `json:"scope"`
}

// Conditional and long-poll requests to the internal API's GET routes (see docs/api.md).
// Every answer from the policy snapshot carries an ETag (a store version, quoted: the
// last version at which that answer changed) and VersionHeader (the version of the
// snapshot it came from). A request with If-None-Match naming a tag that is still
// current gets 304; with WaitParam (seconds) as well, the server holds it until the
// answer changes or the wait ends (at most the server's request timeout), then answers
// 200 with the new answer or 304.
const (
	InternalLastUpdatedV0Path = "/networking/v0/internal/policies_last_updated"

	VersionHeader = "Netman-Policy-Version"
	// UnconfirmedHeader is present when the server could not confirm its snapshot with
	// the database (which is unreachable or slow); its value is how many seconds ago
	// the snapshot was last confirmed. The server stops answering (503) after its
	// staleness limit.
	UnconfirmedHeader = "Netman-Policy-Unconfirmed"
	WaitParam         = "wait"
)
