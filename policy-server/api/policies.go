// Package api holds the policy server's HTTP handlers, the middleware every request
// goes through (request id, logs, metrics, deadline) and the wire types of the
// internal API.
package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"netman/policy-server/policycache"
)

// PoliciesPath is where the v0 internal API lists policies.
const PoliciesPath = "/networking/v0/internal/policies"

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
	ids, all, err := ParseIDs(r.URL.RawQuery, h.maxIDs)
	if err != nil {
		WriteError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	if all {
		h.serveAll(w, r)
		return
	}
	ps, err := h.source.ByGroupIDs(r.Context(), ids)
	if err != nil {
		WriteStoreError(w, r, err)
		return
	}
	bp, _ := h.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	body := appendPolicies((*bp)[:0], len(ps), func(i int) *policycache.Policy { return ps[i] })
	writeJSON(w, http.StatusOK, body)
	// Keep buffers of ordinary polls for reuse, not the rare huge ones.
	if cap(body) <= 1<<20 {
		*bp = body
		h.bufs.Put(bp)
	}
}

func (h *InternalPolicies) serveAll(w http.ResponseWriter, r *http.Request) {
	ps, snap, err := h.source.All(r.Context())
	if err != nil {
		WriteStoreError(w, r, err)
		return
	}
	if snap == nil {
		writeJSON(w, http.StatusOK, appendPolicies(nil, len(ps), func(i int) *policycache.Policy { return &ps[i] }))
		return
	}
	// Every agent asking for everything gets the same bytes: encode once per snapshot.
	writeJSON(w, http.StatusOK, snap.Body(encodeSnapshot))
}

func encodeSnapshot(s *policycache.Snapshot) []byte {
	return appendPolicies(nil, len(s.Policies), func(i int) *policycache.Policy { return &s.Policies[i] })
}

// ParseIDs reads the id parameters of a query string. all is true when there is no
// id parameter. Every id parameter's value is split on commas; ids are trimmed, empty
// ones dropped and duplicates removed, keeping the first occurrence's order. More than
// max distinct ids is an error.
func ParseIDs(rawQuery string, max int) (ids []string, all bool, err error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		// Query() would drop the bad part silently, which could turn a filtered poll
		// into a list of everything.
		return nil, false, fmt.Errorf("invalid query string: %v", err)
	}
	values, ok := q["id"]
	if !ok {
		return nil, true, nil
	}
	seen := make(map[string]struct{})
	for _, v := range values {
		for id := range strings.SplitSeq(v, ",") {
			id = strings.TrimSpace(id)
			if id == "" {
				continue
			}
			if !utf8.ValidString(id) || strings.ContainsFunc(id, unicode.IsControl) {
				// No policy can name such an id (the store refuses it), so the answer
				// would be empty; refusing it answers the same whether the request is
				// served from the snapshot or the database.
				return nil, false, fmt.Errorf("id %q is not valid: ids are UTF-8 text without control characters", id)
			}
			if _, dup := seen[id]; dup {
				continue
			}
			if len(seen) == max {
				return nil, false, fmt.Errorf("too many ids: at most %d may be requested at once", max)
			}
			seen[id] = struct{}{}
			ids = append(ids, id)
		}
	}
	return ids, false, nil
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// WriteError writes {"error": msg} with status.
func WriteError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	b := append([]byte(`{"error":`), appendString(nil, msg)...)
	b = append(b, '}')
	if status >= 500 {
		Logger(r.Context()).Warn("request failed", "status", status, "error", msg)
	}
	writeJSON(w, status, b)
}
