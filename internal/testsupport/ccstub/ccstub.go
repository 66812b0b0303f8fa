// Package ccstub is a stand-in for Cloud Controller in tests, because Cloud Controller
// cannot run here. It implements only what netman calls, nothing else:
//
//   - public API (TLS, bearer token): GET /v3/apps, GET /v3/roles and
//     GET /v3/security_groups, with the query parameters netman sends (guids,
//     space_guids, user_guids, types, page, per_page) and the response shapes and
//     pagination of CC's published v3 API documentation (v3-apidocs.cloudfoundry.org):
//     {"pagination": {"total_results", "total_pages", "first", "last", "next",
//     "previous"}, "resources": [...]}, links as absolute {"href"} objects, "next" and
//     "previous" null at the ends, per_page 1..5000 (default 50) and a 400
//     CF-BadQueryParameter error otherwise, errors as {"errors": [{"code", "title",
//     "detail"}]};
//   - internal API (mutual TLS, the cc_internal client certificate): GET
//     /internal/v4/asg_latest_update, {"last_update": RFC 3339}, which is not in the
//     public docs; its shape is the one cf-networking's policy-server-asg-syncer reads;
//   - UAA's POST /oauth/token for grant_type=client_credentials with HTTP basic client
//     authentication, answering {"access_token", "token_type", "expires_in"}.
//
// The JSON is written here from the documentation, deliberately not with netman's own
// client types, so a mistake in those types shows up as a failing test.
//
// State (apps, space developer roles, security groups) is set by the test; failures
// (down, slow, a number of 5xx answers) are injected to test what a real CC does when
// it is overloaded or gone, which a test cannot make a real one do on demand.
package ccstub

import (
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"netman/lib/mutualtls/mutualtlstest"
	"netman/policy-server/ccclient"
)

// Client credentials the stand-in's UAA accepts.
const (
	ClientID     = "network-policy"
	ClientSecret = "stub-secret"
)

// Rule is one rule of a security group, with the fields of CC's v3 rule object.
type Rule struct {
	Protocol    string `json:"protocol"`
	Destination string `json:"destination"`
	Ports       string `json:"ports,omitempty"`
	Type        *int   `json:"type,omitempty"`
	Code        *int   `json:"code,omitempty"`
	Description string `json:"description,omitempty"`
	Log         bool   `json:"log,omitempty"`
}

// SecurityGroup is a CC security group as a test sets it.
type SecurityGroup struct {
	GUID           string
	Name           string
	Rules          []Rule
	RunningDefault bool // globally_enabled.running
	StagingDefault bool // globally_enabled.staging
	RunningSpaces  []string
	StagingSpaces  []string
}

// CC is a running stand-in. All three servers stop when the test ends.
type CC struct {
	URL         string // public API (cc_url)
	InternalURL string // internal mutual-TLS API (cc_internal_url)
	UAAURL      string // UAA's base URL

	CAFile         string // CA of all three servers' certificates
	ClientCertFile string // the cc_internal client certificate the internal API accepts
	ClientKeyFile  string

	mu         sync.Mutex
	apps       map[string]string          // app guid -> space guid
	developers map[string]map[string]bool // user guid -> space guids
	groups     []SecurityGroup            // in creation order, as CC lists them
	lastUpdate time.Time
	tokens     map[string]bool
	nextToken  int
	down       bool
	delay      time.Duration
	fail5xx    int
	churn      int

	requests sync.Map // endpoint name -> *atomic.Int64
}

// New starts the stand-in's servers on loopback.
func New(t testing.TB) *CC {
	t.Helper()
	dir := t.TempDir()
	ca := mutualtlstest.NewAuthority(t, "ccstub CA")
	cert := ca.IssueTLS(t, mutualtlstest.Leaf{
		CommonName: "cloud-controller-ng.service.cf.internal",
		DNSNames:   []string{"localhost"},
		IPs:        []net.IP{net.IPv4(127, 0, 0, 1)},
	})
	clientCert, clientKey := ca.Issue(t, mutualtlstest.Leaf{CommonName: "policy_server_asg_syncer_cc_client", Client: true})
	cc := &CC{
		CAFile:         writeFile(t, dir, "cc_ca.crt", ca.CertPEM),
		ClientCertFile: writeFile(t, dir, "cc_internal_client.crt", clientCert),
		ClientKeyFile:  writeFile(t, dir, "cc_internal_client.key", clientKey),
		apps:           map[string]string{},
		developers:     map[string]map[string]bool{},
		tokens:         map[string]bool{},
		lastUpdate:     time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	pool := ca.Pool()

	start := func(h http.Handler, clientAuth tls.ClientAuthType) string {
		srv := httptest.NewUnstartedServer(h)
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: clientAuth, ClientCAs: pool, MinVersion: tls.VersionTLS12}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv.URL
	}

	public := http.NewServeMux()
	public.HandleFunc("GET /v3/apps", cc.withToken("apps", cc.listApps))
	public.HandleFunc("GET /v3/roles", cc.withToken("roles", cc.listRoles))
	public.HandleFunc("GET /v3/security_groups", cc.withToken("security_groups", cc.listSecurityGroups))
	public.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, 10000, "CF-NotFound", "Unknown request")
	})
	cc.URL = start(public, tls.NoClientCert)

	internal := http.NewServeMux()
	internal.HandleFunc("GET /internal/v4/asg_latest_update", cc.gate("asg_latest_update", cc.latestUpdate))
	cc.InternalURL = start(internal, tls.RequireAndVerifyClientCert)

	uaa := http.NewServeMux()
	uaa.HandleFunc("POST /oauth/token", cc.gate("uaa_token", cc.issueToken))
	cc.UAAURL = start(uaa, tls.NoClientCert)
	return cc
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ClientOptions configure netman's client for this stand-in: every URL, CA and
// credential, with short backoffs so tests of failures stay fast.
func (cc *CC) ClientOptions() ccclient.Options {
	return ccclient.Options{
		URL: cc.URL, CACertFile: cc.CAFile,
		InternalURL: cc.InternalURL, InternalCACertFile: cc.CAFile,
		InternalClientCertFile: cc.ClientCertFile, InternalClientKeyFile: cc.ClientKeyFile,
		UAAURL: cc.UAAURL, UAACACertFile: cc.CAFile, ClientID: ClientID, ClientSecret: ClientSecret,
		Timeout: 5 * time.Second, Attempts: 2, Backoff: 5 * time.Millisecond,
	}
}

// Client is a client for this stand-in (ClientOptions), changed by mod when not nil.
func (cc *CC) Client(t testing.TB, mod func(*ccclient.Options)) *ccclient.Client {
	t.Helper()
	opts := cc.ClientOptions()
	if mod != nil {
		mod(&opts)
	}
	c, err := ccclient.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// SetApp creates or moves an app into a space.
func (cc *CC) SetApp(appGUID, spaceGUID string) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.apps[appGUID] = spaceGUID
}

// DeleteApp removes an app, as `cf delete` does.
func (cc *CC) DeleteApp(appGUID string) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	delete(cc.apps, appGUID)
}

// SetDeveloper gives a user the space_developer role in spaces.
func (cc *CC) SetDeveloper(userGUID string, spaceGUIDs ...string) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.developers[userGUID] == nil {
		cc.developers[userGUID] = map[string]bool{}
	}
	for _, s := range spaceGUIDs {
		cc.developers[userGUID][s] = true
	}
}

// SetSecurityGroup creates or replaces a security group (by GUID) and moves CC's
// last_update, as any change to security groups or their bindings does in CC.
func (cc *CC) SetSecurityGroup(g SecurityGroup) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	i := slices.IndexFunc(cc.groups, func(have SecurityGroup) bool { return have.GUID == g.GUID })
	if i >= 0 {
		cc.groups[i] = g
	} else {
		cc.groups = append(cc.groups, g)
	}
	cc.lastUpdate = cc.lastUpdate.Add(time.Second)
}

// SetSecurityGroups replaces all security groups at once.
func (cc *CC) SetSecurityGroups(gs []SecurityGroup) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.groups = slices.Clone(gs)
	cc.lastUpdate = cc.lastUpdate.Add(time.Second)
}

// DeleteSecurityGroup removes a security group.
func (cc *CC) DeleteSecurityGroup(guid string) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.groups = slices.DeleteFunc(cc.groups, func(g SecurityGroup) bool { return g.GUID == guid })
	cc.lastUpdate = cc.lastUpdate.Add(time.Second)
}

// SetDown makes every endpoint (UAA's included) answer 503, as a CC behind a gorouter
// with no healthy instance does.
func (cc *CC) SetDown(down bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.down = down
}

// SetDelay makes every answer wait d first (a slow CC).
func (cc *CC) SetDelay(d time.Duration) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.delay = d
}

// Fail5xx makes the next n requests answer 502.
func (cc *CC) Fail5xx(n int) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.fail5xx = n
}

// ChurnDuringListing makes the next n listings of security groups move last_update,
// as a change made by an operator while netman reads the pages does.
func (cc *CC) ChurnDuringListing(n int) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.churn = n
}

// Requests counts the requests an endpoint received ("apps", "roles",
// "security_groups", "asg_latest_update", "uaa_token"), failed ones included.
func (cc *CC) Requests(endpoint string) int64 {
	v, ok := cc.requests.Load(endpoint)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

func (cc *CC) count(endpoint string) {
	v, _ := cc.requests.LoadOrStore(endpoint, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// gate counts the request and applies the injected delay and failures.
func (cc *CC) gate(endpoint string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		cc.count(endpoint)
		cc.mu.Lock()
		delay, down := cc.delay, cc.down
		fail := cc.fail5xx > 0
		if fail {
			cc.fail5xx--
		}
		cc.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		switch {
		case down:
			writeError(w, http.StatusServiceUnavailable, 10015, "CF-ServiceUnavailable", "Service unavailable")
			return
		case fail:
			writeError(w, http.StatusBadGateway, 10001, "CF-BadGateway", "Bad gateway")
			return
		}
		h(w, r)
	}
}

// withToken is gate plus CC's bearer token check.
func (cc *CC) withToken(endpoint string, h http.HandlerFunc) http.HandlerFunc {
	return cc.gate(endpoint, func(w http.ResponseWriter, r *http.Request) {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		cc.mu.Lock()
		ok := strings.EqualFold(scheme, "bearer") && cc.tokens[token]
		cc.mu.Unlock()
		if !ok {
			writeError(w, http.StatusUnauthorized, 10002, "CF-NotAuthenticated", "Authentication error")
			return
		}
		h(w, r)
	})
}

func (cc *CC) issueToken(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"unsupported_grant_type","error_description":"only client_credentials"}`))
		return
	}
	if !ok || id != ClientID || subtle.ConstantTimeCompare([]byte(secret), []byte(ClientSecret)) != 1 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"unauthorized","error_description":"Bad credentials"}`))
		return
	}
	cc.mu.Lock()
	cc.nextToken++
	token := "stub-token-" + strconv.Itoa(cc.nextToken)
	cc.tokens[token] = true
	cc.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": token, "token_type": "bearer", "expires_in": 43199,
		"scope": "uaa.resource cloud_controller.admin_read_only", "jti": token,
	})
}

func (cc *CC) latestUpdate(w http.ResponseWriter, r *http.Request) {
	cc.mu.Lock()
	lu := cc.lastUpdate
	cc.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]string{"last_update": lu.UTC().Format(time.RFC3339)})
}

func (cc *CC) listApps(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cc.mu.Lock()
	var guids []string
	if s := q.Get("guids"); s != "" {
		guids = strings.Split(s, ",")
	} else {
		for g := range cc.apps {
			guids = append(guids, g)
		}
	}
	slices.Sort(guids)
	guids = slices.Compact(guids)
	var inSpaces map[string]bool
	if s := q.Get("space_guids"); s != "" {
		inSpaces = map[string]bool{}
		for _, sp := range strings.Split(s, ",") {
			inSpaces[sp] = true
		}
	}
	type app struct{ guid, space string }
	var found []app
	for _, g := range guids {
		if space, ok := cc.apps[g]; ok && (inSpaces == nil || inSpaces[space]) {
			found = append(found, app{g, space})
		}
	}
	cc.mu.Unlock()
	cc.paginate(w, r, len(found), func(i int) any {
		a := found[i]
		return map[string]any{
			"guid": a.guid, "name": "app-" + a.guid, "state": "STARTED",
			"created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
			"lifecycle":     map[string]any{"type": "buildpack", "data": map[string]any{"buildpacks": []string{}, "stack": "cflinuxfs4"}},
			"relationships": map[string]any{"space": map[string]any{"data": map[string]string{"guid": a.space}}},
			"links": map[string]any{
				"self":  map[string]string{"href": cc.URL + "/v3/apps/" + a.guid},
				"space": map[string]string{"href": cc.URL + "/v3/spaces/" + a.space},
			},
			"metadata": map[string]any{"labels": map[string]string{}, "annotations": map[string]string{}},
		}
	})
}

func (cc *CC) listRoles(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	filter := func(name string) map[string]bool {
		if q.Get(name) == "" {
			return nil
		}
		m := map[string]bool{}
		for _, v := range strings.Split(q.Get(name), ",") {
			m[v] = true
		}
		return m
	}
	users, spaces, types := filter("user_guids"), filter("space_guids"), filter("types")
	type role struct{ user, space string }
	var found []role
	cc.mu.Lock()
	if types == nil || types["space_developer"] {
		for user, ss := range cc.developers {
			if users != nil && !users[user] {
				continue
			}
			for s := range ss {
				if spaces == nil || spaces[s] {
					found = append(found, role{user, s})
				}
			}
		}
	}
	cc.mu.Unlock()
	slices.SortFunc(found, func(a, b role) int { return strings.Compare(a.user+"/"+a.space, b.user+"/"+b.space) })
	cc.paginate(w, r, len(found), func(i int) any {
		ro := found[i]
		guid := "role-" + ro.user + "-" + ro.space
		return map[string]any{
			"guid": guid, "type": "space_developer",
			"created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
			"relationships": map[string]any{
				"user":         map[string]any{"data": map[string]string{"guid": ro.user}},
				"space":        map[string]any{"data": map[string]string{"guid": ro.space}},
				"organization": map[string]any{"data": nil},
			},
			"links": map[string]any{
				"self":  map[string]string{"href": cc.URL + "/v3/roles/" + guid},
				"user":  map[string]string{"href": cc.URL + "/v3/users/" + ro.user},
				"space": map[string]string{"href": cc.URL + "/v3/spaces/" + ro.space},
			},
		}
	})
}

func (cc *CC) listSecurityGroups(w http.ResponseWriter, r *http.Request) {
	cc.mu.Lock()
	groups := slices.Clone(cc.groups)
	if cc.churn > 0 {
		cc.churn--
		cc.lastUpdate = cc.lastUpdate.Add(time.Second)
	}
	cc.mu.Unlock()
	cc.paginate(w, r, len(groups), func(i int) any {
		g := groups[i]
		rel := func(spaces []string) map[string]any {
			data := []map[string]string{}
			for _, s := range spaces {
				data = append(data, map[string]string{"guid": s})
			}
			return map[string]any{"data": data}
		}
		rules := g.Rules
		if rules == nil {
			rules = []Rule{}
		}
		return map[string]any{
			"guid": g.GUID, "name": g.Name,
			"created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
			"globally_enabled": map[string]bool{"running": g.RunningDefault, "staging": g.StagingDefault},
			"rules":            rules,
			"relationships":    map[string]any{"running_spaces": rel(g.RunningSpaces), "staging_spaces": rel(g.StagingSpaces)},
			"links":            map[string]any{"self": map[string]string{"href": cc.URL + "/v3/security_groups/" + g.GUID}},
		}
	})
}

// paginate writes page `page` of n resources (built by at) with CC's pagination block.
func (cc *CC) paginate(w http.ResponseWriter, r *http.Request, n int, at func(i int) any) {
	q := r.URL.Query()
	page, perPage := 1, 50
	if s := q.Get("page"); s != "" {
		p, err := strconv.Atoi(s)
		if err != nil || p < 1 {
			writeError(w, http.StatusBadRequest, 10005, "CF-BadQueryParameter", "The query parameter is invalid: Page must be a positive integer")
			return
		}
		page = p
	}
	if s := q.Get("per_page"); s != "" {
		p, err := strconv.Atoi(s)
		if err != nil || p < 1 || p > 5000 {
			writeError(w, http.StatusBadRequest, 10005, "CF-BadQueryParameter", "The query parameter is invalid: Per page must be between 1 and 5000")
			return
		}
		perPage = p
	}
	totalPages := max(1, (n+perPage-1)/perPage)
	link := func(p int) map[string]string {
		v := url.Values{}
		for k, vs := range q {
			v[k] = vs
		}
		v.Set("page", strconv.Itoa(p))
		v.Set("per_page", strconv.Itoa(perPage))
		return map[string]string{"href": cc.URL + r.URL.Path + "?" + v.Encode()}
	}
	var next, prev any
	if page < totalPages {
		next = link(page + 1)
	}
	if page > 1 {
		prev = link(page - 1)
	}
	resources := []any{}
	for i := (page - 1) * perPage; i < min(n, page*perPage); i++ {
		resources = append(resources, at(i))
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"pagination": map[string]any{
			"total_results": n, "total_pages": totalPages,
			"first": link(1), "last": link(totalPages), "next": next, "previous": prev,
		},
		"resources": resources,
	})
}

func writeError(w http.ResponseWriter, status, code int, title, detail string) {
	writeJSON(w, status, map[string]any{"errors": []map[string]any{{"code": code, "title": title, "detail": detail}}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, fmt.Appendf(nil, `{"errors":[{"detail":%q}]}`, err.Error())
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
