package internalapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"netman/lib/apiwire"
	"netman/lib/models"
	"netman/policy-server/api"
	"netman/policy-server/api/apitest"
	"netman/policy-server/api/internalapi"
	"netman/policy-server/policycache"
	"netman/policy-server/store"
)

type env struct {
	t     *testing.T
	st    *store.Store
	cache *policycache.Cache
	h     http.Handler
}

func newEnv(t *testing.T) *env {
	st, _, _ := apitest.NewStore(t)
	apitest.Create(t, st,
		apitest.Policy("app-a", "app-b", "tcp", 8080, 8080),
		apitest.Policy("app-c", "app-d", "tcp", 9000, 9010))
	cache := policycache.New(st, policycache.Options{MaxAge: time.Hour, Encoding: internalapi.Encoding()})
	e := &env{t: t, st: st, cache: cache}
	e.refresh()
	e.h, _, _ = mux(t, cache, 100)
	return e
}

func (e *env) refresh() {
	e.t.Helper()
	if err := e.cache.Refresh(apitest.Ctx(e.t)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) get(target string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec
}

// TestV1ListIsTheWireShape: the v1 list written from the encoded forms is exactly what
// encoding/json makes of apiwire.InternalPoliciesV1, filtered and in full.
func TestV1ListIsTheWireShape(t *testing.T) {
	e := newEnv(t)
	ctx := apitest.Ctx(t)
	for _, q := range []string{"", "?id=app-a", "?id=app-d,app-a", "?id=nobody"} {
		var ps []models.Policy
		var err error
		if q == "" {
			ps, err = e.st.All(ctx)
		} else {
			query, _ := url.ParseQuery(q[1:])
			ids, _, _ := api.ParseIDs(query, 100)
			ps, err = e.st.ByGroupIDs(ctx, ids)
		}
		if err != nil {
			t.Fatal(err)
		}
		want := apiwire.InternalPoliciesV1{TotalPolicies: len(ps), Policies: []apiwire.InternalPolicyV1{}}
		for _, p := range ps {
			want.Policies = append(want.Policies, apiwire.InternalPolicyV1{
				Source: apiwire.InternalSource{ID: p.Source.ID, Tag: p.Source.Tag},
				Destination: apiwire.InternalDestinationV1{ID: p.Destination.ID, Tag: p.Destination.Tag, Protocol: p.Destination.Protocol,
					Ports: apiwire.Ports{Start: p.Destination.Ports.Start, End: p.Destination.Ports.End}},
			})
		}
		wantBody, _ := json.Marshal(want)
		if rec := e.get(apiwire.InternalPoliciesV1Path + q); rec.Code != 200 || rec.Body.String() != string(wantBody) {
			t.Errorf("v1%s: %d\n got %s\nwant %s", q, rec.Code, rec.Body, wantBody)
		}
	}
}

// TestETagsAndNotModified: every read carries the snapshot version and an ETag; a
// request naming a current ETag gets 304; a change to other groups keeps a filtered
// answer's ETag, a change to its groups moves it; policies_last_updated is the
// snapshot's version.
func TestETagsAndNotModified(t *testing.T) {
	e := newEnv(t)
	filtered := internalapi.PoliciesPath + "?id=app-a"
	first := e.get(filtered)
	etag, version := first.Header().Get("ETag"), first.Header().Get(apiwire.VersionHeader)
	if first.Code != 200 || etag == "" || version == "" {
		t.Fatalf("first answer: %d ETag %q version %q", first.Code, etag, version)
	}
	for _, p := range []string{apiwire.InternalLastUpdatedV0Path, apiwire.InternalLastUpdatedV1Path} {
		if rec := e.get(p); rec.Body.String() != version || rec.Header().Get(apiwire.VersionHeader) != version {
			t.Errorf("%s = %s (header %s), want the snapshot version %s", p, rec.Body, rec.Header().Get(apiwire.VersionHeader), version)
		}
	}
	for _, inm := range []string{etag, "W/" + etag, `"1", ` + etag, "*"} {
		if rec := e.get(filtered, "If-None-Match", inm); rec.Code != http.StatusNotModified || rec.Body.Len() != 0 || rec.Header().Get("ETag") != etag {
			t.Errorf("If-None-Match %s: %d %q ETag %q, want 304 with the ETag", inm, rec.Code, rec.Body, rec.Header().Get("ETag"))
		}
	}
	if rec := e.get(filtered, "If-None-Match", `"0"`); rec.Code != 200 {
		t.Errorf("an older ETag: %d, want 200", rec.Code)
	}
	full := e.get(internalapi.PoliciesPath)
	fullTag := full.Header().Get("ETag")

	apitest.Create(t, e.st, apitest.Policy("app-c", "app-x", "udp", 53, 53)) // not app-a's
	e.refresh()
	rec := e.get(filtered, "If-None-Match", etag)
	if rec.Code != http.StatusNotModified || rec.Header().Get(apiwire.VersionHeader) == version {
		t.Errorf("after a change to other groups: %d, version %s (was %s); want 304 from the new version", rec.Code, rec.Header().Get(apiwire.VersionHeader), version)
	}
	if rec := e.get(internalapi.PoliciesPath, "If-None-Match", fullTag); rec.Code != 200 {
		t.Errorf("the full list after a change: %d, want 200", rec.Code)
	}
	apitest.Create(t, e.st, apitest.Policy("app-z", "app-a", "tcp", 1, 1))
	e.refresh()
	rec = e.get(filtered, "If-None-Match", etag)
	if rec.Code != 200 || rec.Header().Get("ETag") == etag || len(pairs(t, rec.Body.Bytes())) != 2 {
		t.Errorf("after a change to app-a: %d ETag %s (was %s) %s", rec.Code, rec.Header().Get("ETag"), etag, rec.Body)
	}
}

// TestLongPoll: a request with If-None-Match and wait is answered when its answer
// changes, not when other groups change, and 304 when the wait ends first.
func TestLongPoll(t *testing.T) {
	e := newEnv(t)
	filtered := internalapi.PoliciesPath + "?id=app-a"
	etag := e.get(filtered).Header().Get("ETag")

	start := time.Now()
	if rec := e.get(filtered+"&wait=0.2", "If-None-Match", etag); rec.Code != http.StatusNotModified || time.Since(start) < 200*time.Millisecond {
		t.Errorf("nothing changed: %d after %s, want 304 after the 0.2s wait", rec.Code, time.Since(start))
	}
	// The middleware's 2s deadline caps a longer wait.
	start = time.Now()
	if rec := e.get(filtered+"&wait=60", "If-None-Match", etag); rec.Code != http.StatusNotModified || time.Since(start) > 2*time.Second {
		t.Errorf("a wait past the request timeout: %d after %s, want 304 before the 2s timeout", rec.Code, time.Since(start))
	}

	answered := make(chan *httptest.ResponseRecorder, 1)
	go func() { answered <- e.get(filtered+"&wait=60", "If-None-Match", etag) }()
	// A change to other groups does not answer it; a change to app-a does, with the
	// version of that change.
	apitest.Create(t, e.st, apitest.Policy("app-c", "app-x", "udp", 53, 53))
	e.refresh()
	apitest.Create(t, e.st, apitest.Policy("app-a", "app-y", "tcp", 7, 7))
	e.refresh()
	want, _ := e.cache.Current()
	rec := <-answered
	if rec.Code != 200 || rec.Header().Get("ETag") != `"`+strconv.FormatInt(want.Version, 10)+`"` || len(pairs(t, rec.Body.Bytes())) != 2 {
		t.Fatalf("long poll: %d ETag %s %s; want 200 with ETag \"%d\" and app-a's two policies", rec.Code, rec.Header().Get("ETag"), rec.Body, want.Version)
	}
	if rec := e.get(filtered+"&wait=x", "If-None-Match", etag); rec.Code != http.StatusBadRequest {
		t.Errorf("wait=x: %d, want 400", rec.Code)
	}
}
