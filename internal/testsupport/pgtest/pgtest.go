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
	"strings"
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
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := "netman_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn, drop, err := Create(ctx, base, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := drop(ctx); err != nil {
			t.Error(err)
		}
	})
	return dsn
}

// Create creates the empty database name on the server baseURL names, as baseURL's
// user, and returns its connection string and drop, which removes it (disconnecting
// whoever is still connected) and closes the connection Create opened. Callers outside a
// test (the foundation, whose Close drops its database) use it directly.
//
// name is quoted, not escaped, so only letters, digits and underscores are accepted.
func Create(ctx context.Context, baseURL, name string) (dsn string, drop func(context.Context) error, err error) {
	if name == "" || strings.TrimFunc(name, plain) != "" {
		return "", nil, fmt.Errorf("database name %q: only letters, digits and underscores", name)
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		return "", nil, fmt.Errorf("parsing the database URL: %w", err)
	}
	u.Path = "/" + name
	admin, err := sql.Open("postgres", baseURL)
	if err != nil {
		return "", nil, fmt.Errorf("opening the database URL: %w", err)
	}
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE "`+name+`"`); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("creating database %s: %w", name, err)
	}
	drop = func(ctx context.Context) error {
		defer admin.Close()
		if _, err := admin.ExecContext(ctx, `DROP DATABASE IF EXISTS "`+name+`" WITH (FORCE)`); err != nil {
			return fmt.Errorf("dropping database %s: %w", name, err)
		}
		return nil
	}
	return u.String(), drop, nil
}

func plain(r rune) bool {
	return r == '_' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'
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
