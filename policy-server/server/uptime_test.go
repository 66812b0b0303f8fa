package server_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"

	"netman/lib/httpapi"
	"netman/policy-server/server"
)

// The uptime routes answer as Cloud Foundry's policy server does: plain text with
// the time since start, on / and /networking (external) and / (health).
func TestUptime(t *testing.T) {
	ok := func(context.Context) error { return nil }
	mw := httpapi.Middleware{Server: "external", Logger: slog.New(slog.DiscardHandler)}
	start := time.Now().Add(-90 * time.Minute)
	external := httpapi.NewMux(mw, server.ExternalServerRoutes(start, ok))
	health := httpapi.NewMux(mw, server.HealthServerRoutes(start, ok))
	text := regexp.MustCompile(`^Network policy server, up for 1h30m[0-9.]+(s|ms|µs)\n$`)
	for _, tc := range []struct {
		h    http.Handler
		path string
		want int
	}{
		{external, "/", 200}, {external, "/networking", 200}, {external, "/health", 200},
		{health, "/", 200}, {health, "/networking", 404},
		{external, "/?x=1", 400}, {external, "/networking/", 404},
	} {
		rec := httptest.NewRecorder()
		tc.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if rec.Code != tc.want {
			t.Errorf("GET %s: %d %s, want %d", tc.path, rec.Code, rec.Body, tc.want)
			continue
		}
		if tc.want == 200 && tc.path != "/health" {
			if !text.MatchString(rec.Body.String()) || rec.Header().Get("Content-Type") != "text/plain; charset=utf-8" {
				t.Errorf("GET %s: %q (%s)", tc.path, rec.Body, rec.Header().Get("Content-Type"))
			}
		}
	}
}
