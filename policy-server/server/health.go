package server

import (
	"context"
	"database/sql"
	"errors"
	"net/http"

	"netman/lib/httpapi"
)

// Health answers GET /health: 200 {"status":"ok"} when check passes within the
// request's deadline, else 503 with a JSON error.
func Health(check func(ctx context.Context) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := check(r.Context()); err != nil {
			httpapi.Logger(r.Context()).Error("health check failed", "error", err)
			msg := "database unavailable"
			if errors.Is(err, context.DeadlineExceeded) {
				msg = "database did not answer in time"
			}
			httpapi.WriteError(w, r, http.StatusServiceUnavailable, msg)
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
	})
}

// SelectOne is the health check: one round trip through the pool.
func SelectOne(db *sql.DB) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		var one int
		return db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
	}
}

// HealthRoutes are the routes of the health server.
func HealthRoutes(check func(ctx context.Context) error) []httpapi.Route {
	return []httpapi.Route{{Name: "health", Method: http.MethodGet, Path: "/health", Handler: Health(check)}}
}
