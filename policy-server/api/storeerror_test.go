package api_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"netman/policy-server/api"
	"netman/policy-server/store"
)

// TestStoreErrors: what a client gets for each kind of store failure; every transient
// one is 503 with Retry-After, so agents and scripts can tell it from a permanent fault.
func TestStoreErrors(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		status int
	}{
		{"unavailable (57014, 57P03, refused, hung)", fmt.Errorf("creating policies: %w", store.ErrUnavailable), http.StatusServiceUnavailable},
		{"deadline", fmt.Errorf("listing: %w", context.DeadlineExceeded), http.StatusServiceUnavailable},
		{"tags exhausted", fmt.Errorf("creating policies: %w", store.ErrTagsExhausted), http.StatusInsufficientStorage},
		{"invalid input", &store.InvalidInputError{Reason: "ports must be between 1 and 65535"}, http.StatusBadRequest},
		{"anything else", errors.New("pq: relation \"policies\" does not exist"), http.StatusInternalServerError},
	}
	for _, tc := range cases {
		rec := httptest.NewRecorder()
		api.WriteStoreError(rec, httptest.NewRequest(http.MethodGet, "/", nil), tc.err)
		if rec.Code != tc.status {
			t.Errorf("%s: %d, want %d", tc.name, rec.Code, tc.status)
		}
		if retry := rec.Header().Get("Retry-After"); (tc.status == http.StatusServiceUnavailable) != (retry != "") {
			t.Errorf("%s: status %d with Retry-After %q", tc.name, rec.Code, retry)
		}
	}
}
