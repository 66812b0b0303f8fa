// Package apitest sets up what the policy server's tests share: a real, migrated store
// on a database of the test's own.
package apitest

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"netman/internal/testsupport/storetest"
	"netman/lib/models"
	"netman/policy-server/store"
)

// NewStore returns an empty, migrated store with default options on a fresh database,
// its pool and DSN (storetest.Open, which tests needing other options call directly).
func NewStore(t testing.TB) (*store.Store, *sql.DB, string) {
	t.Helper()
	return storetest.Open(t, store.Options{})
}

// Ctx is a context that ends with the test (or after a minute).
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Policy is a policy from src to dst on proto ports start..end.
func Policy(src, dst, proto string, start, end int) models.Policy {
	return models.Policy{
		Source:      models.Source{ID: src},
		Destination: models.Destination{ID: dst, Protocol: proto, Ports: models.Ports{Start: start, End: end}},
	}
}

// Create stores policies or fails the test.
func Create(t testing.TB, s *store.Store, ps ...models.Policy) {
	t.Helper()
	if err := s.Create(Ctx(t), ps); err != nil {
		t.Fatalf("creating policies: %v", err)
	}
}
