package integration_test

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"netman/lib/apiwire"
	"netman/policy-server/api/apitest"
	"netman/policy-server/auth/authtest"
)

// What clients and monitors written for Cloud Foundry's policy server call besides the
// policy routes: the uptime routes, /health on every listener, the v0 spelling of
// policies_last_updated, and tokens sent without "Bearer ".
func TestCloudFoundryCompatibleRoutes(t *testing.T) {
	_, _, dsn := apitest.NewStore(t)
	key := authtest.NewKey(t, "key-1")
	s := startWith(t, certs(t), dsn, map[string]any{"uaa_key_file": key.PublicKeyFile(t)})
	external := fmt.Sprintf("http://127.0.0.1:%d", s.out.Port(t, "external", nil, time.Second))
	internal := fmt.Sprintf("https://127.0.0.1:%d", s.ports.internal)
	health := fmt.Sprintf("http://127.0.0.1:%d", s.ports.health)

	get := func(t *testing.T, c *http.Client, url, token string) (int, string, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}

	uptime := regexp.MustCompile(`^Network policy server, up for [0-9.hmµns]+\n$`)
	for _, url := range []string{external + "/", external + "/networking", health + "/"} {
		status, ct, body := get(t, http.DefaultClient, url, "")
		if status != 200 || !uptime.MatchString(body) || !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("GET %s: %d %q %q", url, status, ct, body)
		}
	}
	for _, c := range []struct {
		url    string
		client *http.Client
	}{{external, http.DefaultClient}, {internal, s.client}, {health, http.DefaultClient}} {
		status, _, body := get(t, c.client, c.url+"/health", "")
		if status != 200 || body != `{"status":"ok"}` {
			t.Errorf("GET %s/health: %d %s", c.url, status, body)
		}
	}

	// lastUpdated answers a policies_last_updated route's version and ETag. Given an
	// earlier answer's ETag it is a long poll: the server answers once the version has
	// moved past it, or 304 after the wait.
	lastUpdated := func(version, etag string) (string, string) {
		t.Helper()
		url := internal + "/networking/" + version + "/internal/policies_last_updated"
		if etag != "" {
			url += "?" + apiwire.WaitParam + "=5"
		}
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusNotModified {
			t.Fatalf("%s policies_last_updated: still at %s after a 5 s long poll", version, etag)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("%s policies_last_updated: %d %s", version, resp.StatusCode, body)
		}
		return string(body), resp.Header.Get("ETag")
	}
	before, etag := lastUpdated("v0", "")
	if etag == "" {
		t.Fatal("policies_last_updated answered without an ETag")
	}
	if v1, _ := lastUpdated("v1", ""); v1 != before {
		t.Fatalf("v0 says %s, v1 says %s", before, v1)
	}

	// A bare token, as Cloud Foundry's server accepts, creates a policy.
	req, _ := http.NewRequest(http.MethodPost, external+"/networking/v1/external/policies",
		strings.NewReader(`{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","ports":{"start":80,"end":80}}}]}`))
	req.Header.Set("Authorization", key.AdminToken(t))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("create with a bare token: %d", resp.StatusCode)
	}
	// The version comes from the replica's snapshot, which follows the commit within
	// milliseconds, not in the same instant: a long poll on the version before the
	// create answers once it has moved.
	after, _ := lastUpdated("v0", etag)
	if v1, _ := lastUpdated("v1", ""); after == before || v1 != after {
		t.Fatalf("after a create: v0 %s (was %s), v1 %s", after, before, v1)
	}
	if status, _, body := get(t, http.DefaultClient, external+"/networking/v0/external/policies?source_id=a", key.AdminToken(t)); status != 200 || !strings.Contains(body, `"total_policies":1`) {
		t.Fatalf("v0 list by source with a bare token: %d %s", status, body)
	}
}
