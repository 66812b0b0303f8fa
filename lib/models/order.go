package models

import (
	"cmp"
	"strings"
)

// PolicyKey is what orders policies: source id, destination id, protocol, then ports.
// The store lists policies in this order and the policy cache keeps it.
type PolicyKey struct {
	Source, Destination, Protocol string
	Start, End                    int
}

// Key returns p's place in the policy order.
func (p Policy) Key() PolicyKey {
	return PolicyKey{p.Source.ID, p.Destination.ID, p.Destination.Protocol, p.Destination.Ports.Start, p.Destination.Ports.End}
}

// Compare orders k before, with or after o (-1, 0, +1).
// Written out rather than with cmp.Or, which would compare every field every time: the
// ids decide almost every comparison, and caches sort with this on every poll.
func (k PolicyKey) Compare(o PolicyKey) int {
	if c := strings.Compare(k.Source, o.Source); c != 0 {
		return c
	}
	if c := strings.Compare(k.Destination, o.Destination); c != 0 {
		return c
	}
	if c := strings.Compare(k.Protocol, o.Protocol); c != 0 {
		return c
	}
	if c := cmp.Compare(k.Start, o.Start); c != 0 {
		return c
	}
	return cmp.Compare(k.End, o.End)
}

// ComparePolicies orders policies by their keys, for slices.SortFunc.
func ComparePolicies(a, b Policy) int { return a.Key().Compare(b.Key()) }
