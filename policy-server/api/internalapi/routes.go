package internalapi

import (
	"context"
	"net/http"

	"netman/lib/apiwire"
	"netman/lib/httpapi"
	"netman/lib/models"
	"netman/policy-server/api"
)

// Store is what the v1 routes need from the policy store.
type Store interface {
	api.PolicyLister
	SecurityGroupStore
	LastUpdated(ctx context.Context) (int64, error)
	EnsureTag(ctx context.Context, id, groupType string) (models.Tag, error)
}

// Routes are the routes of the internal (mutual TLS) server: the v0 policy list from
// source, then the v1 routes from store. A request may name at most maxIDs ids
// (api.DefaultMaxIDs if 0).
func Routes(source PolicySource, store Store, maxIDs int) []httpapi.Route {
	return withV0LastUpdated(append(V0Routes(source, maxIDs), V1Routes(store, maxIDs)...))
}

// V0Routes is the v0 route of the spec, GET /networking/v0/internal/policies.
func V0Routes(source PolicySource, maxIDs int) []httpapi.Route {
	return []httpapi.Route{
		{Name: "policies_v0", Method: http.MethodGet, Path: PoliciesPath, Handler: NewInternalPolicies(source, defaultMaxIDs(maxIDs)), Query: []string{"id"}},
	}
}

// V1Routes are the v1 routes of the internal server.
func V1Routes(store Store, maxIDs int) []httpapi.Route {
	return []httpapi.Route{
		{Name: "internal_v1_policies", Method: http.MethodGet, Path: apiwire.InternalPoliciesV1Path,
			Handler: api.ListPolicies(store, defaultMaxIDs(maxIDs), func(ps []models.Policy) any { return internalPoliciesV1(ps) }),
			Query:   []string{"id"}},
		{Name: "internal_v1_policies_last_updated", Method: http.MethodGet, Path: apiwire.InternalLastUpdatedV1Path,
			Handler: lastUpdated(store)},
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

func lastUpdated(store Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := store.LastUpdated(r.Context())
		if err != nil {
			api.WriteStoreError(w, r, err)
			return
		}
		httpapi.WriteValue(w, r, http.StatusOK, v)
	})
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

func internalPoliciesV1(ps []models.Policy) apiwire.InternalPoliciesV1 {
	out := apiwire.InternalPoliciesV1{TotalPolicies: len(ps), Policies: make([]apiwire.InternalPolicyV1, len(ps))}
	for i, p := range ps {
		out.Policies[i] = apiwire.InternalPolicyV1{
			Source: apiwire.InternalSource{ID: p.Source.ID, Tag: p.Source.Tag},
			Destination: apiwire.InternalDestinationV1{
				ID: p.Destination.ID, Tag: p.Destination.Tag, Protocol: p.Destination.Protocol,
				Ports: apiwire.Ports{Start: p.Destination.Ports.Start, End: p.Destination.Ports.End},
			},
		}
	}
	return out
}
