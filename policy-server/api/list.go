package api

import (
	"context"
	"net/http"

	"netman/lib/httpapi"
	"netman/lib/models"
)

// PolicyLister reads policies from the store.
type PolicyLister interface {
	All(ctx context.Context) ([]models.Policy, error)
	ByGroupIDs(ctx context.Context, ids []string) ([]models.Policy, error)
}

// ListPolicies serves a policy list with an optional ?id= filter of at most maxIDs ids,
// in the wire shape that shape makes of the store's policies.
func ListPolicies(store PolicyLister, maxIDs int, shape func([]models.Policy) any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := httpapi.Query(r)
		if err != nil {
			httpapi.WriteError(w, r, http.StatusBadRequest, "invalid query string: "+err.Error())
			return
		}
		ids, all, err := ParseIDs(q, maxIDs)
		if err != nil {
			httpapi.WriteError(w, r, http.StatusBadRequest, err.Error())
			return
		}
		var ps []models.Policy
		if all {
			ps, err = store.All(r.Context())
		} else {
			ps, err = store.ByGroupIDs(r.Context(), ids)
		}
		if err != nil {
			WriteStoreError(w, r, err)
			return
		}
		httpapi.WriteValue(w, r, http.StatusOK, shape(ps))
	})
}
