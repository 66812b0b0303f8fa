package externalapi

import (
	"fmt"

	"netman/lib/apiwire"
	"netman/lib/models"
	"netman/policy-server/api"
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
		api.CheckID(field+".source.id", src.ID),
		checkNoTag(field+".source.tag", src.Tag),
		api.CheckID(field+".destination.id", dst.ID),
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

func policiesV0(ps []models.Policy) apiwire.PoliciesV0 {
	out := apiwire.PoliciesV0{TotalPolicies: len(ps), Policies: make([]apiwire.PolicyV0, len(ps))}
	for i, p := range ps {
		d := apiwire.DestinationV0{ID: p.Destination.ID, Protocol: p.Destination.Protocol, Port: p.Destination.Ports.Start}
		if p.Destination.Ports.End != p.Destination.Ports.Start {
			d.Ports = &apiwire.Ports{Start: p.Destination.Ports.Start, End: p.Destination.Ports.End}
		}
		out.Policies[i] = apiwire.PolicyV0{Source: apiwire.Source{ID: p.Source.ID}, Destination: d}
	}
	return out
}

func tagsV0(ts []models.Tag) apiwire.TagsV0 {
	out := apiwire.TagsV0{Tags: make([]apiwire.TagV0, len(ts))}
	for i, t := range ts {
		out.Tags[i] = apiwire.TagV0{ID: t.ID, Tag: t.Tag}
	}
	return out
}
