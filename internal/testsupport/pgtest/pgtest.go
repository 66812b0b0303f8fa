// Package pgtest gives each test a database of its own on the server named by
// DATABASE_URL (a throwaway cluster that scripts/with-postgres starts for `make test`),
// so tests can run in parallel without seeing each other's rows.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	_ "github.com/lib/pq" // the driver behind database/sql's "postgres"

	"netman/internal/testsupport/testenv"
)

// NewDatabase creates an empty database for this test, drops it when the test ends, and
// returns its connection string.
func NewDatabase(t testing.TB) string {
	t.Helper()
	base := os.Getenv("DATABASE_URL")
	if base == "" {
		testenv.Unavailable(t, "needs Postgres: DATABASE_URL is not set")
	}
	admin, err := sql.Open("postgres", base)
	if err != nil {
		t.Fatalf("opening DATABASE_URL: %v", err)
	}
	t.Cleanup(func() { admin.Close() })

	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := "netman_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The name is generated here from hex digits, so quoting it is enough.
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE "`+name+`"`); err != nil {
		t.Fatalf("creating test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, `DROP DATABASE IF EXISTS "`+name+`" WITH (FORCE)`); err != nil {
			t.Errorf("dropping test database %s: %v", name, err)
		}
	})

	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parsing DATABASE_URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Open is NewDatabase plus an open *sql.DB that is closed when the test ends.
func Open(t testing.TB) (*sql.DB, string) {
	t.Helper()
	dsn := NewDatabase(t)
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatalf("opening test database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Ping(); err != nil {
		t.Fatalf("connecting to test database: %v", err)
	}
	return db, dsn
}

// MustExec runs statements that set up a test and fails the test if one fails.
func MustExec(t testing.TB, db *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", fmt.Sprint(query), err)
	}
}
