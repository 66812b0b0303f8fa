// Package externalapitest runs the policy server's external and v1 internal routes on a
// real store in a fresh Postgres database, with tokens signed by a test key, for tests
// of the API and of its clients.
package externalapitest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"netman/internal/testsupport/pgtest"
	"netman/internal/testsupport/syncbuf"
	"netman/lib/httpapi"
	"netman/policy-server/api/externalapi"
	"netman/policy-server/api/internalapi"
	"netman/policy-server/auth"
	"netman/policy-server/auth/authtest"
	"netman/policy-server/policycache"
	"netman/policy-server/store"
)

// Options change the server from its defaults (tag_length 2, 10,000 policies per
// request, keys from a PEM file).
type Options struct {
	TagLength   int
	MaxPolicies int
	// JWKS serves the key from a TLS /token_keys endpoint instead of a PEM file.
	JWKS bool
}

// Server is a running API.
type Server struct {
	// External serves the external routes; Internal the v1 internal ones (plain HTTP
	// here: mutual TLS is the internal server's business and tested there).
	External *httptest.Server
	Internal *httptest.Server
	Store    *store.Store
	Key      authtest.Key
	logs     *syncbuf.Buffer
}

// New starts a server and stops it when the test ends.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	db, _ := pgtest.Open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatalf("migrating: %v", err)
	}
	st, err := store.New(db, store.Options{TagLength: opts.TagLength})
	if err != nil {
		t.Fatal(err)
	}
	key := authtest.NewKey(t, "test-key")
	authOpts := auth.Options{Issuer: authtest.Issuer, Audience: authtest.Audience}
	if opts.JWKS {
		uaa := authtest.NewUAA(t, key)
		authOpts.UAAURL, authOpts.UAACAFile = uaa.URL, uaa.CAFile
	} else {
		authOpts.KeyFile = key.PublicKeyFile(t)
	}
	verifier, err := auth.New(authOpts)
	if err != nil {
		t.Fatal(err)
	}
	a, err := externalapi.New(externalapi.Options{Store: st, Verifier: verifier, MaxPolicies: opts.MaxPolicies})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	s := &Server{Store: st, Key: key, logs: logs}
	s.External = httptest.NewServer(httpapi.NewMux(httpapi.Middleware{Server: "external", Logger: logger}, a.ExternalRoutes()))
	t.Cleanup(s.External.Close)
	// MaxAge 1ns: every internal read confirms the snapshot first, so it sees every
	// write the test made before it.
	cache := policycache.New(st, policycache.Options{MaxAge: time.Nanosecond, Encoding: internalapi.Encoding()})
	s.Internal = httptest.NewServer(httpapi.NewMux(httpapi.Middleware{Server: "internal", Logger: logger}, internalapi.V1Routes(cache, st, 0)))
	t.Cleanup(s.Internal.Close)
	return s
}

// AdminToken is a valid token with network.admin for user "admin".
func (s *Server) AdminToken(t testing.TB) string { return s.Key.AdminToken(t) }

// Logs returns what the server logged so far (JSON lines).
func (s *Server) Logs() string { return s.logs.String() }
