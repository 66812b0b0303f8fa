package external

import (
	"fmt"

	"netman/lib/models"
)

// The v0 external API: single ports ("port"), no tags. Shapes:
//
//	request:  {"policies":[{"source":{"id":S},"destination":{"id":D,"protocol":"tcp","port":8080}}]}
//	response: {"total_policies":N,"policies":[...same, plus "ports":{"start","end"} for ranges]}
//	tags:     {"tags":[{"id":ID,"tag":"0001"}]}

// sourceIn is the source of a policy in a v0 or v1 request.
type sourceIn struct {
	ID  *string `json:"id"`
	Tag *string `json:"tag"`
}

// destinationIn is what v0 and v1 destinations share; each version adds its ports.
type destinationIn struct {
	ID       *string `json:"id"`
	Tag      *string `json:"tag"`
	Protocol string  `json:"protocol"`
}

// checkEnds checks what v0 and v1 policies share: both ends present, valid ids, no tags,
// a known protocol.
func checkEnds(field string, src *sourceIn, dst *destinationIn) error {
	if src == nil {
		return fmt.Errorf("%s.source is missing", field)
	}
	if dst == nil {
		return fmt.Errorf("%s.destination is missing", field)
	}
	return firstError(
		checkID(field+".source.id", src.ID),
		checkNoTag(field+".source.tag", src.Tag),
		checkID(field+".destination.id", dst.ID),
		checkNoTag(field+".destination.tag", dst.Tag),
		checkProtocol(field+".destination.protocol", dst.Protocol),
	)
}

type destinationV0In struct {
	destinationIn
	Port *int `json:"port"`
}

type policyV0In struct {
	Source      *sourceIn        `json:"source"`
	Destination *destinationV0In `json:"destination"`
}

func (p policyV0In) model(field string) (models.Policy, error) {
	var common *destinationIn
	if p.Destination != nil {
		common = &p.Destination.destinationIn
	}
	if err := checkEnds(field, p.Source, common); err != nil {
		return models.Policy{}, err
	}
	d := p.Destination
	if err := checkPort(field+".destination.port", d.Port); err != nil {
		return models.Policy{}, err
	}
	return models.Policy{
		Source: models.Source{ID: *p.Source.ID},
		Destination: models.Destination{
			ID: *d.ID, Protocol: d.Protocol, Ports: models.Ports{Start: *d.Port, End: *d.Port},
		},
	}, nil
}

// PoliciesV0 is the body of GET /networking/v0/external/policies.
type PoliciesV0 struct {
	TotalPolicies int        `json:"total_policies"`
	Policies      []PolicyV0 `json:"policies"`
}

// PolicyV0 is a policy as v0 shows it. A port range (made through v1) shows its first
// port as Port and the whole range as Ports, as the v0 internal API does.
type PolicyV0 struct {
	Source      SourceOut     `json:"source"`
	Destination DestinationV0 `json:"destination"`
}

// SourceOut is the source of a policy in external responses (no tag).
type SourceOut struct {
	ID string `json:"id"`
}

// DestinationV0 is the destination of a v0 policy.
type DestinationV0 struct {
	ID       string `json:"id"`
	Protocol string `json:"protocol"`
	Port     int    `json:"port"`
	Ports    *Ports `json:"ports,omitempty"`
}

// Ports is an inclusive port range.
type Ports struct {
	Start int `json:"start"`
	End   int `json:"end"`
}

func policiesV0(ps []models.Policy) PoliciesV0 {
	out := PoliciesV0{TotalPolicies: len(ps), Policies: make([]PolicyV0, len(ps))}
	for i, p := range ps {
		d := DestinationV0{ID: p.Destination.ID, Protocol: p.Destination.Protocol, Port: p.Destination.Ports.Start}
		if p.Destination.Ports.End != p.Destination.Ports.Start {
			d.Ports = &Ports{Start: p.Destination.Ports.Start, End: p.Destination.Ports.End}
		}
		out.Policies[i] = PolicyV0{Source: SourceOut{ID: p.Source.ID}, Destination: d}
	}
	return out
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

func tagsV0(ts []models.Tag) TagsV0 {
	out := TagsV0{Tags: make([]TagV0, len(ts))}
	for i, t := range ts {
		out.Tags[i] = TagV0{ID: t.ID, Tag: t.Tag}
	}
	return out
}
