package httpapi_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"netman/lib/httpapi"
)

// BenchmarkMiddleware is one poll through the middleware, as the internal API serves
// it: with the sampled access log (a line per client and minute), with a line for every
// request, and with no access line at all (the old debug-only logging at info level).
func BenchmarkMiddleware(b *testing.B) {
	for _, c := range []struct {
		name   string
		access *httpapi.AccessLog
		level  slog.Level
	}{
		{"sampled", httpapi.NewAccessLog(true), slog.LevelInfo},
		{"every-request", nil, slog.LevelInfo},
		{"no-line", nil, slog.LevelWarn},
	} {
		b.Run(c.name, func(b *testing.B) {
			mw := httpapi.Middleware{
				Server: "internal", Logger: slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: c.level})),
				Metrics: httpapi.NewMetrics(prometheus.NewRegistry()), Access: c.access,
			}
			h := mw.Wrap("policies_v0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "{}") }))
			req := httptest.NewRequest("GET", "/networking/v0/internal/policies?id=a", nil)
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(httptest.NewRecorder(), req)
			}
		})
	}
}
