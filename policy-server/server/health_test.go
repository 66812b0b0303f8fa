package server_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"netman/lib/httpapi"
	"netman/policy-server/api/apitest"
	"netman/policy-server/server"
)

func TestHealth(t *testing.T) {
	cases := []struct {
		name   string
		check  func(ctx context.Context) error
		status int
		body   string
	}{
		{"database answers", func(context.Context) error { return nil }, http.StatusOK, `{"status":"ok"}`},
		{"database refuses", func(context.Context) error { return errors.New("dial tcp: connection refused") }, http.StatusServiceUnavailable, `{"error":"database unavailable"}`},
		{"database hangs past the deadline", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, http.StatusServiceUnavailable, `{"error":"database did not answer in time"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mw := httpapi.Middleware{Server: "health", Logger: slog.New(slog.DiscardHandler), Timeout: 100 * time.Millisecond}
			h := httpapi.NewMux(mw, server.HealthRoutes(tc.check))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/health", nil))
			if rec.Code != tc.status || rec.Body.String() != tc.body {
				t.Fatalf("got %d %s, want %d %s", rec.Code, rec.Body, tc.status, tc.body)
			}
			if retry := rec.Header().Get("Retry-After"); (tc.status == http.StatusServiceUnavailable) != (retry != "") {
				t.Fatalf("status %d with Retry-After %q", rec.Code, retry)
			}
		})
	}
}

// TestHealthPingsTheStore: the check is the store's Ping, which answers on a live
// database and fails on a closed pool.
func TestHealthPingsTheStore(t *testing.T) {
	st, db, _ := apitest.NewStore(t)
	if err := st.Ping(apitest.Ctx(t)); err != nil {
		t.Fatalf("Ping on a live database: %v", err)
	}
	db.Close()
	if err := st.Ping(apitest.Ctx(t)); err == nil {
		t.Fatal("Ping on a closed pool succeeded")
	}
}
