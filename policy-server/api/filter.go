package api

import (
	"net/url"
)

// Filter is the selection of the external policy lists, with the semantics of Cloud
// Foundry's policy server so its clients can use netman unchanged:
//
//   - id: policies whose source or destination is one of the ids. When id is given,
//     source_id and dest_id are not applied (as in Cloud Foundry).
//   - source_id: policies whose source is one of the ids.
//   - dest_id: policies whose destination is one of the ids.
//   - source_id and dest_id: policies matching both.
//   - none of them: every policy.
//
// Each parameter follows ParseIDs' rules (commas, repeats, trimming, at most max ids);
// a parameter that is present but names no id selects nothing.
type Filter struct {
	IDs, Sources, Dests          []string
	HasIDs, HasSources, HasDests bool
}

// FilterParams are the query parameters of a Filter.
var FilterParams = []string{"id", "source_id", "dest_id"}

// ParseFilter reads a Filter from a parsed query (httpapi.Query).
func ParseFilter(q url.Values, max int) (Filter, error) {
	var f Filter
	var err error
	if f.IDs, f.HasIDs, err = idParam(q, "id", max); err != nil {
		return Filter{}, err
	}
	if f.Sources, f.HasSources, err = idParam(q, "source_id", max); err != nil {
		return Filter{}, err
	}
	if f.Dests, f.HasDests, err = idParam(q, "dest_id", max); err != nil {
		return Filter{}, err
	}
	return f, nil
}
