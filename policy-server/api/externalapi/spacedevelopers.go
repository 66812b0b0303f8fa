package externalapi

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"netman/lib/httpapi"
	"netman/lib/models"
	"netman/lib/uaatoken"
	"netman/policy-server/api"
	"netman/policy-server/auth"
)

// SpaceGuard decides for tokens without network.admin (auth.SpaceGuard).
type SpaceGuard interface {
	CheckWrite(ctx context.Context, c *uaatoken.Claims, policies []models.Policy, create bool) error
	VisibleApps(ctx context.Context, c *uaatoken.Claims) (map[string]bool, error)
}

// Cleaner deletes the policies of apps Cloud Controller no longer has (cleanup.Cleaner).
type Cleaner interface {
	DeleteStale(ctx context.Context) ([]models.Policy, error)
}

// CloudController is what the Cloud Controller integration gives the API; its zero
// value (no cc_url) keeps every route network.admin-only and leaves out cleanup.
type CloudController struct {
	Guard       SpaceGuard
	SelfService bool // enable_space_developer_self_service
	Cleaner     Cleaner
}

// unavailable is the 503 a space developer gets when CC cannot say who owns the apps.
const unavailable = "Cloud Controller is unavailable, so the apps' spaces cannot be checked; retry later (network.admin tokens do not need Cloud Controller)"

// spaceDeveloper returns the claims of a caller the guard decides for, or nil for an
// admin or a request without a token (the internal routes).
func spaceDeveloper(r *http.Request) *uaatoken.Claims {
	c, ok := auth.FromContext(r.Context())
	if !ok || auth.IsAdmin(c) {
		return nil
	}
	return c
}

// checkWrite asks the guard about a space developer's create or delete. It returns
// 0 when the request may go on, else the status and message it was refused with.
func (a *API) checkWrite(r *http.Request, policies []models.Policy, create bool) (int, string) {
	c := spaceDeveloper(r)
	if c == nil {
		return 0, ""
	}
	err := a.cc.Guard.CheckWrite(r.Context(), c, policies, create)
	var refusal *auth.Refusal
	switch {
	case err == nil:
		return 0, ""
	case errors.As(err, &refusal):
		return http.StatusForbidden, refusal.Reason
	default:
		httpapi.Logger(r.Context()).Error("checking a space developer's policies with Cloud Controller", "error", err)
		return http.StatusServiceUnavailable, unavailable
	}
}

// listForSpaceDeveloper lists what a space developer may see: the policies between
// apps of their spaces, of ids when given. ok is false when it answered already.
func (a *API) listForSpaceDeveloper(w http.ResponseWriter, r *http.Request, c *uaatoken.Claims, ids []string, all bool) ([]models.Policy, bool) {
	apps, err := a.cc.Guard.VisibleApps(r.Context(), c)
	var refusal *auth.Refusal
	switch {
	case errors.As(err, &refusal):
		audit(r, "list_policies", "", nil, http.StatusForbidden, refusal.Reason)
		httpapi.WriteError(w, r, http.StatusForbidden, refusal.Reason)
		return nil, false
	case err != nil:
		httpapi.Logger(r.Context()).Error("listing a space developer's apps with Cloud Controller", "error", err)
		audit(r, "list_policies", "", nil, http.StatusServiceUnavailable, unavailable)
		httpapi.WriteError(w, r, http.StatusServiceUnavailable, unavailable)
		return nil, false
	}
	if all {
		ids = ids[:0]
		for id := range apps {
			ids = append(ids, id)
		}
		slices.Sort(ids)
	}
	ps, err := a.store.ByGroupIDs(r.Context(), ids)
	if err != nil {
		api.WriteStoreError(w, r, err)
		return nil, false
	}
	ps = auth.Visible(ps, apps)
	audit(r, "list_policies", "", ps, http.StatusOK, "")
	return ps, true
}

// cleanup serves POST .../policies/cleanup: deletes the policies of apps CC no longer
// has and answers them, without tags, in the version's list shape.
func (a *API) cleanup(version string, shape func([]models.Policy) any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gone, err := a.cc.Cleaner.DeleteStale(r.Context())
		if err != nil {
			httpapi.Logger(r.Context()).Error("cleaning up stale policies", "error", err)
			msg := "cleaning up failed: Cloud Controller or the policy store is unavailable; nothing was deleted, retry later"
			audit(r, "cleanup_policies", version, nil, http.StatusServiceUnavailable, msg)
			httpapi.WriteError(w, r, http.StatusServiceUnavailable, msg)
			return
		}
		audit(r, "cleanup_policies", version, gone, http.StatusOK, "")
		httpapi.WriteValue(w, r, http.StatusOK, shape(gone))
	})
}
