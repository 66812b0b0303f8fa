package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"netman/lib/httpapi"
)

// Uptime answers GET / and GET /networking as Cloud Foundry's policy server does, in
// plain text, so monitors and clients written for it keep working:
// "Network policy server, up for 1h2m3.5s\n".
func Uptime(start time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := fmt.Sprintf("Network policy server, up for %v\n", time.Since(start))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(body))
	})
}

// rootPath is the root alone; "/" would match every path.
const rootPath = "/{$}"

func uptimeRoute(start time.Time, path string) httpapi.Route {
	return httpapi.Route{Name: "uptime", Method: http.MethodGet, Path: path, Handler: Uptime(start)}
}

// ExternalServerRoutes are what the external server serves besides the external API:
// the uptime routes (GET / and GET /networking) and /health.
func ExternalServerRoutes(start time.Time, check func(ctx context.Context) error) []httpapi.Route {
	return append([]httpapi.Route{uptimeRoute(start, rootPath), uptimeRoute(start, "/networking")}, HealthRoutes(check)...)
}

// HealthServerRoutes are the routes of the health server: /health and, as on Cloud
// Foundry's health server, the uptime at GET /.
func HealthServerRoutes(start time.Time, check func(ctx context.Context) error) []httpapi.Route {
	return append(HealthRoutes(check), uptimeRoute(start, rootPath))
}
