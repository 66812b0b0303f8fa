package api

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"netman/policy-server/policycache"
)

// PoliciesV0 is the body of GET /networking/v0/internal/policies. Clients decode it
// with these types; the server writes the same shape with appendPolicies, which is
// faster than encoding/json and allocates nothing per policy.
type PoliciesV0 struct {
	Policies []PolicyV0 `json:"policies"`
}

// PolicyV0 is one policy as the v0 internal API shows it.
type PolicyV0 struct {
	Destination DestinationV0 `json:"destination"`
	Source      SourceV0      `json:"source"`
}

// SourceV0 is the sending group.
type SourceV0 struct {
	ID  string `json:"id"`
	Tag string `json:"tag"`
}

// DestinationV0 is the receiving group. Port is the first port of the range; Ports is
// only present when the policy covers more than one port.
type DestinationV0 struct {
	ID       string   `json:"id"`
	Port     int      `json:"port"`
	Ports    *PortsV0 `json:"ports,omitempty"`
	Protocol string   `json:"protocol"`
	Tag      string   `json:"tag"`
}

// PortsV0 is an inclusive port range.
type PortsV0 struct {
	Start int `json:"start"`
	End   int `json:"end"`
}

// ErrorBody is every error response: {"error": "..."}.
type ErrorBody struct {
	Error string `json:"error"`
}

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
	b = appendString(b, p.Destination.ID)
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
	b = appendString(b, p.Protocol)
	b = append(b, `,"tag":`...)
	b = appendString(b, p.Destination.Tag)
	b = append(b, `},"source":{"id":`...)
	b = appendString(b, p.Source.ID)
	b = append(b, `,"tag":`...)
	b = appendString(b, p.Source.Tag)
	return append(b, "}}"...)
}

// appendString appends s as a JSON string. Group ids are GUIDs in practice, which need
// no escaping; anything else goes through encoding/json so escaping stays exact.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= utf8.RuneSelf {
			enc, err := json.Marshal(s)
			if err != nil { // cannot happen for a string
				return append(b, `""`...)
			}
			return append(b, enc...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
