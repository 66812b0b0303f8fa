package pgtest

import "testing"

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
