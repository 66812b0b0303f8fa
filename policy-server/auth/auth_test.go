package auth_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"netman/lib/uaatoken"
	"netman/policy-server/auth"
	"netman/policy-server/auth/authtest"
)

// call sends a request with the given Authorization header through Require and reports
// what the caller sees.
func call(t *testing.T, v *auth.Verifier, authorization string) (int, string, string) {
	t.Helper()
	h := v.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := auth.FromContext(r.Context())
		if !ok {
			t.Error("handler ran without claims in its context")
			return
		}
		_, _ = w.Write([]byte("hello " + c.Who()))
	}))
	req := httptest.NewRequest(http.MethodGet, "/networking/v1/external/policies", nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Header().Get("WWW-Authenticate"), rec.Body.String()
}

func newVerifier(t *testing.T, opts auth.Options) *auth.Verifier {
	t.Helper()
	v, err := auth.New(opts)
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	return v
}

func errorText(t *testing.T, body string) string {
	t.Helper()
	var e struct{ Error string }
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
		t.Fatalf("body %q is not a JSON error", body)
	}
	return e.Error
}

func TestRequire(t *testing.T) {
	key := authtest.NewKey(t, "key-1")
	other := authtest.NewKey(t, "key-1") // same kid, different key: a forgery
	uaa := authtest.NewUAA(t, key)

	verifiers := map[string]*auth.Verifier{
		"jwks": newVerifier(t, auth.Options{
			UAAURL: uaa.URL, UAACAFile: uaa.CAFile,
			Issuer: authtest.Issuer, Audience: authtest.Audience,
		}),
		"pem file": newVerifier(t, auth.Options{
			KeyFile: key.PublicKeyFile(t),
			Issuer:  authtest.Issuer, Audience: authtest.Audience,
		}),
	}

	with := func(change func(c *uaatoken.Claims)) string {
		c := authtest.Claims()
		change(c)
		return "Bearer " + key.Token(t, c)
	}
	past := jwt.NewNumericDate(time.Now().Add(-time.Minute))
	future := jwt.NewNumericDate(time.Now().Add(time.Hour))

	// HS256 signed with the public key's PEM as the secret: the classic confusion attack.
	pubPEM := []byte(readFile(t, key.PublicKeyFile(t)))
	hs, err := jwt.NewWithClaims(jwt.SigningMethodHS256, authtest.Claims()).SignedString(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, authtest.Claims()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name          string
		authorization string
		status        int
		errContains   string
	}{
		{"valid admin token", "Bearer " + key.AdminToken(t), http.StatusOK, ""},
		{"scheme is case-insensitive", "bearer " + key.AdminToken(t), http.StatusOK, ""},
		{"bare token, as Cloud Foundry accepts", key.AdminToken(t), http.StatusOK, ""},
		{"bare garbage", "not.a.jwt", http.StatusUnauthorized, "malformed"},
		{"no header", "", http.StatusUnauthorized, "missing bearer token"},
		{"basic auth", "Basic YWRtaW46YWRtaW4=", http.StatusUnauthorized, "missing bearer token"},
		{"empty bearer", "Bearer ", http.StatusUnauthorized, "missing bearer token"},
		{"scheme alone", "bearer", http.StatusUnauthorized, "missing bearer token"},
		{"garbage", "Bearer not.a.jwt", http.StatusUnauthorized, "malformed"},
		{"expired", with(func(c *uaatoken.Claims) { c.ExpiresAt = past }), http.StatusUnauthorized, "expired"},
		{"no expiry", with(func(c *uaatoken.Claims) { c.ExpiresAt = nil }), http.StatusUnauthorized, "required claim"},
		{"not yet valid", with(func(c *uaatoken.Claims) { c.NotBefore = future }), http.StatusUnauthorized, "not valid yet"},
		{"wrong issuer", with(func(c *uaatoken.Claims) { c.Issuer = "https://evil.example/oauth/token" }), http.StatusUnauthorized, "issuer"},
		{"wrong audience", with(func(c *uaatoken.Claims) { c.Audience = jwt.ClaimStrings{"cloud_controller"} }), http.StatusUnauthorized, "audience"},
		{"signed by another key", "Bearer " + other.AdminToken(t), http.StatusUnauthorized, "signature is invalid"},
		{"HS256 with the public key as secret", "Bearer " + hs, http.StatusUnauthorized, "signing method HS256 is invalid"},
		{"alg none", "Bearer " + none, http.StatusUnauthorized, "signing method none is invalid"},
		{"no scopes", with(func(c *uaatoken.Claims) { c.Scope = nil }), http.StatusForbidden, "token lacks scope network.admin"},
		{"read-only scope", with(func(c *uaatoken.Claims) { c.Scope = []string{"network.read"} }), http.StatusForbidden, "token lacks scope network.admin"},
		{"network.write alone", with(func(c *uaatoken.Claims) { c.Scope = []string{uaatoken.ScopeWrite} }), http.StatusForbidden, "Cloud Controller"},
	}
	for vname, v := range verifiers {
		for _, tc := range cases {
			t.Run(vname+"/"+tc.name, func(t *testing.T) {
				status, challenge, body := call(t, v, tc.authorization)
				if status != tc.status {
					t.Fatalf("status = %d, want %d (body %s)", status, tc.status, body)
				}
				if tc.status == http.StatusOK {
					if body != "hello admin" {
						t.Fatalf("body = %q", body)
					}
					return
				}
				if msg := errorText(t, body); !strings.Contains(msg, tc.errContains) {
					t.Errorf("error %q does not contain %q", msg, tc.errContains)
				}
				if tc.status == http.StatusUnauthorized && !strings.HasPrefix(challenge, "Bearer") {
					t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", challenge)
				}
				if tc.status == http.StatusForbidden && challenge != "" {
					t.Errorf("403 carries WWW-Authenticate %q", challenge)
				}
			})
		}
	}
}

func TestUnknownKeyIDRefetchesKeys(t *testing.T) {
	old := authtest.NewKey(t, "key-1")
	rotated := authtest.NewKey(t, "key-2")
	uaa := authtest.NewUAA(t, old)
	// The interval is long enough that a stall on a loaded machine cannot end it early.
	v := newVerifier(t, auth.Options{UAAURL: uaa.URL, UAACAFile: uaa.CAFile, RefreshInterval: 2 * time.Second})

	if status, _, body := call(t, v, "Bearer "+old.AdminToken(t)); status != http.StatusOK {
		t.Fatalf("token of the first key: %d %s", status, body)
	}
	if status, _, _ := call(t, v, "Bearer "+old.AdminToken(t)); status != http.StatusOK || uaa.Fetches() != 1 {
		t.Fatalf("known key: status %d after %d fetches, want 200 after 1", status, uaa.Fetches())
	}

	uaa.SetKeys(old, rotated)
	// Within the refresh interval of the first fetch an unknown kid is refused without
	// asking UAA again.
	status, _, body := call(t, v, "Bearer "+rotated.AdminToken(t))
	if status != http.StatusUnauthorized || !strings.Contains(body, `signing key \"key-2\" is unknown`) {
		t.Fatalf("unknown kid inside the interval: %d %s", status, body)
	}
	if uaa.Fetches() != 1 {
		t.Fatalf("fetches = %d, want 1: an unknown kid inside the interval must not reach UAA", uaa.Fetches())
	}

	time.Sleep(2100 * time.Millisecond)
	// Many requests with the new kid at once cause one fetch between them.
	var wg sync.WaitGroup
	statuses := make([]int, 20)
	bodies := make([]string, 20)
	token := "Bearer " + rotated.AdminToken(t)
	for i := range statuses {
		wg.Go(func() { statuses[i], _, bodies[i] = call(t, v, token) })
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Fatalf("request %d with the rotated key: status %d %s (fetches %d)", i, s, bodies[i], uaa.Fetches())
		}
	}
	if uaa.Fetches() != 2 {
		t.Fatalf("fetches = %d, want 2", uaa.Fetches())
	}

	// A made-up kid, repeated, costs at most one fetch per interval.
	bogus := authtest.NewKey(t, "made-up")
	for range 10 {
		if status, _, _ := call(t, v, "Bearer "+bogus.AdminToken(t)); status != http.StatusUnauthorized {
			t.Fatalf("made-up kid: status %d", status)
		}
	}
	if uaa.Fetches() > 3 {
		t.Fatalf("fetches = %d after 10 tokens with a made-up kid, want at most 3", uaa.Fetches())
	}
}

func TestUAAUnreachableAtStart(t *testing.T) {
	key := authtest.NewKey(t, "key-1")
	uaa := authtest.NewUAA(t, key)
	// No CA: the TLS handshake with UAA fails, so no key can be loaded.
	v := newVerifier(t, auth.Options{UAAURL: uaa.URL, RefreshInterval: time.Nanosecond})
	status, challenge, body := call(t, v, "Bearer "+key.AdminToken(t))
	if status != http.StatusUnauthorized || challenge == "" || !strings.Contains(body, "unknown") {
		t.Fatalf("status %d, challenge %q, body %s", status, challenge, body)
	}
}

func TestNewRefusesBadConfiguration(t *testing.T) {
	key := authtest.NewKey(t, "k")
	cases := map[string]struct {
		opts auth.Options
		want string
	}{
		"no key source":      {auth.Options{}, "uaa_url or uaa_key_file"},
		"missing key file":   {auth.Options{KeyFile: "/nonexistent/key.pem"}, "uaa_key_file"},
		"key file not a key": {auth.Options{KeyFile: key.PrivateKeyFile(t) + ".nope"}, "uaa_key_file"},
		"missing CA file":    {auth.Options{UAAURL: "https://127.0.0.1:1", UAACAFile: "/nonexistent/ca.pem"}, "uaa_ca_cert_file"},
		"CA file not PEM":    {auth.Options{UAAURL: "https://127.0.0.1:1", UAACAFile: key.PublicKeyFile(t)}, "no PEM certificate"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := auth.New(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
