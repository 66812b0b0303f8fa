// Package storetest gives a test a migrated policy store on a database of its own.
package storetest

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"netman/internal/testsupport/pgtest"
	"netman/policy-server/store"
)

// Open migrates a fresh database (pgtest) and returns a store with opts on it, the
// pool (closed when the test ends) and the connection string.
func Open(t testing.TB, opts store.Options) (*store.Store, *sql.DB, string) {
	t.Helper()
	db, dsn := pgtest.Open(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatalf("migrating: %v", err)
	}
	st, err := store.New(db, opts)
	if err != nil {
		t.Fatal(err)
	}
	return st, db, dsn
}
