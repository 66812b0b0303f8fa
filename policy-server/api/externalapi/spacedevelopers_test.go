package externalapi_test

import (
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"netman/internal/testsupport/ccstub"
	"netman/internal/testsupport/storetest"
	"netman/internal/testsupport/syncbuf"
	"netman/lib/apiwire"
	"netman/lib/httpapi"
	"netman/lib/uaatoken"
	"netman/policy-server/api/externalapi"
	"netman/policy-server/auth"
	"netman/policy-server/auth/authtest"
	"netman/policy-server/ccclient"
	"netman/policy-server/cleanup"
	"netman/policy-server/store"
)

// Cloud Controller is the ccstub stand-in: it cannot run here. Postgres is real.

type ccServer struct {
	url   string
	cc    *ccstub.CC
	key   authtest.Key
	store *store.Store
	logs  *syncbuf.Buffer
}

func newCCServer(t *testing.T, quota int, selfService bool) *ccServer {
	t.Helper()
	st, _, _ := storetest.Open(t, store.Options{})
	cc := ccstub.New(t)
	cli := cc.Client(t, func(o *ccclient.Options) { o.Timeout = time.Second })
	key := authtest.NewKey(t, "k")
	verifier, err := auth.New(auth.Options{KeyFile: key.PublicKeyFile(t)})
	if err != nil {
		t.Fatal(err)
	}
	a, err := externalapi.New(externalapi.Options{Store: st, Verifier: verifier, CloudController: externalapi.CloudController{
		Guard:       &auth.SpaceGuard{CC: cli, Policies: st, MaxPoliciesPerSource: quota},
		SelfService: selfService,
		Cleaner:     &cleanup.Cleaner{CC: cli, Store: st},
	}})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	srv := httptest.NewServer(httpapi.NewMux(httpapi.Middleware{Server: "external", Logger: slog.New(slog.NewJSONHandler(logs, nil))}, a.ExternalRoutes()))
	t.Cleanup(srv.Close)

	cc.SetDeveloper("dev-1", "space-a")
	cc.SetDeveloper("dev-2", "space-b")
	for app, space := range map[string]string{"a1": "space-a", "a2": "space-a", "a3": "space-a", "b1": "space-b"} {
		cc.SetApp(app, space)
	}
	return &ccServer{url: srv.URL + "/networking/v1/external", cc: cc, key: key, store: st, logs: logs}
}

func (s *ccServer) token(t *testing.T, user string, scopes ...string) string {
	c := authtest.Claims()
	c.UserID, c.UserName, c.Subject, c.Scope = user, user, user, scopes
	return s.key.Token(t, c)
}

func TestSpaceDeveloperWrites(t *testing.T) {
	s := newCCServer(t, 2, false)
	dev := s.token(t, "dev-1", uaatoken.ScopeWrite)

	// Between two apps of their space: allowed.
	mustStatus(t, do(t, "POST", s.url+"/policies", dev, v1Body(v1Policy("a1", "a2", "tcp", 8080, 8080))), 200)
	// One app in a space they cannot write to: 403 with the reason.
	r := do(t, "POST", s.url+"/policies", dev, v1Body(v1Policy("a1", "b1", "tcp", 8080, 8080)))
	mustStatus(t, r, 403)
	if msg := r.errorText(t); !strings.Contains(msg, "cannot be found or accessed: b1") {
		t.Errorf("refusal %q does not name b1", msg)
	}
	// The quota (2 per source) holds; admins are not held to it.
	mustStatus(t, do(t, "POST", s.url+"/policies", dev, v1Body(v1Policy("a1", "a3", "tcp", 80, 80))), 200)
	r = do(t, "POST", s.url+"/policies", dev, v1Body(v1Policy("a1", "a3", "tcp", 81, 81)))
	mustStatus(t, r, 403)
	if msg := r.errorText(t); !strings.Contains(msg, "policy quota exceeded") {
		t.Errorf("quota refusal: %q", msg)
	}
	mustStatus(t, do(t, "POST", s.url+"/policies", s.key.AdminToken(t), v1Body(v1Policy("a1", "b1", "tcp", 81, 81))), 200)
	// Deleting a policy to a foreign app is refused too; their own works.
	mustStatus(t, do(t, "DELETE", s.url+"/policies", dev, v1Body(v1Policy("a1", "b1", "tcp", 81, 81))), 403)
	mustStatus(t, do(t, "DELETE", s.url+"/policies", dev, v1Body(v1Policy("a1", "a3", "tcp", 80, 80))), 200)

	// Lists show only policies between apps of their spaces.
	var list apiwire.PoliciesV1
	r = do(t, "GET", s.url+"/policies", dev, "")
	mustStatus(t, r, 200)
	if err := json.Unmarshal([]byte(r.body), &list); err != nil || list.TotalPolicies != 1 || list.Policies[0].Destination.ID != "a2" {
		t.Fatalf("developer's list: %s", r.body)
	}
	r = do(t, "GET", s.url+"/policies?id=b1", dev, "")
	if mustStatus(t, r, 200); !strings.Contains(r.body, `"total_policies":0`) {
		t.Fatalf("filtered by a foreign app: %s", r.body)
	}
	r = do(t, "GET", s.url+"/policies", s.key.AdminToken(t), "")
	if mustStatus(t, r, 200); !strings.Contains(r.body, `"total_policies":2`) {
		t.Fatalf("admin's list: %s", r.body)
	}
	// Another developer sees none of them.
	r = do(t, "GET", s.url+"/policies", s.token(t, "dev-2", uaatoken.ScopeWrite), "")
	if mustStatus(t, r, 200); !strings.Contains(r.body, `"total_policies":0`) {
		t.Fatalf("dev-2's list: %s", r.body)
	}

	// Every decision is in the audit log, with who decided it how.
	logs := s.logs.String()
	for _, want := range []string{`"authorized_as":"space_developer"`, `"result":"refused"`, `"policy quota exceeded`, `"action":"list_policies"`, `"authorized_as":"network.admin"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("audit log lacks %s", want)
		}
	}
	// Tags stay admin-only.
	mustStatus(t, do(t, "GET", s.url+"/tags", dev, ""), 403)
}

func TestSelfServiceNeedsNoScope(t *testing.T) {
	s := newCCServer(t, 10, true)
	mustStatus(t, do(t, "POST", s.url+"/policies", s.token(t, "dev-1", "openid"), v1Body(v1Policy("a1", "a2", "tcp", 8080, 8080))), 200)
	mustStatus(t, do(t, "POST", s.url+"/policies", s.token(t, "dev-1", "openid"), v1Body(v1Policy("a1", "b1", "tcp", 8080, 8080))), 403)
	s2 := newCCServer(t, 10, false)
	mustStatus(t, do(t, "POST", s2.url+"/policies", s2.token(t, "dev-1", "openid"), v1Body(v1Policy("a1", "a2", "tcp", 8080, 8080))), 403)
}

func TestCCDownSpaceDevelopersGet503AdminsWork(t *testing.T) {
	s := newCCServer(t, 10, false)
	dev := s.token(t, "dev-1", uaatoken.ScopeWrite)
	mustStatus(t, do(t, "POST", s.url+"/policies", dev, v1Body(v1Policy("a1", "a2", "tcp", 8080, 8080))), 200)
	s.cc.SetDown(true)
	r := do(t, "POST", s.url+"/policies", dev, v1Body(v1Policy("a2", "a1", "tcp", 8080, 8080)))
	mustStatus(t, r, 503)
	if msg := r.errorText(t); !strings.Contains(msg, "Cloud Controller is unavailable") {
		t.Errorf("503 message %q", msg)
	}
	mustStatus(t, do(t, "GET", s.url+"/policies", dev, ""), 503)
	admin := s.key.AdminToken(t)
	mustStatus(t, do(t, "POST", s.url+"/policies", admin, v1Body(v1Policy("a2", "a1", "tcp", 8080, 8080))), 200)
	r = do(t, "GET", s.url+"/policies", admin, "")
	if mustStatus(t, r, 200); !strings.Contains(r.body, `"total_policies":2`) {
		t.Fatalf("admin list with CC down: %s", r.body)
	}
	// Slow instead of down: the same, once the attempts time out.
	s.cc.SetDown(false)
	s.cc.SetDelay(3 * time.Second)
	mustStatus(t, do(t, "DELETE", s.url+"/policies", dev, v1Body(v1Policy("a1", "a2", "tcp", 8080, 8080))), 503)
	mustStatus(t, do(t, "DELETE", s.url+"/policies", admin, v1Body(v1Policy("a1", "a2", "tcp", 8080, 8080))), 200)
}

func TestCleanupRoute(t *testing.T) {
	s := newCCServer(t, 10, false)
	admin := s.key.AdminToken(t)
	mustStatus(t, do(t, "POST", s.url+"/policies", admin, v1Body(v1Policy("a1", "a2", "tcp", 8080, 8080), v1Policy("a2", "a3", "tcp", 8080, 8080))), 200)
	s.cc.DeleteApp("a3")
	mustStatus(t, do(t, "POST", s.url+"/policies/cleanup", s.token(t, "dev-1", uaatoken.ScopeWrite), ""), 403)
	r := do(t, "POST", s.url+"/policies/cleanup", admin, "")
	mustStatus(t, r, 200)
	var gone apiwire.PoliciesV1
	if err := json.Unmarshal([]byte(r.body), &gone); err != nil || gone.TotalPolicies != 1 || gone.Policies[0].Destination.ID != "a3" {
		t.Fatalf("cleanup answered %s", r.body)
	}
	if strings.Contains(r.body, `"tag"`) {
		t.Errorf("cleanup answer carries tags: %s", r.body)
	}
	r = do(t, "GET", s.url+"/policies", admin, "")
	if mustStatus(t, r, 200); !strings.Contains(r.body, `"total_policies":1`) {
		t.Fatalf("after cleanup: %s", r.body)
	}
	s.cc.SetDown(true)
	mustStatus(t, do(t, "POST", s.url+"/policies/cleanup", admin, ""), 503)
}
