package pgtest

import (
	"database/sql"
	"os"
	"strconv"
	"testing"
)

func TestDatabasesAreSeparate(t *testing.T) {
	a, _ := Open(t)
	b, _ := Open(t)
	MustExec(t, a, `CREATE TABLE only_in_a (x int)`)
	var n int
	if err := b.QueryRow(`SELECT count(*) FROM information_schema.tables WHERE table_name = 'only_in_a'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("a table created in one test database is visible in another")
	}
}

// TestCreateDrop: drop removes the database even while someone is still connected to it
// (the foundation's policy servers may be, when Close runs).
func TestCreateDrop(t *testing.T) {
	admin, _ := Open(t)
	base := os.Getenv("DATABASE_URL")
	ctx := t.Context()
	name := "netman_test_create_" + strconv.Itoa(os.Getpid())
	dsn, drop, err := Create(ctx, base, name)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var got string
	if err := db.QueryRowContext(ctx, `SELECT current_database()`).Scan(&got); err != nil || got != name {
		t.Fatalf("connected to %q (%v), want %q", got, err, name)
	}
	if err := drop(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := admin.QueryRowContext(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s still exists after drop", name)
	}
}

func TestCreateRefusesNamesItWouldHaveToEscape(t *testing.T) {
	for _, name := range []string{"", `a"b`, "a b", "a;b", "nmf-1"} {
		if _, _, err := Create(t.Context(), "postgres://127.0.0.1:1/x", name); err == nil {
			t.Errorf("Create(%q) succeeded", name)
		}
	}
}
