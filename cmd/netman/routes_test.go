package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"netman/lib/apiwire"
	"netman/lib/mutualtls"
)

// call is one HTTP request to the running binary.
type call struct {
	method, path, body string
	status             int
	want               string // a substring of the response body
}

func (s *system) check(t *testing.T, c *http.Client, base, token string, calls []call) {
	t.Helper()
	for _, k := range calls {
		var body io.Reader
		if k.body != "" {
			body = strings.NewReader(k.body)
		}
		req, err := http.NewRequest(k.method, base+k.path, body)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", k.method, k.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != k.status || !strings.Contains(string(b), k.want) {
			t.Errorf("%s %s: %d %s\nwant %d with %q", k.method, k.path, resp.StatusCode, b, k.status, k.want)
		}
		if ct := resp.Header.Get("Content-Type"); len(b) > 0 && ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q", k.method, k.path, ct)
		}
	}
}

// eventually makes a GET on the internal API until its answer is k's. The internal API
// answers from a snapshot that follows the database within milliseconds, not within the
// write's own request, so a read right after a write may still see the version before
// it; each retry is a long poll that returns as soon as the answer moves.
func (s *system) eventually(t *testing.T, c *http.Client, base string, k call) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	etag := ""
	for {
		url := base + k.path
		if etag != "" {
			sep := "?"
			if strings.Contains(k.path, "?") {
				sep = "&"
			}
			url += sep + apiwire.WaitParam + "=1"
		}
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", k.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == k.status && strings.Contains(string(b), k.want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %s\nwant %d with %q within 10s", k.path, resp.StatusCode, b, k.status, k.want)
		}
		if e := resp.Header.Get("ETag"); e != "" {
			etag = e
		}
	}
}

func v1p(src, dst string, start, end int) string {
	return fmt.Sprintf(`{"source":{"id":%q},"destination":{"id":%q,"protocol":"tcp","ports":{"start":%d,"end":%d}}}`, src, dst, start, end)
}

func body(ps ...string) string { return `{"policies":[` + strings.Join(ps, ",") + `]}` }

// Every route of the external and internal APIs, through the real binary, with
// tag_length 1 so that tag exhaustion is reachable.
func TestEveryRouteOfTheServer(t *testing.T) {
	s := start(t, map[string]any{"tag_length": 1, "max_policies_per_request": 300})
	ext := http.DefaultClient
	tlsConfig, err := mutualtls.ClientConfig(s.certs.ClientCert, s.certs.ClientKey, s.certs.CACert)
	if err != nil {
		t.Fatal(err)
	}
	internal := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig}, Timeout: 30 * time.Second}

	v0 := `{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"udp","port":53}}]}`
	s.check(t, ext, s.api, s.token, []call{
		{"POST", "/networking/v0/external/policies", v0, 200, "{}"},
		{"POST", "/networking/v0/external/policies", v0, 200, "{}"},
		{"GET", "/networking/v0/external/policies", "", 200, `{"total_policies":1,"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"udp","port":53}}]}`},
		{"POST", "/networking/v1/external/policies", body(v1p("a", "c", 8080, 8090)), 200, "{}"},
		{"GET", "/networking/v0/external/policies?id=c", "", 200, `"port":8080,"ports":{"start":8080,"end":8090}`},
		{"GET", "/networking/v1/external/policies?id=a", "", 200, `"total_policies":2`},
		{"GET", "/networking/v1/external/policies?id=", "", 200, `{"total_policies":0,"policies":[]}`},
		{"GET", "/networking/v0/external/policies?id=a%00b", "", 400, "is not valid"},
		{"GET", "/networking/v1/external/policies?id=%FF", "", 400, "is not valid"},
		{"GET", "/networking/v0/external/tags", "", 200, `{"id":"a","tag":"01"}`},
		{"GET", "/networking/v1/external/tags", "", 200, `{"id":"a","type":"app","tag":"01"}`},
		{"GET", "/networking/v0/external/whoami", "", 200, `"user_name":"admin"`},
		{"GET", "/networking/v1/external/whoami", "", 200, `"scope":["network.admin"]`},
		{"DELETE", "/networking/v0/external/policies", v0, 200, "{}"},
		{"POST", "/networking/v0/external/policies/delete", v0, 200, "{}"},
		{"DELETE", "/networking/v1/external/policies", body(v1p("x", "y", 1, 1)), 200, "{}"},
		{"POST", "/networking/v1/external/policies/delete", body(v1p("a", "c", 8080, 8090)), 200, "{}"},
		{"GET", "/networking/v1/external/policies", "", 200, `{"total_policies":0,"policies":[]}`},
		{"POST", "/networking/v1/external/policies", body(v1p("a", "b", 0, 1)), 400, "ports.start 0 is outside 1-65535"},
		{"POST", "/networking/v1/external/policies", "{", 400, "not valid JSON"},
		{"PATCH", "/networking/v1/external/policies", "", 405, "is not allowed"},
		{"GET", "/networking/v2/external/policies", "", 404, "no such endpoint"},
	})
	s.check(t, ext, s.api, "", []call{{"GET", "/networking/v1/external/policies", "", 401, "missing bearer token"}})

	// Internal v1 over mutual TLS, once its snapshot has the deletes above.
	s.eventually(t, internal, s.internalURL, call{"GET", "/networking/v1/internal/policies", "", 200, `{"total_policies":0,"policies":[]}`})
	s.check(t, internal, s.internalURL, "", []call{
		{"PUT", "/networking/v1/internal/tags", `{"id":"router-1","type":"router"}`, 200, `{"id":"router-1","type":"router","tag":`},
		{"PUT", "/networking/v1/internal/tags", `{"id":"router-1","type":"router"}`, 200, `{"id":"router-1","type":"router","tag":`},
		{"PUT", "/networking/v1/internal/tags", `{"id":"","type":"router"}`, 400, "id must not be empty"},
		{"GET", "/networking/v1/internal/policies", "", 200, `{"total_policies":0,"policies":[]}`},
		{"GET", "/networking/v1/internal/policies?id=a%00b", "", 400, "is not valid"},
		{"GET", "/networking/v0/internal/policies?id=a%00b", "", 400, "is not valid"},
		{"GET", "/networking/v0/internal/policies?id=%FF", "", 400, "is not valid"},
	})
	if resp, err := http.Get(strings.Replace(s.internalURL, "https", "http", 1) + "/networking/v1/internal/policies"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("the internal server served plain HTTP")
		}
	}

	lastUpdated := func() int64 {
		resp, err := internal.Get(s.internalURL + "/networking/v1/internal/policies_last_updated")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v int64
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := lastUpdated()

	// Many clients create the same new ids at once: no errors, one tag per id.
	var wg sync.WaitGroup
	statuses := make([]int, 12)
	for i := range statuses {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", s.api+"/networking/v1/external/policies", strings.NewReader(body(v1p("web", "api", 443, 443), v1p("api", "db", 5432, 5432))))
			req.Header.Set("Authorization", "Bearer "+s.token)
			resp, err := ext.Do(req)
			if err == nil {
				statuses[i] = resp.StatusCode
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	for i, st := range statuses {
		if st != 200 {
			t.Fatalf("concurrent create %d: status %d", i, st)
		}
	}
	s.eventually(t, internal, s.internalURL, call{"GET", "/networking/v1/internal/policies?id=api", "", 200, `"total_policies":2`})
	if after := lastUpdated(); after <= before {
		t.Fatalf("policies_last_updated %d -> %d after creates", before, after)
	}

	// tag_length 1: 255 tags. 4 are used (router-1, web, api, db); a batch needing 252
	// more fails as a whole, one needing 251 fits.
	var many []string
	for i := range 126 {
		many = append(many, v1p(fmt.Sprintf("s%03d", i), fmt.Sprintf("d%03d", i), 80, 80))
	}
	s.check(t, ext, s.api, s.token, []call{
		{"POST", "/networking/v1/external/policies", body(many...), 507, "tags ran out"},
		{"GET", "/networking/v1/external/policies", "", 200, `"total_policies":2`},
		{"POST", "/networking/v1/external/policies", body(append(many[:125], v1p("s125", "web", 80, 80))...), 200, "{}"},
		{"POST", "/networking/v1/external/policies", body(v1p("one", "more", 1, 1)), 507, "tags ran out"},
		{"POST", "/networking/v1/external/policies", body(v1p("s000", "db", 1, 1)), 200, "{}"},
	})
	s.check(t, internal, s.internalURL, "", []call{{"PUT", "/networking/v1/internal/tags", `{"id":"late","type":"app"}`, 507, "tags ran out"}})

	// max_policies_per_request 300.
	var tooMany []string
	for i := range 301 {
		tooMany = append(tooMany, v1p("s000", "d000", i+1, i+1))
	}
	s.check(t, ext, s.api, s.token, []call{{"POST", "/networking/v1/external/policies", body(tooMany...), 400, "too many policies: 301 in one request, at most 300"}})
}
