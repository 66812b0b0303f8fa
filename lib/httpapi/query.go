package httpapi

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// checkQuery refuses a request whose query string does not parse or names a
// parameter outside allowed, before h runs. h reads the parsed query with Query: a
// poll's query holds thousands of bytes of ids, and parsing them once is a noticeable
// part of answering it.
func checkQuery(allowed []string, h http.Handler) http.Handler {
	accepts := "this route takes no query parameters"
	if len(allowed) > 0 {
		accepts = "this route accepts " + strings.Join(allowed, ", ")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery == "" {
			h.ServeHTTP(w, r)
			return
		}
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			// Query() would drop the bad part silently, which could turn a filtered
			// list into a list of everything.
			WriteError(w, r, http.StatusBadRequest, "invalid query string: "+err.Error())
			return
		}
		var unknown []string
		for name := range q {
			if !slices.Contains(allowed, name) {
				unknown = append(unknown, name)
			}
		}
		if len(unknown) > 0 {
			slices.Sort(unknown)
			WriteError(w, r, http.StatusBadRequest, "unknown query parameter "+quoteAll(unknown)+": "+accepts)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), queryKey{}, q)))
	})
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

type queryKey struct{}

// Query is r's parsed query string: the one the mux parsed to check it, or, for a
// handler served some other way, r.URL.RawQuery parsed now. An error means the query
// string does not parse (and Query() would have dropped the bad part silently).
func Query(r *http.Request) (url.Values, error) {
	if q, ok := r.Context().Value(queryKey{}).(url.Values); ok {
		return q, nil
	}
	return url.ParseQuery(r.URL.RawQuery)
}
