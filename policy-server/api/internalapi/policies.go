// Package internalapi serves the policy server's internal API (mutual TLS, for
// enforcement agents): the v0 policy list the spec documents, answered from the policy
// cache, and the v1 routes (policy list, policies_last_updated, tags).
package internalapi

import (
	"context"
	"net/http"
	"sync"

	"netman/lib/apiwire"
	"netman/lib/httpapi"
	"netman/policy-server/api"
	"netman/policy-server/policycache"
)

// PoliciesPath is where the v0 internal API lists policies.
const PoliciesPath = apiwire.InternalPoliciesV0Path

// PolicySource answers the internal API's two questions.
type PolicySource interface {
	All(ctx context.Context) ([]policycache.Policy, *policycache.Snapshot, error)
	ByGroupIDs(ctx context.Context, ids []string) ([]*policycache.Policy, error)
}

// InternalPolicies serves GET /networking/v0/internal/policies[?id=a,b].
type InternalPolicies struct {
	source PolicySource
	maxIDs int
	bufs   sync.Pool
}

// NewInternalPolicies returns the handler. A request naming more than maxIDs distinct
// ids is refused with 400.
func NewInternalPolicies(source PolicySource, maxIDs int) *InternalPolicies {
	return &InternalPolicies{source: source, maxIDs: maxIDs}
}

func (h *InternalPolicies) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ids, all, err := api.ParseIDs(r.URL.RawQuery, h.maxIDs)
	if err != nil {
		httpapi.WriteError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	if all {
		h.serveAll(w, r)
		return
	}
	ps, err := h.source.ByGroupIDs(r.Context(), ids)
	if err != nil {
		api.WriteStoreError(w, r, err)
		return
	}
	bp, _ := h.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	body := appendPolicies((*bp)[:0], len(ps), func(i int) *policycache.Policy { return ps[i] })
	httpapi.WriteJSON(w, http.StatusOK, body)
	// Keep buffers of ordinary polls for reuse, not the rare huge ones.
	if cap(body) <= 1<<20 {
		*bp = body
		h.bufs.Put(bp)
	}
}

func (h *InternalPolicies) serveAll(w http.ResponseWriter, r *http.Request) {
	ps, snap, err := h.source.All(r.Context())
	if err != nil {
		api.WriteStoreError(w, r, err)
		return
	}
	if snap == nil {
		httpapi.WriteJSON(w, http.StatusOK, appendPolicies(nil, len(ps), func(i int) *policycache.Policy { return &ps[i] }))
		return
	}
	// Every agent asking for everything gets the same bytes: encode once per snapshot.
	httpapi.WriteJSON(w, http.StatusOK, snap.Body(encodeSnapshot))
}

func encodeSnapshot(s *policycache.Snapshot) []byte {
	return appendPolicies(nil, len(s.Policies), func(i int) *policycache.Policy { return &s.Policies[i] })
}
