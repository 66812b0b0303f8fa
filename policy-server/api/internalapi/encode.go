package internalapi

import (
	"strconv"

	"netman/lib/httpapi"
	"netman/policy-server/policycache"
)

// The v0 list is written here rather than with encoding/json, in the shape of
// apiwire.InternalPoliciesV0: it is faster and allocates nothing per policy.

// appendPolicies appends {"policies":[...]} to b with the n policies at(0..n-1).
func appendPolicies(b []byte, n int, at func(i int) *policycache.Policy) []byte {
	b = append(b, `{"policies":[`...)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendPolicy(b, at(i))
	}
	return append(b, "]}"...)
}

func appendPolicy(b []byte, p *policycache.Policy) []byte {
	b = append(b, `{"destination":{"id":`...)
	b = httpapi.AppendString(b, p.Destination.ID)
	b = append(b, `,"port":`...)
	b = strconv.AppendInt(b, int64(p.Start), 10)
	if p.End != p.Start {
		b = append(b, `,"ports":{"start":`...)
		b = strconv.AppendInt(b, int64(p.Start), 10)
		b = append(b, `,"end":`...)
		b = strconv.AppendInt(b, int64(p.End), 10)
		b = append(b, '}')
	}
	b = append(b, `,"protocol":`...)
	b = httpapi.AppendString(b, p.Protocol)
	b = append(b, `,"tag":`...)
	b = httpapi.AppendString(b, p.Destination.Tag)
	b = append(b, `},"source":{"id":`...)
	b = httpapi.AppendString(b, p.Source.ID)
	b = append(b, `,"tag":`...)
	b = httpapi.AppendString(b, p.Source.Tag)
	return append(b, "}}"...)
}
