// Package api holds what the policy server's internal and external APIs share: the
// mapping of store failures to HTTP answers, the id filter and group id checks.
package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"netman/lib/httpapi"
	"netman/policy-server/store"
)

// StoreError maps a policy store failure to the status and message a client gets: 400
// with the store's reason for input it refused, 507 when tags ran out, 503 when the
// store is unavailable (it did not answer in time, refused or dropped the connection,
// cancelled the statement, is starting or shutting down: store.ErrUnavailable), 500
// otherwise. The cause of a 5xx is logged, never sent:
// database messages can name users and hosts.
func StoreError(r *http.Request, err error) (int, string) {
	var invalid *store.InvalidInputError
	switch {
	case errors.As(err, &invalid):
		return http.StatusBadRequest, invalid.Reason
	case errors.Is(err, store.ErrTagsExhausted):
		// 507: the request is fine, the server has no room left for new groups.
		detail := err.Error()
		if i := strings.Index(detail, store.ErrTagsExhausted.Error()); i >= 0 {
			detail = detail[i:] // drop the store's "creating policies: " context
		}
		return http.StatusInsufficientStorage, "tags ran out (" + detail +
			"): delete policies of groups no longer needed, or raise tag_length"
	case errors.Is(err, store.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded):
		httpapi.Logger(r.Context()).Error("policy store unavailable", "error", err)
		return http.StatusServiceUnavailable, "the policy database is unavailable; retry later"
	}
	httpapi.Logger(r.Context()).Error("policy store failed", "error", err)
	return http.StatusInternalServerError, "the policy store failed; see the server log"
}

// RetryAfter is the Retry-After of every 503: seconds a client should wait before
// trying again.
const RetryAfter = "2"

// WriteStoreError answers a request whose store call failed (see StoreError); a 503
// carries Retry-After.
func WriteStoreError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := StoreError(r, err)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", RetryAfter)
	}
	httpapi.WriteError(w, r, status, msg)
}
