// Package authtest gives tests what a UAA gives the policy server: RSA signing keys,
// tokens signed with them, a /token_keys endpoint over real TLS, and PEM key files.
package authtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"netman/lib/uaatoken"
)

// Issuer and Audience are what Token puts in iss and aud unless told otherwise.
const (
	Issuer   = "https://uaa.test.internal/oauth/token"
	Audience = "network"
)

// Key is a signing key with its key id.
type Key struct {
	ID      string
	Private *rsa.PrivateKey
}

// NewKey makes a 2048-bit RSA key named kid.
func NewKey(t testing.TB, kid string) Key {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("generating RSA key: %v", err)
	}
	return Key{ID: kid, Private: k}
}

// PublicKeyFile writes the key's public half as PEM and returns the path.
func (k Key) PublicKeyFile(t testing.TB) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.Private.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "uaa-public.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// PrivateKeyFile writes the private key as PKCS#1 PEM and returns the path.
func (k Key) PrivateKeyFile(t testing.TB) string {
	t.Helper()
	return writeFile(t, "uaa-private.pem", pem.EncodeToMemory(&pem.Block{
		Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.Private),
	}))
}

// Claims returns valid admin claims: issued now, expiring in an hour, iss Issuer,
// aud Audience, user "admin", scope network.admin. Tests change fields from there.
func Claims() *uaatoken.Claims {
	now := time.Now()
	return &uaatoken.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    Issuer,
			Audience:  jwt.ClaimStrings{Audience, "cloud_controller"},
			Subject:   "user-guid-1",
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
		},
		Scope:    []string{uaatoken.ScopeAdmin, "openid"},
		ClientID: "cf",
		UserName: "admin",
		UserID:   "user-guid-1",
	}
}

// Token signs claims with k.
func (k Key) Token(t testing.TB, claims *uaatoken.Claims) string {
	t.Helper()
	s, err := uaatoken.Sign(k.Private, k.ID, claims)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// AdminToken is Token(Claims()).
func (k Key) AdminToken(t testing.TB) string {
	t.Helper()
	return k.Token(t, Claims())
}

// UAA serves /token_keys over TLS with the keys it is given; tests rotate keys with
// SetKeys and count fetches with Fetches.
type UAA struct {
	URL    string
	CAFile string

	mu      sync.Mutex
	keys    []Key
	fetches atomic.Int64
}

// NewUAA starts a TLS server serving keys at /token_keys, stopped when the test ends.
func NewUAA(t testing.TB, keys ...Key) *UAA {
	t.Helper()
	u := &UAA{keys: keys}
	srv := httptest.NewTLSServer(http.HandlerFunc(u.serve))
	t.Cleanup(srv.Close)
	u.URL = srv.URL
	u.CAFile = writeFile(t, "uaa-ca.pem", pem.EncodeToMemory(&pem.Block{
		Type: "CERTIFICATE", Bytes: srv.Certificate().Raw,
	}))
	return u
}

// SetKeys replaces the served keys, as UAA does when it rotates.
func (u *UAA) SetKeys(keys ...Key) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.keys = keys
}

// Fetches counts requests to /token_keys.
func (u *UAA) Fetches() int64 { return u.fetches.Load() }

func (u *UAA) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/token_keys" {
		http.NotFound(w, r)
		return
	}
	u.fetches.Add(1)
	u.mu.Lock()
	keys := append([]Key(nil), u.keys...)
	u.mu.Unlock()
	type jwk struct {
		Kty string `json:"kty"`
		Alg string `json:"alg"`
		Use string `json:"use"`
		Kid string `json:"kid"`
		N   string `json:"n"`
		E   string `json:"e"`
	}
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	for _, k := range keys {
		pub := k.Private.PublicKey
		set.Keys = append(set.Keys, jwk{
			Kty: "RSA", Alg: "RS256", Use: "sig", Kid: k.ID,
			N: base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
			E: base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
		})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(set)
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
