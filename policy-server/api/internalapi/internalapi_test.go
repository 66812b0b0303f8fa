package internalapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"netman/lib/apiwire"
	"netman/lib/httpapi"
	"netman/lib/models"
	"netman/policy-server/api/apitest"
	"netman/policy-server/api/internalapi"
	"netman/policy-server/policycache"
	"netman/policy-server/store"
)

// fixture: a real store holding a few policies of every kind, behind a refreshed cache.
func fixture(t *testing.T, maxIDs int) (http.Handler, *bytes.Buffer, *prometheus.Registry) {
	t.Helper()
	st, _, _ := apitest.NewStore(t)
	apitest.Create(t, st,
		apitest.Policy("app-a", "app-b", "tcp", 8080, 8080),
		apitest.Policy("app-a", "app-c", "tcp", 9000, 9010),
		apitest.Policy("app-b", "app-a", "udp", 53, 53),
		apitest.Policy("app-c", "app-c", "tcp", 5555, 5555),
		apitest.Policy("app-d", "app-b", "tcp", 8080, 8080),
	)
	cache := policycache.New(st, policycache.Options{MaxAge: time.Hour, Encoding: internalapi.Encoding()})
	if err := cache.Refresh(apitest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	return mux(t, cache, maxIDs)
}

func mux(t testing.TB, source internalapi.PolicySource, maxIDs int) (http.Handler, *bytes.Buffer, *prometheus.Registry) {
	logs := &bytes.Buffer{}
	reg := prometheus.NewRegistry()
	mw := httpapi.Middleware{
		Server:  "internal",
		Logger:  slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics: httpapi.NewMetrics(reg),
		Timeout: 2 * time.Second,
	}
	return httpapi.NewMux(mw, internalapi.Routes(source, nil, maxIDs)), logs, reg
}

func do(h http.Handler, method, target string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

// pairs lists "src>dst/proto:port" for each policy of a response, in order.
func pairs(t *testing.T, body []byte) []string {
	t.Helper()
	var resp apiwire.InternalPoliciesV0
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	out := []string{}
	for _, p := range resp.Policies {
		out = append(out, fmt.Sprintf("%s>%s/%s:%d", p.Source.ID, p.Destination.ID, p.Destination.Protocol, p.Destination.Port))
	}
	return out
}

func TestPoliciesFilter(t *testing.T) {
	h, _, _ := fixture(t, 3)
	all := []string{
		"app-a>app-b/tcp:8080", "app-a>app-c/tcp:9000", "app-b>app-a/udp:53",
		"app-c>app-c/tcp:5555", "app-d>app-b/tcp:8080",
	}
	cases := []struct {
		name, query string
		want        []string
	}{
		{"no id parameter lists everything", "", all},
		{"empty id means none", "?id=", []string{}},
		{"only commas and spaces means none", "?id=,%20,,", []string{}},
		{"source or destination", "?id=app-a", []string{"app-a>app-b/tcp:8080", "app-a>app-c/tcp:9000", "app-b>app-a/udp:53"}},
		{"spaces and duplicates", "?id=%20app-a%20,app-a,,app-a", []string{"app-a>app-b/tcp:8080", "app-a>app-c/tcp:9000", "app-b>app-a/udp:53"}},
		{"a policy between two requested ids is listed once", "?id=app-a,app-b", []string{"app-a>app-b/tcp:8080", "app-a>app-c/tcp:9000", "app-b>app-a/udp:53", "app-d>app-b/tcp:8080"}},
		{"several id parameters are a union", "?id=app-d&id=app-c", []string{"app-a>app-c/tcp:9000", "app-c>app-c/tcp:5555", "app-d>app-b/tcp:8080"}},
		{"self policy once", "?id=app-c", []string{"app-a>app-c/tcp:9000", "app-c>app-c/tcp:5555"}},
		{"unknown id", "?id=nobody", []string{}},
		{"exactly the maximum of distinct ids", "?id=app-d,app-d,nobody,nobody2", []string{"app-d>app-b/tcp:8080"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := do(h, http.MethodGet, internalapi.PoliciesPath+tc.query)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			if got := pairs(t, rec.Body.Bytes()); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v\nwant %v", got, tc.want)
			}
			if len(tc.want) == 0 && rec.Body.String() != `{"policies":[]}` {
				t.Fatalf("empty answer is %s, want {\"policies\":[]}", rec.Body)
			}
		})
	}
	// Any other parameter is refused by name: a misspelt ?ids= must not list everything.
	for _, q := range []string{"?foo=bar", "?ids=app-a", "?id=app-a&Id=app-b"} {
		rec := do(h, http.MethodGet, internalapi.PoliciesPath+q)
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "unknown query parameter") {
			t.Errorf("%s: %d %s, want 400 naming the parameter", q, rec.Code, rec.Body)
		}
	}
}

// The exact bytes: field names as in the spec, tags, and ports only for a range.
func TestPoliciesWireFormat(t *testing.T) {
	h, _, _ := fixture(t, 10)
	rec := do(h, http.MethodGet, internalapi.PoliciesPath+"?id=app-c")
	var tags map[string]string = map[string]string{}
	var resp apiwire.InternalPoliciesV0
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	for _, p := range resp.Policies {
		tags[p.Source.ID], tags[p.Destination.ID] = p.Source.Tag, p.Destination.Tag
	}
	want := fmt.Sprintf(`{"policies":[`+
		`{"destination":{"id":"app-c","port":9000,"ports":{"start":9000,"end":9010},"protocol":"tcp","tag":"%[2]s"},"source":{"id":"app-a","tag":"%[1]s"}},`+
		`{"destination":{"id":"app-c","port":5555,"protocol":"tcp","tag":"%[2]s"},"source":{"id":"app-c","tag":"%[2]s"}}]}`,
		tags["app-a"], tags["app-c"])
	if rec.Body.String() != want {
		t.Fatalf("body\n%s\nwant\n%s", rec.Body, want)
	}
	for id, tag := range tags {
		if len(tag) != 4 || strings.ToUpper(tag) != tag || tag == "0000" {
			t.Errorf("tag of %s is %q, want 4 upper-case hex digits, not 0000", id, tag)
		}
	}
	if tags["app-a"] == tags["app-c"] {
		t.Errorf("two groups share tag %s", tags["app-a"])
	}
}

func TestPoliciesRefusals(t *testing.T) {
	h, _, _ := fixture(t, 3)
	cases := []struct {
		name, method, target string
		status               int
		errorPart            string
	}{
		{"too many ids", http.MethodGet, internalapi.PoliciesPath + "?id=a,b,c,d", http.StatusBadRequest, "too many ids"},
		{"too many ids over several parameters", http.MethodGet, internalapi.PoliciesPath + "?id=a,b&id=c&id=d", http.StatusBadRequest, "at most 3"},
		{"malformed query", http.MethodGet, internalapi.PoliciesPath + "?id=%zz", http.StatusBadRequest, "invalid query"},
		{"semicolon separator", http.MethodGet, internalapi.PoliciesPath + "?id=a;id=b", http.StatusBadRequest, "invalid query"},
		{"NUL in an id", http.MethodGet, internalapi.PoliciesPath + "?id=a%00b", http.StatusBadRequest, "not valid"},
		{"invalid UTF-8 in an id", http.MethodGet, internalapi.PoliciesPath + "?id=%FF", http.StatusBadRequest, "not valid"},
		{"POST", http.MethodPost, internalapi.PoliciesPath, http.StatusMethodNotAllowed, "GET"},
		{"DELETE", http.MethodDelete, internalapi.PoliciesPath, http.StatusMethodNotAllowed, "not allowed"},
		{"unknown path", http.MethodGet, "/networking/v0/internal/nothing", http.StatusNotFound, "no such endpoint"},
		{"trailing slash", http.MethodGet, internalapi.PoliciesPath + "/", http.StatusNotFound, "no such endpoint"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := do(h, tc.method, tc.target)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			var e apiwire.Error
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || !strings.Contains(e.Error, tc.errorPart) {
				t.Fatalf("body %s: want a JSON error containing %q", rec.Body, tc.errorPart)
			}
			if tc.status == http.StatusMethodNotAllowed && rec.Header().Get("Allow") != "GET, HEAD" {
				t.Fatalf("Allow %q", rec.Header().Get("Allow"))
			}
		})
	}
}

// failingStore is a policy store whose reads fail once broken is set: a database that
// is down, which the test's real database cannot be made to be for one test alone.
type failingStore struct {
	*store.Store
	broken atomic.Bool
}

func (f *failingStore) Snapshot(ctx context.Context) ([]models.Policy, int64, error) {
	if f.broken.Load() {
		return nil, 0, fmt.Errorf("loading: %w", store.ErrUnavailable)
	}
	return f.Store.Snapshot(ctx)
}

func (f *failingStore) Changes(ctx context.Context, since int64) (int64, []models.Change, bool, error) {
	if f.broken.Load() {
		return 0, nil, false, fmt.Errorf("reading changes: %w", store.ErrUnavailable)
	}
	return f.Store.Changes(ctx, since)
}

var readPaths = []string{
	internalapi.PoliciesPath, internalapi.PoliciesPath + "?id=app-a",
	apiwire.InternalPoliciesV1Path, apiwire.InternalPoliciesV1Path + "?id=app-a",
	apiwire.InternalLastUpdatedV0Path, apiwire.InternalLastUpdatedV1Path,
}

// TestDatabaseDown: while the database is down every read is answered from the last
// snapshot, marked unconfirmed, until the staleness limit; then, and when no snapshot
// was ever loaded, 503 with Retry-After and a JSON error.
func TestDatabaseDown(t *testing.T) {
	st, _, _ := apitest.NewStore(t)
	apitest.Create(t, st, apitest.Policy("app-a", "app-b", "tcp", 8080, 8080))
	fs := &failingStore{Store: st}
	const staleLimit = 2 * time.Second
	const maxAge = 100 * time.Millisecond
	cache := policycache.New(fs, policycache.Options{MaxAge: maxAge, StaleLimit: staleLimit, Encoding: internalapi.Encoding()})
	if err := cache.Refresh(apitest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	h, _, _ := mux(t, cache, 10)
	fs.broken.Store(true)
	_, confirmed := cache.Current()
	time.Sleep(maxAge - time.Since(confirmed)) // the age is a duration: wait it out
	for _, target := range readPaths {
		rec := do(h, http.MethodGet, target)
		_, confirmed := cache.Current()
		if time.Since(confirmed) >= staleLimit {
			t.Fatal("the reads took longer than the staleness limit; this test proves nothing")
		}
		if rec.Code != http.StatusOK || rec.Header().Get(apiwire.UnconfirmedHeader) == "" {
			t.Fatalf("%s with the database down, within the staleness limit: %d, %s %q", target, rec.Code,
				apiwire.UnconfirmedHeader, rec.Header().Get(apiwire.UnconfirmedHeader))
		}
	}
	_, confirmed = cache.Current()
	time.Sleep(staleLimit - time.Since(confirmed))
	unavailable := func(h http.Handler) {
		t.Helper()
		for _, target := range readPaths {
			rec := do(h, http.MethodGet, target)
			var e apiwire.Error
			if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" ||
				json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error == "" {
				t.Fatalf("%s: %d Retry-After %q %s; want 503, Retry-After and a JSON error", target, rec.Code, rec.Header().Get("Retry-After"), rec.Body)
			}
		}
	}
	unavailable(h)
	never := policycache.New(fs, policycache.Options{FallbackWait: 10 * time.Millisecond, Encoding: internalapi.Encoding()})
	h2, _, _ := mux(t, never, 10)
	unavailable(h2)
	fs.broken.Store(false)
	if rec := do(h, http.MethodGet, internalapi.PoliciesPath); rec.Code != http.StatusOK || rec.Header().Get(apiwire.UnconfirmedHeader) != "" {
		t.Fatalf("after the database came back: %d, %s %q", rec.Code, apiwire.UnconfirmedHeader, rec.Header().Get(apiwire.UnconfirmedHeader))
	}
}

func TestRequestIDsLogsAndMetrics(t *testing.T) {
	h, logs, reg := fixture(t, 10)
	cases := []struct {
		sent string
		kept bool
	}{
		{"", false},
		{"abc-123_X.y", true},
		{"bad id with spaces", false},
		{strings.Repeat("x", 65), false},
	}
	for _, tc := range cases {
		logs.Reset()
		req := httptest.NewRequest(http.MethodGet, internalapi.PoliciesPath+"?id=app-a", nil)
		if tc.sent != "" {
			req.Header.Set(httpapi.RequestIDHeader, tc.sent)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		id := rec.Header().Get(httpapi.RequestIDHeader)
		if id == "" || (id == tc.sent) != tc.kept {
			t.Errorf("sent %q, got request id %q", tc.sent, id)
		}
		var line struct {
			RequestID string `json:"request_id"`
			Status    int    `json:"status"`
			Route     string `json:"route"`
		}
		if err := json.Unmarshal(logs.Bytes(), &line); err != nil || line.RequestID != id || line.Status != 200 || line.Route != "policies_v0" {
			t.Errorf("log line %s: want request_id %s, status 200, route policies_v0", logs, id)
		}
	}
	do(h, http.MethodPost, internalapi.PoliciesPath)
	do(h, http.MethodGet, "/nowhere")
	for _, m := range []struct {
		route, status string
		want          float64
	}{
		{"policies_v0", "200", float64(len(cases))},
		{"policies_v0", "405", 1},
		{"not_found", "404", 1},
	} {
		expected := fmt.Sprintf(`netman_server_http_requests_total{route=%q,server="internal",status=%q} %v`, m.route, m.status, m.want)
		if !strings.Contains(gathered(t, reg), expected) {
			t.Errorf("metrics lack %s", expected)
		}
	}
	if want := `netman_server_http_request_duration_seconds_count{route="policies_v0",server="internal"} 5`; !strings.Contains(gathered(t, reg), want) {
		t.Errorf("metrics lack %s", want)
	}
}

func gathered(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

// The full list is encoded once per snapshot: a new snapshot must not serve the old bytes.
func TestFullListFollowsChanges(t *testing.T) {
	st, _, _ := apitest.NewStore(t)
	apitest.Create(t, st, apitest.Policy("app-a", "app-b", "tcp", 8080, 8080))
	cache := policycache.New(st, policycache.Options{MaxAge: time.Hour, Encoding: internalapi.Encoding()})
	h, _, _ := mux(t, cache, 10)
	want := []string{"app-a>app-b/tcp:8080"}
	for step := range 3 {
		if err := cache.Refresh(apitest.Ctx(t)); err != nil {
			t.Fatal(err)
		}
		for range 2 { // the second answer comes from the memo
			if got := pairs(t, do(h, http.MethodGet, internalapi.PoliciesPath).Body.Bytes()); !slices.Equal(got, want) {
				t.Fatalf("step %d: got %v, want %v", step, got, want)
			}
		}
		dst := fmt.Sprintf("app-z%d", step)
		apitest.Create(t, st, apitest.Policy("app-b", dst, "udp", 53, 53))
		want = append(want, "app-b>"+dst+"/udp:53")
	}
}
