package server

import (
	"context"
	"errors"
	"net/http"

	"netman/lib/httpapi"
	"netman/policy-server/api"
)

// Health answers GET /health: 200 {"status":"ok"} when check passes within the
// request's deadline, else 503 with a JSON error and Retry-After. check must return when
// its context ends, even if the database hangs (store.Ping does).
func Health(check func(ctx context.Context) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := check(r.Context()); err != nil {
			httpapi.Logger(r.Context()).Error("health check failed", "error", err)
			msg := "database unavailable"
			if errors.Is(err, context.DeadlineExceeded) {
				msg = "database did not answer in time"
			}
			w.Header().Set("Retry-After", api.RetryAfter)
			httpapi.WriteError(w, r, http.StatusServiceUnavailable, msg)
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
	})
}

// HealthRoutes are the routes of the health server.
func HealthRoutes(check func(ctx context.Context) error) []httpapi.Route {
	return []httpapi.Route{{Name: "health", Method: http.MethodGet, Path: "/health", Handler: Health(check)}}
}
