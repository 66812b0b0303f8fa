package api

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Route is one method and path of a server. Name labels its metrics and logs.
type Route struct {
	Name    string
	Method  string // GET routes also answer HEAD
	Path    string // an http.ServeMux path pattern, e.g. "/networking/v1/internal/tags/{id}"
	Handler http.Handler
}

// InternalRoutes are the routes of the internal (mutual TLS) server for the v0 API.
// Later API versions append theirs before calling NewMux.
func InternalRoutes(policies http.Handler) []Route {
	return []Route{
		{Name: "policies_v0", Method: http.MethodGet, Path: PoliciesPath, Handler: policies},
	}
}

// NewMux serves routes through mw. An unknown path is a JSON 404; a known path with
// another method a JSON 405 with an Allow header.
func NewMux(mw Middleware, routes []Route) http.Handler {
	mux := http.NewServeMux()
	byPath := map[string][]Route{}
	var paths []string
	for _, rt := range routes {
		if _, ok := byPath[rt.Path]; !ok {
			paths = append(paths, rt.Path)
		}
		byPath[rt.Path] = append(byPath[rt.Path], rt)
	}
	for _, path := range paths {
		rs := byPath[path]
		handlers := map[string]http.Handler{}
		var allow []string
		for _, rt := range rs {
			h := mw.Wrap(rt.Name, rt.Handler)
			handlers[rt.Method] = h
			allow = append(allow, rt.Method)
			if rt.Method == http.MethodGet {
				handlers[http.MethodHead] = h
				allow = append(allow, http.MethodHead)
			}
		}
		slices.Sort(allow)
		allowHeader := strings.Join(slices.Compact(allow), ", ")
		notAllowed := mw.Wrap(rs[0].Name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allowHeader)
			WriteError(w, r, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed; use "+allowHeader)
		}))
		mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if h, ok := handlers[r.Method]; ok {
				h.ServeHTTP(w, r)
				return
			}
			notAllowed.ServeHTTP(w, r)
		}))
	}
	mux.Handle("/", mw.Wrap("not_found", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, r, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	})))
	return mux
}

// Health answers GET /health: 200 {"status":"ok"} when check passes within the
// request's deadline, else 503 with a JSON error.
func Health(check func(ctx context.Context) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := check(r.Context()); err != nil {
			Logger(r.Context()).Error("health check failed", "error", err)
			msg := "database unavailable"
			if errors.Is(err, context.DeadlineExceeded) {
				msg = "database did not answer in time"
			}
			WriteError(w, r, http.StatusServiceUnavailable, msg)
			return
		}
		writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
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
func HealthRoutes(check func(ctx context.Context) error) []Route {
	return []Route{{Name: "health", Method: http.MethodGet, Path: "/health", Handler: Health(check)}}
}

// DebugHandler serves /metrics from gatherer and the runtime profiles under
// /debug/pprof/. It listens on loopback only.
func DebugHandler(gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
