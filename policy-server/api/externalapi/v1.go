package externalapi

import (
	"fmt"

	"netman/lib/apiwire"
	"netman/lib/models"
)

// The v1 API: port ranges ("ports":{"start","end"}). Externally without tags:
//
//	request:  {"policies":[{"source":{"id":S},"destination":{"id":D,"protocol":"tcp","ports":{"start":8080,"end":8090}}}]}
//	response: {"total_policies":N,"policies":[...same]}
//	tags:     {"tags":[{"id":ID,"type":"app","tag":"0001"}]}

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

func policiesV1(ps []models.Policy) apiwire.PoliciesV1 {
	out := apiwire.PoliciesV1{TotalPolicies: len(ps), Policies: make([]apiwire.PolicyV1, len(ps))}
	for i, p := range ps {
		out.Policies[i] = apiwire.PolicyV1Of(p)
	}
	return out
}

func tagsV1(ts []models.Tag) apiwire.TagsV1 {
	out := apiwire.TagsV1{Tags: make([]apiwire.TagV1, len(ts))}
	for i, t := range ts {
		out.Tags[i] = apiwire.TagV1{ID: t.ID, Type: t.Type, Tag: t.Tag}
	}
	return out
}
