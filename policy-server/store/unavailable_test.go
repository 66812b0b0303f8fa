package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lib/pq"

	"netman/internal/testsupport/pgtest"
)

// TestTransientErrors: what the database says when it cannot serve now (a cancelled
// statement, a server starting up or shutting down, a refused connection) is
// ErrUnavailable; what it says about the request or the schema is not.
func TestTransientErrors(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.Open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	realErr := func(query string) error {
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = conn.ExecContext(ctx, query)
		if err == nil {
			t.Fatalf("%s: no error", query)
		}
		return err
	}
	refused := func() error {
		d, err := sql.Open("postgres", "postgres://netman@127.0.0.1:1/none?sslmode=disable")
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		return d.PingContext(ctx)
	}
	cases := []struct {
		name      string
		err       error
		transient bool
	}{
		{"statement_timeout (57014)", realErr(`SET statement_timeout = 1; SELECT pg_sleep(1)`), true},
		{"connection refused", refused(), true},
		{"deadline", fmt.Errorf("reading: %w", context.DeadlineExceeded), true},
		// The server sends 57P03 while it starts or recovers; no test cluster can be kept
		// in that state, so the error is built the way lib/pq delivers it.
		{"cannot_connect_now (57P03)", &pq.Error{Code: "57P03", Message: "the database system is starting up"}, true},
		{"admin_shutdown (57P01)", &pq.Error{Code: "57P01"}, true},
		{"syntax error", realErr(`SELEC 1`), false},
		{"unique violation", realErr(`CREATE TEMP TABLE u (x int UNIQUE); INSERT INTO u VALUES (1), (1)`), false},
		{"no rows", sql.ErrNoRows, false},
	}
	for _, c := range cases {
		got := errors.Is(markUnavailable(c.err), ErrUnavailable)
		if got != c.transient {
			t.Errorf("%s (%v): ErrUnavailable=%v, want %v", c.name, c.err, got, c.transient)
		}
		if !errors.Is(markUnavailable(c.err), c.err) {
			t.Errorf("%s: the cause is no longer in the chain", c.name)
		}
	}
}
