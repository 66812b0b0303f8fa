package external

import (
	"fmt"

	"netman/lib/models"
)

// The v1 API: port ranges ("ports":{"start","end"}). Externally without tags:
//
//	request:  {"policies":[{"source":{"id":S},"destination":{"id":D,"protocol":"tcp","ports":{"start":8080,"end":8090}}}]}
//	response: {"total_policies":N,"policies":[...same]}
//	tags:     {"tags":[{"id":ID,"type":"app","tag":"0001"}]}
//
// and internally (mutual TLS, for agents) with each side's tag:
//
//	{"total_policies":N,"policies":[{"source":{"id","tag"},"destination":{"id","tag","protocol","ports"}}]}

type portsIn struct {
	Start *int `json:"start"`
	End   *int `json:"end"`
}

type destinationV1In struct {
	destinationIn
	Ports *portsIn `json:"ports"`
}

type policyV1In struct {
	Source      *sourceIn        `json:"source"`
	Destination *destinationV1In `json:"destination"`
}

func (p policyV1In) model(field string) (models.Policy, error) {
	var common *destinationIn
	if p.Destination != nil {
		common = &p.Destination.destinationIn
	}
	if err := checkEnds(field, p.Source, common); err != nil {
		return models.Policy{}, err
	}
	d := p.Destination
	if d.Ports == nil {
		return models.Policy{}, fmt.Errorf("%s.destination.ports is missing; a single port is {\"start\":P,\"end\":P}", field)
	}
	if err := checkPorts(field+".destination.ports", d.Ports.Start, d.Ports.End); err != nil {
		return models.Policy{}, err
	}
	return models.Policy{
		Source: models.Source{ID: *p.Source.ID},
		Destination: models.Destination{
			ID: *d.ID, Protocol: d.Protocol, Ports: models.Ports{Start: *d.Ports.Start, End: *d.Ports.End},
		},
	}, nil
}

// PoliciesV1 is the body of GET /networking/v1/external/policies.
type PoliciesV1 struct {
	TotalPolicies int        `json:"total_policies"`
	Policies      []PolicyV1 `json:"policies"`
}

// PolicyV1 is a policy as the v1 external API shows it.
type PolicyV1 struct {
	Source      SourceOut     `json:"source"`
	Destination DestinationV1 `json:"destination"`
}

// DestinationV1 is the destination of a v1 external policy.
type DestinationV1 struct {
	ID       string `json:"id"`
	Protocol string `json:"protocol"`
	Ports    Ports  `json:"ports"`
}

func policiesV1(ps []models.Policy) PoliciesV1 {
	out := PoliciesV1{TotalPolicies: len(ps), Policies: make([]PolicyV1, len(ps))}
	for i, p := range ps {
		out.Policies[i] = PolicyV1{
			Source: SourceOut{ID: p.Source.ID},
			Destination: DestinationV1{
				ID: p.Destination.ID, Protocol: p.Destination.Protocol,
				Ports: Ports{Start: p.Destination.Ports.Start, End: p.Destination.Ports.End},
			},
		}
	}
	return out
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

func tagsV1(ts []models.Tag) TagsV1 {
	out := TagsV1{Tags: make([]TagV1, len(ts))}
	for i, t := range ts {
		out.Tags[i] = TagV1{ID: t.ID, Type: t.Type, Tag: t.Tag}
	}
	return out
}

// InternalPoliciesV1 is the body of GET /networking/v1/internal/policies.
type InternalPoliciesV1 struct {
	TotalPolicies int                `json:"total_policies"`
	Policies      []InternalPolicyV1 `json:"policies"`
}

// InternalPolicyV1 is a policy as agents see it through v1: with both tags.
type InternalPolicyV1 struct {
	Source      InternalSourceV1      `json:"source"`
	Destination InternalDestinationV1 `json:"destination"`
}

// InternalSourceV1 is the source group and its tag.
type InternalSourceV1 struct {
	ID  string `json:"id"`
	Tag string `json:"tag"`
}

// InternalDestinationV1 is the destination group, its tag, protocol and ports.
type InternalDestinationV1 struct {
	ID       string `json:"id"`
	Tag      string `json:"tag"`
	Protocol string `json:"protocol"`
	Ports    Ports  `json:"ports"`
}

func internalPoliciesV1(ps []models.Policy) InternalPoliciesV1 {
	out := InternalPoliciesV1{TotalPolicies: len(ps), Policies: make([]InternalPolicyV1, len(ps))}
	for i, p := range ps {
		out.Policies[i] = InternalPolicyV1{
			Source: InternalSourceV1{ID: p.Source.ID, Tag: p.Source.Tag},
			Destination: InternalDestinationV1{
				ID: p.Destination.ID, Tag: p.Destination.Tag, Protocol: p.Destination.Protocol,
				Ports: Ports{Start: p.Destination.Ports.Start, End: p.Destination.Ports.End},
			},
		}
	}
	return out
}

// tagRequestV1 is the body of PUT /networking/v1/internal/tags.
type tagRequestV1 struct {
	ID   *string `json:"id"`
	Type *string `json:"type"`
}
