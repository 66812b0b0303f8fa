package ccclient_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"netman/internal/testsupport/ccstub"
	"netman/policy-server/ccclient"
)

// The Cloud Controller here is the ccstub stand-in: CC cannot run in tests.

func newClient(t *testing.T, cc *ccstub.CC, mod func(*ccclient.Options)) (*ccclient.Client, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	c := cc.Client(t, func(o *ccclient.Options) {
		o.Timeout, o.Attempts, o.Registerer = 10*time.Second, 3, reg
		if mod != nil {
			mod(o)
		}
	})
	return c, reg
}

func TestAppSpacesChunksAndSkipsUnknownApps(t *testing.T) {
	cc := ccstub.New(t)
	var ids []string
	for i := range 250 {
		id := fmt.Sprintf("app-%03d", i)
		ids = append(ids, id)
		if i%2 == 0 {
			cc.SetApp(id, fmt.Sprintf("space-%d", i%3))
		}
	}
	c, _ := newClient(t, cc, nil)
	got, err := c.AppSpaces(context.Background(), append(ids, ids[:10]...))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 125 {
		t.Fatalf("got %d apps, want the 125 CC has", len(got))
	}
	if got["app-004"] != "space-1" || got["app-006"] != "space-0" {
		t.Errorf("spaces wrong: app-004=%q app-006=%q", got["app-004"], got["app-006"])
	}
	if _, ok := got["app-001"]; ok {
		t.Error("app-001 is not in CC but was returned")
	}
	if n := cc.Requests("apps"); n != 3 {
		t.Errorf("250 distinct apps took %d requests, want 3 (chunks of 100)", n)
	}
	if n := cc.Requests("uaa_token"); n != 1 {
		t.Errorf("fetched %d tokens, want 1 (cached)", n)
	}
}

func TestSecurityGroupsPaginatesAndReportsLastUpdate(t *testing.T) {
	cc := ccstub.New(t)
	var groups []ccstub.SecurityGroup
	for i := range ccclient.SecurityGroupsPerPage + 7 {
		groups = append(groups, ccstub.SecurityGroup{
			GUID: fmt.Sprintf("sg-%05d", i), Name: fmt.Sprintf("group %d", i),
			Rules:         []ccstub.Rule{{Protocol: "tcp", Destination: "10.0.0.0/8", Ports: "443"}},
			RunningSpaces: []string{"space-a"}, RunningDefault: i == 0,
		})
	}
	cc.SetSecurityGroups(groups)
	c, _ := newClient(t, cc, nil)
	got, lastUpdate, err := c.SecurityGroups(context.Background(), latest(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(groups) || got[len(got)-1].GUID != "sg-05006" {
		t.Fatalf("got %d groups, want %d in CC's order", len(got), len(groups))
	}
	if !got[0].RunningDefault || got[1].RunningDefault || got[3].RunningSpaces[0] != "space-a" || got[3].Rules[0].Ports != "443" {
		t.Errorf("fields not decoded: %+v", got[:2])
	}
	if n := cc.Requests("security_groups"); n != 2 {
		t.Errorf("%d groups took %d page requests, want 2", len(groups), n)
	}
	want, err := c.LatestSecurityGroupUpdate(context.Background())
	if err != nil || !want.Equal(lastUpdate) || lastUpdate.IsZero() {
		t.Errorf("last_update %v, CC says %v (%v)", lastUpdate, want, err)
	}
}

// latest is CC's last_update now, as a sync reads it before listing.
func latest(t *testing.T, c *ccclient.Client) time.Time {
	t.Helper()
	at, err := c.LatestSecurityGroupUpdate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return at
}

func TestSecurityGroupsRelistsWhileCCChanges(t *testing.T) {
	cc := ccstub.New(t)
	cc.SetSecurityGroup(ccstub.SecurityGroup{GUID: "sg-1", Name: "one"})
	c, _ := newClient(t, cc, nil)

	cc.ChurnDuringListing(1)
	if got, _, err := c.SecurityGroups(context.Background(), latest(t, c)); err != nil || len(got) != 1 {
		t.Fatalf("one change during the listing: %v, %v; want a consistent second listing", got, err)
	}
	cc.ChurnDuringListing(10)
	if _, _, err := c.SecurityGroups(context.Background(), latest(t, c)); !errors.Is(err, ccclient.ErrUnstable) {
		t.Fatalf("constant churn: err = %v, want ErrUnstable", err)
	}
}

func TestRetriesWithBackoffAndCountsEveryAttempt(t *testing.T) {
	cc := ccstub.New(t)
	cc.SetApp("a", "s")
	c, reg := newClient(t, cc, nil)
	if _, err := c.AppSpaces(context.Background(), []string{"a"}); err != nil {
		t.Fatal(err) // takes the token first: the failures below hit /v3/apps
	}
	cc.Fail5xx(2)
	got, err := c.AppSpaces(context.Background(), []string{"a"})
	if err != nil || got["a"] != "s" {
		t.Fatalf("after two 502s: %v, %v; want the third attempt to succeed", got, err)
	}
	counter, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sawFailures, sawSuccesses float64
	for _, mf := range counter {
		if mf.GetName() != "netman_cc_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["endpoint"] == "apps" && labels["outcome"] == "502" {
				sawFailures += m.GetCounter().GetValue()
			}
			if labels["endpoint"] == "apps" && labels["outcome"] == "200" {
				sawSuccesses += m.GetCounter().GetValue()
			}
		}
	}
	if sawFailures != 2 || sawSuccesses != 2 {
		t.Errorf("metrics: %v failed and %v successful apps requests, want 2 and 2", sawFailures, sawSuccesses)
	}
	var timed bool
	for _, mf := range counter {
		timed = timed || mf.GetName() == "netman_cc_request_duration_seconds" && len(mf.GetMetric()) > 0
	}
	if !timed {
		t.Error("no request durations recorded")
	}
}

func TestUnavailable(t *testing.T) {
	cases := []struct {
		name  string
		setup func(cc *ccstub.CC)
	}{
		{"down", func(cc *ccstub.CC) { cc.SetDown(true) }},
		{"slow", func(cc *ccstub.CC) { cc.SetDelay(time.Second) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cc := ccstub.New(t)
			cc.SetApp("a", "s")
			tc.setup(cc)
			c, _ := newClient(t, cc, func(o *ccclient.Options) { o.Timeout = 100 * time.Millisecond })
			start := time.Now()
			_, err := c.AppSpaces(context.Background(), []string{"a"})
			if !errors.Is(err, ccclient.ErrUnavailable) {
				t.Fatalf("err = %v, want ErrUnavailable", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("gave up after %v; three attempts of 100ms should take well under 2s", d)
			}
		})
	}
}

func TestBadClientSecretIsUnavailableAndNotLogged(t *testing.T) {
	cc := ccstub.New(t)
	c, _ := newClient(t, cc, func(o *ccclient.Options) { o.ClientSecret = "wrong-secret" })
	_, err := c.AppSpaces(context.Background(), []string{"a"})
	if !errors.Is(err, ccclient.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), "wrong-secret") {
		t.Errorf("error shows the secret: %v", err)
	}
	if n := cc.Requests("uaa_token"); n != 1 {
		t.Errorf("a refused secret was tried %d times, want 1 (retrying cannot help)", n)
	}
}

func TestInternalAPIRequiresTheClientCertificate(t *testing.T) {
	cc := ccstub.New(t)
	if _, err := ccclient.New(ccclient.Options{
		URL: cc.URL, UAAURL: cc.UAAURL, ClientID: "x", ClientSecret: "y", InternalURL: cc.InternalURL,
	}); err == nil {
		t.Fatal("cc_internal_url without a client certificate was accepted")
	}
	// A client certificate of another CA: the handshake fails, CC is unavailable.
	other := ccstub.New(t)
	c, _ := newClient(t, cc, func(o *ccclient.Options) {
		o.InternalClientCertFile, o.InternalClientKeyFile = other.ClientCertFile, other.ClientKeyFile
		o.Attempts = 1
	})
	if _, err := c.LatestSecurityGroupUpdate(context.Background()); !errors.Is(err, ccclient.ErrUnavailable) {
		t.Fatalf("foreign client certificate: err = %v, want ErrUnavailable", err)
	}
}

func TestUserDeveloperSpacesAndTheirApps(t *testing.T) {
	cc := ccstub.New(t)
	cc.SetDeveloper("alice", "s1", "s2")
	cc.SetDeveloper("bob", "s3")
	cc.SetApp("a1", "s1")
	cc.SetApp("a2", "s2")
	cc.SetApp("b1", "s3")
	c, _ := newClient(t, cc, nil)
	spaces, err := c.UserDeveloperSpaces(context.Background(), "alice")
	if err != nil || strings.Join(spaces, ",") != "s1,s2" {
		t.Fatalf("alice's spaces: %v %v", spaces, err)
	}
	apps, err := c.AppsInSpaces(context.Background(), spaces)
	if err != nil || len(apps) != 2 {
		t.Fatalf("apps in s1,s2: %v %v", apps, err)
	}
	for _, a := range apps {
		if a == "b1" {
			t.Fatal("bob's app listed among alice's")
		}
	}
}
