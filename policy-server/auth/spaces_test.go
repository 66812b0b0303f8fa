package auth_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"netman/internal/testsupport/ccstub"
	"netman/internal/testsupport/storetest"
	"netman/lib/models"
	"netman/lib/uaatoken"
	"netman/policy-server/auth"
	"netman/policy-server/auth/authtest"
	"netman/policy-server/ccclient"
	"netman/policy-server/store"
)

// Cloud Controller is the ccstub stand-in (it cannot run here); Postgres is real.

func tcp(src, dst string, port int) models.Policy {
	return models.Policy{Source: models.Source{ID: src}, Destination: models.Destination{ID: dst, Protocol: "tcp", Ports: models.Ports{Start: port, End: port}}}
}

func guardSetup(t *testing.T, quota int) (*ccstub.CC, *store.Store, *auth.SpaceGuard) {
	t.Helper()
	st, _, _ := storetest.Open(t, store.Options{})
	cc := ccstub.New(t)
	cli := cc.Client(t, func(o *ccclient.Options) { o.Timeout = time.Second })
	cc.SetDeveloper("dev-1", "space-a", "space-b")
	cc.SetDeveloper("dev-2", "space-c")
	for _, a := range []struct{ app, space string }{{"a1", "space-a"}, {"a2", "space-a"}, {"b1", "space-b"}, {"c1", "space-c"}} {
		cc.SetApp(a.app, a.space)
	}
	return cc, st, &auth.SpaceGuard{CC: cli, Policies: st, MaxPoliciesPerSource: quota}
}

func developer(id string) *uaatoken.Claims {
	c := authtest.Claims()
	c.Scope, c.UserID, c.UserName = []string{uaatoken.ScopeWrite}, id, id
	return c
}

func TestSpaceGuardCheckWrite(t *testing.T) {
	_, _, g := guardSetup(t, 10)
	ctx := context.Background()
	cases := []struct {
		name     string
		who      *uaatoken.Claims
		policies []models.Policy
		refusal  string // "" allowed
	}{
		{"same space", developer("dev-1"), []models.Policy{tcp("a1", "a2", 8080)}, ""},
		{"two spaces of the developer", developer("dev-1"), []models.Policy{tcp("a1", "b1", 8080)}, ""},
		{"destination in a foreign space", developer("dev-1"), []models.Policy{tcp("a1", "c1", 8080)}, "cannot be found or accessed: c1"},
		{"source in a foreign space", developer("dev-2"), []models.Policy{tcp("a1", "c1", 8080)}, "cannot be found or accessed: a1"},
		{"unknown app", developer("dev-1"), []models.Policy{tcp("a1", "nope", 8080)}, "cannot be found or accessed: nope"},
		{"client token", func() *uaatoken.Claims { c := developer(""); c.UserID = ""; return c }(), []models.Policy{tcp("a1", "a2", 80)}, "names no user"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := g.CheckWrite(ctx, tc.who, tc.policies, true)
			var refusal *auth.Refusal
			switch {
			case tc.refusal == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.refusal != "" && (!errors.As(err, &refusal) || !strings.Contains(refusal.Reason, tc.refusal)):
				t.Fatalf("err = %v, want a refusal containing %q", err, tc.refusal)
			}
		})
	}
}

func TestSpaceGuardQuota(t *testing.T) {
	_, st, g := guardSetup(t, 3)
	ctx := context.Background()
	dev := developer("dev-1")
	if err := st.Create(ctx, []models.Policy{tcp("a1", "a2", 1), tcp("a1", "a2", 2), tcp("b1", "a1", 3)}); err != nil {
		t.Fatal(err)
	}
	// a1 has 2 as a source (b1 -> a1 does not count): one more fits, repeats are free.
	if err := g.CheckWrite(ctx, dev, []models.Policy{tcp("a1", "b1", 3), tcp("a1", "a2", 1)}, true); err != nil {
		t.Fatalf("third policy refused: %v", err)
	}
	err := g.CheckWrite(ctx, dev, []models.Policy{tcp("a1", "b1", 3), tcp("a1", "b1", 4)}, true)
	var refusal *auth.Refusal
	if !errors.As(err, &refusal) || !strings.Contains(refusal.Reason, "policy quota exceeded: app a1 would be the source of 4 policies, at most 3") {
		t.Fatalf("fourth policy: %v", err)
	}
	// Deleting is never over quota.
	if err := g.CheckWrite(ctx, dev, []models.Policy{tcp("a1", "b1", 3), tcp("a1", "b1", 4)}, false); err != nil {
		t.Fatalf("delete refused: %v", err)
	}
}

func TestSpaceGuardCCDown(t *testing.T) {
	cc, _, g := guardSetup(t, 10)
	cc.SetDown(true)
	err := g.CheckWrite(context.Background(), developer("dev-1"), []models.Policy{tcp("a1", "a2", 8080)}, true)
	var refusal *auth.Refusal
	if errors.As(err, &refusal) || !errors.Is(err, ccclient.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable and no refusal", err)
	}
	if _, err := g.VisibleApps(context.Background(), developer("dev-1")); !errors.Is(err, ccclient.ErrUnavailable) {
		t.Fatalf("VisibleApps: %v", err)
	}
}

func TestSpaceGuardVisible(t *testing.T) {
	_, _, g := guardSetup(t, 10)
	apps, err := g.VisibleApps(context.Background(), developer("dev-1"))
	if err != nil {
		t.Fatal(err)
	}
	got := auth.Visible([]models.Policy{tcp("a1", "a2", 1), tcp("a1", "c1", 2), tcp("c1", "b1", 3), tcp("b1", "a2", 4)}, apps)
	if len(got) != 2 || got[0].Destination.Ports.Start != 1 || got[1].Destination.Ports.Start != 4 {
		t.Fatalf("visible: %v", got)
	}
}

func TestRequireWrite(t *testing.T) {
	key := authtest.NewKey(t, "k1")
	v, err := auth.New(auth.Options{KeyFile: key.PublicKeyFile(t)})
	if err != nil {
		t.Fatal(err)
	}
	tok := func(scopes ...string) string {
		c := authtest.Claims()
		c.Scope = scopes
		return key.Token(t, c)
	}
	cases := []struct {
		access auth.WriteAccess
		token  string
		status int
		msg    string
	}{
		{auth.WriteAccess{}, tok(uaatoken.ScopeWrite), 403, "needs a Cloud Controller integration"},
		{auth.WriteAccess{}, tok(uaatoken.ScopeAdmin), 200, ""},
		{auth.WriteAccess{SpaceDevelopers: true}, tok(uaatoken.ScopeWrite), 200, ""},
		{auth.WriteAccess{SpaceDevelopers: true}, tok("openid"), 403, "token lacks scope network.admin or network.write"},
		{auth.WriteAccess{SpaceDevelopers: true, SelfService: true}, tok("openid"), 200, ""},
	}
	for i, tc := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			h := v.RequireWrite(tc.access, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) }))
			req := httptest.NewRequest("GET", "/", nil)
			req.Header.Set("Authorization", "Bearer "+tc.token)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.msg) {
				t.Fatalf("%d %s, want %d with %q", rec.Code, rec.Body, tc.status, tc.msg)
			}
		})
	}
}

// BenchmarkSpaceDeveloperCreate measures what a space developer's create costs in
// Cloud Controller round trips (cc_requests/op, from the stand-in's counters) for
// requests naming 2, 100 and 1,000 apps, and the time of the check. The roles request
// runs beside the first apps request, so the round trips waited for are the apps
// requests: one per 100 apps.
func BenchmarkSpaceDeveloperCreate(b *testing.B) {
	for _, apps := range []int{2, 100, 1000} {
		b.Run(fmt.Sprintf("apps=%d", apps), func(b *testing.B) {
			st, _, _ := storetest.Open(b, store.Options{})
			cc := ccstub.New(b)
			cli := cc.Client(b, nil)
			g := &auth.SpaceGuard{CC: cli, Policies: st, MaxPoliciesPerSource: 150}
			cc.SetDeveloper("dev", "space")
			var policies []models.Policy
			for i := 0; i < apps; i += 2 {
				src, dst := fmt.Sprintf("app-%04d", i), fmt.Sprintf("app-%04d", i+1)
				cc.SetApp(src, "space")
				cc.SetApp(dst, "space")
				policies = append(policies, tcp(src, dst, 8080))
			}
			ctx := context.Background()
			if err := g.CheckWrite(ctx, developer("dev"), policies, true); err != nil { // token fetched here
				b.Fatal(err)
			}
			before := cc.Requests("apps") + cc.Requests("roles") + cc.Requests("uaa_token")
			b.ResetTimer()
			for range b.N {
				if err := g.CheckWrite(ctx, developer("dev"), policies, true); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			after := cc.Requests("apps") + cc.Requests("roles") + cc.Requests("uaa_token")
			b.ReportMetric(float64(after-before)/float64(b.N), "cc_requests/op")
		})
	}
}
