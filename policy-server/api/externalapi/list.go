package externalapi

import (
	"context"
	"net/http"
	"slices"

	"netman/lib/httpapi"
	"netman/lib/models"
	"netman/policy-server/api"
)

// listPolicies serves an external policy list, selected by api.Filter; a space
// developer sees only the policies of apps visible to them.
func (a *API) listPolicies(shape func([]models.Policy) any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := httpapi.Query(r)
		if err != nil {
			httpapi.WriteError(w, r, http.StatusBadRequest, "invalid query string: "+err.Error())
			return
		}
		f, err := api.ParseFilter(q, a.maxIDs)
		if err != nil {
			httpapi.WriteError(w, r, http.StatusBadRequest, err.Error())
			return
		}
		ids, all := storeQuery(f)
		var ps []models.Policy
		if c := spaceDeveloper(r); a.cc.Guard != nil && c != nil {
			var ok bool
			if ps, ok = a.listForSpaceDeveloper(w, r, c, ids, all); !ok {
				return
			}
		} else if ps, err = a.read(r.Context(), ids, all); err != nil {
			api.WriteStoreError(w, r, err)
			return
		}
		httpapi.WriteValue(w, r, http.StatusOK, shape(narrow(f, ps)))
	})
}

func (a *API) read(ctx context.Context, ids []string, all bool) ([]models.Policy, error) {
	switch {
	case all:
		return a.store.All(ctx)
	case len(ids) == 0:
		return nil, nil
	}
	return a.store.ByGroupIDs(ctx, ids)
}

// storeQuery is what to read from the store for f: every policy (all), or those with
// either end in ids. The store selects by either end; narrow then keeps the end each
// of source_id and dest_id names, so the store is asked with the shorter list.
func storeQuery(f api.Filter) (ids []string, all bool) {
	switch {
	case f.HasIDs:
		return f.IDs, false
	case !f.HasSources && !f.HasDests:
		return nil, true
	case !f.HasSources || f.HasDests && len(f.Dests) < len(f.Sources):
		return f.Dests, false
	}
	return f.Sources, false
}

// narrow keeps the policies whose source and destination match source_id and
// dest_id; with id given, those are not applied (as in Cloud Foundry).
func narrow(f api.Filter, ps []models.Policy) []models.Policy {
	if f.HasIDs || !f.HasSources && !f.HasDests {
		return ps
	}
	sources, dests := set(f.Sources), set(f.Dests)
	return slices.DeleteFunc(ps, func(p models.Policy) bool {
		_, src := sources[p.Source.ID]
		_, dst := dests[p.Destination.ID]
		return f.HasSources && !src || f.HasDests && !dst
	})
}

func set(ids []string) map[string]struct{} {
	m := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		m[id] = struct{}{}
	}
	return m
}
