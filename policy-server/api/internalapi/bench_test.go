package internalapi_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"netman/lib/httpapi"
	"netman/policy-server/api/apitest"
	"netman/policy-server/api/internalapi"
	"netman/policy-server/policycache"
	"netman/policy-server/store"
)

// benchHandler is the internal API's handler over a snapshot of 100,000 seeded
// policies (no TLS, no network: that is what policy-load measures).
func benchHandler(b *testing.B) (http.Handler, []string) {
	b.Helper()
	st, groups, _ := seededStore(b)
	routes, err := snapshotRoutes(apitest.Ctx(b), st)
	if err != nil {
		b.Fatal(err)
	}
	return benchMux(routes), groups
}

// seededStore is a store of 100,000 policies seeded with store.Seed, the ids of the
// groups they name and the DSN of its database.
func seededStore(b *testing.B) (*store.Store, []string, string) {
	b.Helper()
	st, db, dsn := apitest.NewStore(b)
	groups, err := store.Seed(apitest.Ctx(b), db, 100000, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		b.Fatal(err)
	}
	return st, groups, dsn
}

// snapshotRoutes are the v0 routes over a snapshot of everything st holds. The cache
// is loaded once and never checked again (MaxAge of an hour), so a benchmark measures
// the answers, not the reads.
func snapshotRoutes(ctx context.Context, st policycache.Store) ([]httpapi.Route, error) {
	cache := policycache.New(st, policycache.Options{MaxAge: time.Hour, Encoding: internalapi.Encoding()})
	if err := cache.Refresh(ctx); err != nil {
		return nil, fmt.Errorf("loading the snapshot: %w", err)
	}
	return internalapi.V0Routes(cache, 10000), nil
}

// benchMux serves routes the way the server does: through the mux and the middleware
// (request logs at debug level are off in production, and off here).
func benchMux(routes []httpapi.Route) http.Handler {
	mw := httpapi.Middleware{Server: "internal", Logger: slog.New(slog.DiscardHandler), Metrics: httpapi.NewMetrics(prometheus.NewRegistry()), Timeout: 5 * time.Second}
	return httpapi.NewMux(mw, routes)
}

// BenchmarkPoll100IDs compares a 100-id poll with a handler that only writes the same
// answer, encoded beforehand, behind the same mux and middleware: the ratio of the two
// is the internal API's own cost per poll (the target: at most 1.5x).
func BenchmarkPoll100IDs(b *testing.B) {
	h, groups := benchHandler(b)
	targets := poll100Targets(groups)
	pre, err := preEncodedRoute(h, internalapi.PoliciesPath, targets)
	if err != nil {
		b.Fatal(err)
	}
	preEncoded := benchMux([]httpapi.Route{pre})
	for _, c := range []struct {
		name string
		h    http.Handler
	}{{"snapshot", h}, {"pre-encoded", preEncoded}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				w := &discardWriter{header: http.Header{}}
				c.h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, targets[i%len(targets)], nil))
				if w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
			}
		})
	}
}

// poll100Targets are the 100-id polls of BenchmarkPoll100IDs and
// BenchmarkPoll100IDsServerCPU.
func poll100Targets(groups []string) []string { return pollTargets(groups, 256, 100, 3) }

// pollTargets are n request targets naming perPoll random ids of groups each, drawn
// from seed so every run asks the same.
func pollTargets(groups []string, n, perPoll int, seed uint64) []string {
	rng := rand.New(rand.NewPCG(seed, seed))
	targets := make([]string, n)
	for i := range targets {
		ids := make([]string, perPoll)
		for j := range ids {
			ids[j] = groups[rng.IntN(len(groups))]
		}
		targets[i] = internalapi.PoliciesPath + "?id=" + strings.Join(ids, ",")
	}
	return targets
}

// preEncodedRoute is the baseline of the 100-id poll benchmarks: a GET route at path
// that answers each of targets' queries with the bytes h answers that target with,
// encoded here once, so it costs only writing them. It picks the answer by the query
// alone, so it may serve at another path than the targets name.
func preEncodedRoute(h http.Handler, path string, targets []string) (httpapi.Route, error) {
	bodies := make(map[string][]byte, len(targets))
	for _, target := range targets {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
		if rec.Code != http.StatusOK {
			return httpapi.Route{}, fmt.Errorf("encoding the answers beforehand: a poll got status %d: %s", rec.Code, rec.Body)
		}
		_, query, _ := strings.Cut(target, "?")
		bodies[query] = rec.Body.Bytes()
	}
	return httpapi.Route{Name: "policies_v0", Method: http.MethodGet, Path: path,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			httpapi.WriteJSON(w, http.StatusOK, bodies[r.URL.RawQuery])
		}), Query: []string{"id"}}, nil
}

func BenchmarkInternalPolicies10IDsAt100k(b *testing.B) {
	h, groups := benchHandler(b)
	targets := pollTargets(groups, 1024, 10, 2)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, targets[i%len(targets)], nil))
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	}
}

func BenchmarkInternalPoliciesAllAt100k(b *testing.B) {
	h, _ := benchHandler(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w := &discardWriter{header: http.Header{}}
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, internalapi.PoliciesPath, nil))
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
		b.SetBytes(w.n)
	}
}

func BenchmarkSnapshotRebuildAt100k(b *testing.B) {
	st, db, _ := apitest.NewStore(b)
	if _, err := store.Seed(apitest.Ctx(b), db, 100000, rand.New(rand.NewPCG(1, 1))); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		// A new cache each time: Refresh then loads and indexes everything.
		if err := policycache.New(st, policycache.Options{Encoding: internalapi.Encoding()}).Refresh(apitest.Ctx(b)); err != nil {
			b.Fatal(err)
		}
	}
}

// discardWriter counts a response instead of keeping megabytes of it. It reads every
// byte once (into scratch), as a TLS connection does when it encrypts them, so that a
// handler whose body is not in the CPU's caches pays for that here as it would there.
type discardWriter struct {
	header  http.Header
	status  int
	n       int64
	scratch [32 << 10]byte
}

func (d *discardWriter) Header() http.Header { return d.header }
func (d *discardWriter) WriteHeader(s int)   { d.status = s }
func (d *discardWriter) Write(p []byte) (int, error) {
	if d.status == 0 {
		d.status = http.StatusOK
	}
	for rest := p; len(rest) > 0; {
		rest = rest[copy(d.scratch[:], rest):]
	}
	d.n += int64(len(p))
	return len(p), nil
}
