package integration_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"netman/internal/testsupport/freezeproxy"
	"netman/lib/apiwire"
	"netman/policy-server/api/apitest"
)

// TestHungDatabase: with the database hanging (the proxy between the server and
// Postgres stops forwarding, which is what a SIGSTOPped Postgres or a dead link looks
// like to the server), every request is answered within request_timeout_seconds: the
// internal API from the last snapshot, marked unconfirmed once the snapshot is older
// than its maximum age; the security groups (read from the database) and /health with
// 503 and Retry-After. Once the database answers
// again, everything is confirmed and healthy again.
func TestHungDatabase(t *testing.T) {
	st, _, dsn := apitest.NewStore(t)
	apitest.Create(t, st, apitest.Policy("app-a", "app-b", "tcp", 8080, 8080))
	proxy, viaProxy := freezeproxy.ForDSN(t, dsn)
	const timeout = 2 * time.Second
	s := startWith(t, certs(t), viaProxy, map[string]any{"request_timeout_seconds": 2})

	internal := func(path string) string { return fmt.Sprintf("https://127.0.0.1:%d%s", s.ports.internal, path) }
	health := fmt.Sprintf("http://127.0.0.1:%d/health", s.ports.health)
	get := func(client *http.Client, u string) (*http.Response, time.Duration) {
		t.Helper()
		start := time.Now()
		resp, err := client.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, time.Since(start)
	}
	reads := []string{
		internal(apiwire.InternalPoliciesV0Path + "?id=app-a"), internal(apiwire.InternalPoliciesV0Path),
		internal(apiwire.InternalPoliciesV1Path + "?id=app-a"), internal(apiwire.InternalLastUpdatedV0Path),
		internal(apiwire.InternalLastUpdatedV1Path),
	}
	if resp, _ := get(s.client, reads[0]); resp.StatusCode != 200 || resp.Header.Get(apiwire.UnconfirmedHeader) != "" {
		t.Fatalf("before the freeze: %d, unconfirmed %q", resp.StatusCode, resp.Header.Get(apiwire.UnconfirmedHeader))
	}

	proxy.Freeze()
	frozen := time.Now()
	sawUnconfirmed := false
	for time.Since(frozen) < 3*timeout {
		for _, u := range reads {
			resp, took := get(s.client, u)
			if took > timeout+500*time.Millisecond {
				t.Errorf("GET %s took %s with the database hanging (request timeout %s)", u, took, timeout)
			}
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s with the database hanging, within the staleness limit: %d", u, resp.StatusCode)
			}
			if resp.Header.Get(apiwire.UnconfirmedHeader) != "" {
				sawUnconfirmed = true
			}
		}
		// The security groups are read from the database on every request: a 503 with
		// Retry-After on time, not an answer after the driver gives up.
		resp, took := get(s.client, internal(apiwire.InternalSecurityGroupsV1Path))
		if took > timeout+500*time.Millisecond {
			t.Errorf("GET %s took %s with the database hanging (request timeout %s)", apiwire.InternalSecurityGroupsV1Path, took, timeout)
		}
		if time.Since(frozen) > timeout && (resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "") {
			t.Errorf("GET %s with the database hanging: %d, Retry-After %q; want 503 with Retry-After", apiwire.InternalSecurityGroupsV1Path, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		resp, took = get(http.DefaultClient, health)
		if took > timeout+500*time.Millisecond {
			t.Errorf("/health took %s with the database hanging", took)
		}
		if time.Since(frozen) > timeout && (resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "") {
			t.Errorf("/health with the database hanging: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	if !sawUnconfirmed {
		t.Errorf("no answer said the snapshot was unconfirmed %s into the freeze", time.Since(frozen))
	}

	proxy.Thaw()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, _ := get(s.client, reads[0])
		hresp, _ := get(http.DefaultClient, health)
		if resp.StatusCode == 200 && resp.Header.Get(apiwire.UnconfirmedHeader) == "" && hresp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after the thaw: internal %d unconfirmed %q, health %d", resp.StatusCode, resp.Header.Get(apiwire.UnconfirmedHeader), hresp.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
