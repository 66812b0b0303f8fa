package internalapi

import (
	"context"
	"net/http"

	"netman/lib/apiwire"
	"netman/lib/httpapi"
	"netman/lib/models"
	"netman/policy-server/api"
)

// Store is what the internal API needs from the store: the tags route and the security
// groups; every policy read is answered from the policy snapshot.
type Store interface {
	SecurityGroupStore
	EnsureTag(ctx context.Context, id, groupType string) (models.Tag, error)
}

// Routes are the routes of the internal (mutual TLS) server: the reads from source (the
// policy cache, which must have been built with Encoders), the tags route on store. A
// request may name at most maxIDs ids (api.DefaultMaxIDs if 0).
func Routes(source PolicySource, store Store, maxIDs int) []httpapi.Route {
	// The v0 policies_last_updated is Cloud Foundry's spelling, which its agents may
	// call; it answers as the v1 route does, from the same snapshot, so both always give
	// the same version.
	lastUpdatedV0 := httpapi.Route{Name: "internal_v0_policies_last_updated", Method: http.MethodGet,
		Path: apiwire.InternalLastUpdatedV0Path, Handler: newLastUpdated(source), Query: []string{apiwire.WaitParam}}
	return append(append(V0Routes(source, maxIDs), V1Routes(source, store, maxIDs)...), lastUpdatedV0)
}

// V0Routes is the v0 route of the spec (Routes adds the v0 policies_last_updated).
func V0Routes(source PolicySource, maxIDs int) []httpapi.Route {
	return []httpapi.Route{
		{Name: "policies_v0", Method: http.MethodGet, Path: PoliciesPath, Handler: newList(source, defaultMaxIDs(maxIDs), encV0),
			Query: []string{"id", apiwire.WaitParam}},
	}
}

// V1Routes are the v1 routes of the internal server.
func V1Routes(source PolicySource, store Store, maxIDs int) []httpapi.Route {
	return []httpapi.Route{
		{Name: "internal_v1_policies", Method: http.MethodGet, Path: apiwire.InternalPoliciesV1Path,
			Handler: newList(source, defaultMaxIDs(maxIDs), encV1), Query: []string{"id", apiwire.WaitParam}},
		{Name: "internal_v1_policies_last_updated", Method: http.MethodGet, Path: apiwire.InternalLastUpdatedV1Path,
			Handler: newLastUpdated(source), Query: []string{apiwire.WaitParam}},
		{Name: "internal_v1_tags", Method: http.MethodPut, Path: "/networking/v1/internal/tags",
			Handler: ensureTag(store)},
		{Name: "internal_v1_security_groups", Method: http.MethodGet, Path: apiwire.InternalSecurityGroupsV1Path,
			Handler: securityGroups(store, defaultMaxIDs(maxIDs)), Query: []string{"per_page", "from", "space_guids"}},
	}
}

func defaultMaxIDs(n int) int {
	if n <= 0 {
		return api.DefaultMaxIDs
	}
	return n
}

// tagRequestV1 is the body of PUT /networking/v1/internal/tags.
type tagRequestV1 struct {
	ID   *string `json:"id"`
	Type *string `json:"type"`
}

func ensureTag(store Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req tagRequestV1
		if status, err := httpapi.DecodeBody(r, &req); err != nil {
			httpapi.WriteError(w, r, status, err.Error())
			return
		}
		err := api.CheckID("id", req.ID)
		if err == nil {
			err = api.CheckID("type", req.Type)
		}
		if err != nil {
			httpapi.WriteError(w, r, http.StatusBadRequest, err.Error())
			return
		}
		t, err := store.EnsureTag(r.Context(), *req.ID, *req.Type)
		if err != nil {
			api.WriteStoreError(w, r, err)
			return
		}
		httpapi.WriteValue(w, r, http.StatusOK, apiwire.TagV1{ID: t.ID, Type: t.Type, Tag: t.Tag})
	})
}
