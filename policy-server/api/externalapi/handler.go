// Package externalapi serves the policy server's policy-management API: the external
// v0 and v1 routes (bearer tokens, network.admin) that the cf CLI and `netman` use.
package externalapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"netman/lib/apiwire"
	"netman/lib/httpapi"
	"netman/lib/models"
	"netman/policy-server/api"
	"netman/policy-server/auth"
)

// DefaultMaxPolicies is the default cap on policies in one create or delete request.
const DefaultMaxPolicies = 10000

// Store is what the API needs from the policy store.
type Store interface {
	Create(ctx context.Context, policies []models.Policy) error
	Delete(ctx context.Context, policies []models.Policy) error
	All(ctx context.Context) ([]models.Policy, error)
	ByGroupIDs(ctx context.Context, ids []string) ([]models.Policy, error)
	Tags(ctx context.Context) ([]models.Tag, error)
}

// Options configure the handlers.
type Options struct {
	Store Store
	// Verifier checks the bearer tokens of the external routes; without one there are
	// no routes.
	Verifier *auth.Verifier
	// MaxPolicies caps the policies of one create or delete (DefaultMaxPolicies if 0).
	MaxPolicies int
	// MaxIDs caps the ids of one ?id= filter (api.DefaultMaxIDs if 0).
	MaxIDs int
	// CloudController, when set, opens create, delete and list to space developers and
	// adds the cleanup route.
	CloudController CloudController
}

// API holds the handlers.
type API struct {
	store       Store
	verifier    *auth.Verifier
	maxPolicies int
	maxIDs      int
	cc          CloudController
}

// New returns the API.
func New(opts Options) (*API, error) {
	if opts.Store == nil {
		return nil, errors.New("external API: no store")
	}
	a := &API{store: opts.Store, verifier: opts.Verifier, maxPolicies: opts.MaxPolicies, maxIDs: opts.MaxIDs, cc: opts.CloudController}
	if a.maxPolicies <= 0 {
		a.maxPolicies = DefaultMaxPolicies
	}
	if a.maxIDs <= 0 {
		a.maxIDs = api.DefaultMaxIDs
	}
	return a, nil
}

// ExternalRoutes are the routes of the external server, every one behind a bearer
// token: network.admin, or for the policy routes and whoami also a space developer's
// token when a Cloud Controller guard decides for them. None when the API has no token
// verifier.
func (a *API) ExternalRoutes() []httpapi.Route {
	if a.verifier == nil {
		return nil
	}
	access := auth.WriteAccess{SpaceDevelopers: a.cc.Guard != nil, SelfService: a.cc.SelfService}
	dev := func(h http.Handler) http.Handler { return a.verifier.RequireWrite(access, h) }
	admin := a.verifier.Require
	v0 := "/networking/v0/external/"
	v1 := "/networking/v1/external/"
	create0, delete0 := dev(a.changePolicies("v0", a.decodeV0, true, a.store.Create)), dev(a.changePolicies("v0", a.decodeV0, false, a.store.Delete))
	create1, delete1 := dev(a.changePolicies("v1", a.decodeV1, true, a.store.Create)), dev(a.changePolicies("v1", a.decodeV1, false, a.store.Delete))
	list0 := func(ps []models.Policy) any { return policiesV0(ps) }
	list1 := func(ps []models.Policy) any { return policiesV1(ps) }
	routes := []httpapi.Route{
		{Name: "external_v0_create_policies", Method: http.MethodPost, Path: v0 + "policies", Handler: create0},
		{Name: "external_v0_delete_policies", Method: http.MethodDelete, Path: v0 + "policies", Handler: delete0},
		{Name: "external_v0_delete_policies", Method: http.MethodPost, Path: v0 + "policies/delete", Handler: delete0},
		{Name: "external_v0_list_policies", Method: http.MethodGet, Path: v0 + "policies", Handler: dev(a.listPolicies(list0)), Query: api.FilterParams},
		{Name: "external_v0_tags", Method: http.MethodGet, Path: v0 + "tags", Handler: admin(a.listTags(func(ts []models.Tag) any { return tagsV0(ts) }))},
		{Name: "external_v0_whoami", Method: http.MethodGet, Path: v0 + "whoami", Handler: dev(http.HandlerFunc(whoami))},

		{Name: "external_v1_create_policies", Method: http.MethodPost, Path: v1 + "policies", Handler: create1},
		{Name: "external_v1_delete_policies", Method: http.MethodDelete, Path: v1 + "policies", Handler: delete1},
		{Name: "external_v1_delete_policies", Method: http.MethodPost, Path: v1 + "policies/delete", Handler: delete1},
		{Name: "external_v1_list_policies", Method: http.MethodGet, Path: v1 + "policies", Handler: dev(a.listPolicies(list1)), Query: api.FilterParams},
		{Name: "external_v1_tags", Method: http.MethodGet, Path: v1 + "tags", Handler: admin(a.listTags(func(ts []models.Tag) any { return tagsV1(ts) }))},
		{Name: "external_v1_whoami", Method: http.MethodGet, Path: v1 + "whoami", Handler: dev(http.HandlerFunc(whoami))},
	}
	if a.cc.Cleaner != nil {
		routes = append(routes,
			httpapi.Route{Name: "external_v0_cleanup_policies", Method: http.MethodPost, Path: v0 + "policies/cleanup", Handler: admin(a.cleanup("v0", list0))},
			httpapi.Route{Name: "external_v1_cleanup_policies", Method: http.MethodPost, Path: v1 + "policies/cleanup", Handler: admin(a.cleanup("v1", list1))})
	}
	return routes
}

// decoded policies of one request, or the status and message to refuse it with.
type decodeFunc func(r *http.Request) ([]models.Policy, int, error)

func (a *API) decodeV0(r *http.Request) ([]models.Policy, int, error) {
	return decodePolicies(r, a.maxPolicies, policyV0In.model)
}

func (a *API) decodeV1(r *http.Request) ([]models.Policy, int, error) {
	return decodePolicies(r, a.maxPolicies, policyV1In.model)
}

func decodePolicies[P any](r *http.Request, maxPolicies int, model func(P, string) (models.Policy, error)) ([]models.Policy, int, error) {
	var body struct {
		Policies *[]P `json:"policies"`
	}
	if status, err := httpapi.DecodeBody(r, &body); err != nil {
		return nil, status, err
	}
	if body.Policies == nil || len(*body.Policies) == 0 {
		return nil, http.StatusBadRequest, errors.New(`no policies given: the body must be {"policies":[...]} with at least one policy`)
	}
	in := *body.Policies
	if len(in) > maxPolicies {
		return nil, http.StatusBadRequest, fmt.Errorf("too many policies: %d in one request, at most %d are allowed; send them in batches", len(in), maxPolicies)
	}
	out := make([]models.Policy, len(in))
	for i, p := range in {
		m, err := model(p, fmt.Sprintf("policies[%d]", i))
		if err != nil {
			return nil, http.StatusBadRequest, err
		}
		out[i] = m
	}
	return out, 0, nil
}

// changePolicies serves a create or delete: decode, apply in one transaction, audit.
func (a *API) changePolicies(version string, decode decodeFunc, create bool, apply func(context.Context, []models.Policy) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		action := "create_policies"
		if r.Method == http.MethodDelete || strings.HasSuffix(r.URL.Path, "/delete") {
			action = "delete_policies"
		}
		policies, status, err := decode(r)
		if err != nil {
			audit(r, action, version, nil, status, err.Error())
			httpapi.WriteError(w, r, status, err.Error())
			return
		}
		if status, msg := a.checkWrite(r, policies, create); status != 0 {
			audit(r, action, version, policies, status, msg)
			httpapi.WriteError(w, r, status, msg)
			return
		}
		if err := apply(r.Context(), policies); err != nil {
			status, msg := api.StoreError(r, err)
			audit(r, action, version, policies, status, msg)
			httpapi.WriteError(w, r, status, msg)
			return
		}
		audit(r, action, version, policies, http.StatusOK, "")
		httpapi.WriteValue(w, r, http.StatusOK, struct{}{})
	})
}

// audit writes the line an operator greps for: who changed which policies, and how it
// ended. It is written for refused requests too.
func audit(r *http.Request, action, version string, policies []models.Policy, status int, errMsg string) {
	attrs := []slog.Attr{
		slog.String("action", action),
		slog.String("api", version),
		slog.Int("count", len(policies)),
		slog.Any("policies", policyStrings(policies)),
		slog.Int("status", status),
	}
	if c, ok := auth.FromContext(r.Context()); ok {
		as := "network.admin"
		if !auth.IsAdmin(c) {
			as = "space_developer"
		}
		attrs = append(attrs,
			slog.String("authorized_as", as),
			slog.String("user", c.Who()),
			slog.String("user_id", c.UserID),
			slog.String("client_id", c.ClientID),
		)
	}
	switch {
	case errMsg == "":
		attrs = append(attrs, slog.String("result", "ok"))
	case status >= 500:
		attrs = append(attrs, slog.String("result", "failed"), slog.String("error", errMsg))
	default:
		attrs = append(attrs, slog.String("result", "refused"), slog.String("error", errMsg))
	}
	httpapi.Logger(r.Context()).LogAttrs(r.Context(), slog.LevelInfo, "audit", attrs...)
}

// policyStrings renders policies compactly: "src -> dst tcp/8080" or ".../8080-8090".
func policyStrings(ps []models.Policy) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		ports := fmt.Sprint(p.Destination.Ports.Start)
		if p.Destination.Ports.End != p.Destination.Ports.Start {
			ports += fmt.Sprintf("-%d", p.Destination.Ports.End)
		}
		out[i] = fmt.Sprintf("%s -> %s %s/%s", p.Source.ID, p.Destination.ID, p.Destination.Protocol, ports)
	}
	return out
}

func (a *API) listTags(shape func([]models.Tag) any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts, err := a.store.Tags(r.Context())
		if err != nil {
			api.WriteStoreError(w, r, err)
			return
		}
		httpapi.WriteValue(w, r, http.StatusOK, shape(ts))
	})
}

func whoami(w http.ResponseWriter, r *http.Request) {
	c, _ := auth.FromContext(r.Context())
	scope := c.Scope
	if scope == nil {
		scope = []string{}
	}
	httpapi.WriteValue(w, r, http.StatusOK, apiwire.Whoami{UserName: c.Who(), UserID: c.UserID, ClientID: c.ClientID, Scope: scope})
}
