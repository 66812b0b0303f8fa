// Package httpapi is the toolkit of netman's JSON HTTP APIs: routes served through one
// mux with JSON 404 and 405 answers, the middleware every request passes (request id,
// logger, deadline, metrics, a log line) and JSON bodies and errors. It knows nothing of
// policies, so every server and the agent can use it.
package httpapi

import (
	"net/http"
	"slices"
	"strings"
)

// Route is one method and path of a server. Name labels its metrics and logs.
type Route struct {
	Name    string
	Method  string // GET routes also answer HEAD
	Path    string // an http.ServeMux path pattern, e.g. "/networking/v1/internal/tags/{id}"
	Handler http.Handler
	// Query lists the query parameters the route reads. Any other one is refused with
	// 400 naming it: a misspelt filter (?ids=, ?Id=) must not silently widen a list.
	Query []string
}

// NewMux serves routes through mw. An unknown path is a JSON 404; a known path with
// another method a JSON 405 with an Allow header; an unknown query parameter a JSON
// 400. Requests http.ServeMux would answer itself with a redirect or a plain-text body
// (unclean paths such as "//x", CONNECT, "*") get a JSON error instead.
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
			h := mw.Wrap(rt.Name, checkQuery(rt.Query, rt.Handler))
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
	notFound := mw.Wrap("not_found", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, r, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	}))
	mux.Handle("/", notFound)
	badTarget := mw.Wrap("bad_request", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect {
			WriteError(w, r, http.StatusMethodNotAllowed, "method CONNECT is not allowed: this is not a proxy")
			return
		}
		WriteError(w, r, http.StatusBadRequest, "request target "+r.RequestURI+" is not a path")
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.EscapedPath()
		switch {
		case r.Method == http.MethodConnect || !strings.HasPrefix(p, "/"):
			badTarget.ServeHTTP(w, r)
		case !isCleanPath(p):
			// ServeMux would redirect to the cleaned path; an API client is better
			// told that this path does not exist than sent elsewhere.
			notFound.ServeHTTP(w, r)
		default:
			mux.ServeHTTP(w, r)
		}
	})
}

// isCleanPath reports whether ServeMux would serve p as it is, without redirecting:
// no empty, "." or ".." segments (a trailing slash is fine).
func isCleanPath(p string) bool {
	segs := strings.Split(p[1:], "/")
	for i, s := range segs {
		if s == "." || s == ".." || (s == "" && i != len(segs)-1) {
			return false
		}
	}
	return true
}
