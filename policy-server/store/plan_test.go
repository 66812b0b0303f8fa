package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"netman/internal/testsupport/pgtest"
)

// planNode is the part of EXPLAIN (FORMAT JSON) output the plan test looks at.
type planNode struct {
	NodeType string     `json:"Node Type"`
	Relation string     `json:"Relation Name"`
	Index    string     `json:"Index Name"`
	Plans    []planNode `json:"Plans"`
}

func (n planNode) walk(fn func(planNode)) {
	fn(n)
	for _, c := range n.Plans {
		c.walk(fn)
	}
}

func explain(t testing.TB, ctx context.Context, db *sql.DB, query string, args ...any) (planNode, string) {
	t.Helper()
	var raw string
	if err := db.QueryRowContext(ctx, "EXPLAIN (FORMAT JSON) "+query, args...).Scan(&raw); err != nil {
		t.Fatalf("EXPLAIN: %v", err)
	}
	var out []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal([]byte(raw), &out); err != nil || len(out) != 1 {
		t.Fatalf("parsing EXPLAIN output %q: %v", raw, err)
	}
	return out[0].Plan, raw
}

// seeded returns a migrated database holding n seeded policies and the seeded app ids.
func seeded(t testing.TB, n int) (*sql.DB, []string) {
	t.Helper()
	db, _ := pgtest.Open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := Migrate(ctx, db); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	ids, err := Seed(ctx, db, n, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatalf("Seed: %v", err)
	}
	return db, ids
}

// TestFilterUsesIndexesAt100k proves that the id filter looks policies up through
// indexes instead of reading all 100,000 of them.
func TestFilterUsesIndexesAt100k(t *testing.T) {
	if testing.Short() {
		t.Skip("seeds 100,000 policies")
	}
	t.Parallel()
	db, ids := seeded(t, 100_000)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM policies`).Scan(&n); err != nil || n != 100_000 {
		t.Fatalf("seeded %d policies (err %v), want 100000", n, err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	query := make([]string, 10)
	for i := range query {
		query[i] = ids[rng.IntN(len(ids))]
	}
	plan, raw := explain(t, ctx, db, filterPolicies, pq.Array(query))
	indexed := 0
	plan.walk(func(n planNode) {
		if n.Relation == "policies" || n.Relation == "destinations" || n.Relation == "groups" {
			if n.NodeType == "Seq Scan" {
				t.Errorf("plan reads every row of %s:\n%s", n.Relation, raw)
			}
			if n.Relation == "policies" && strings.Contains(n.NodeType, "Index") {
				indexed++
			}
		}
	})
	if indexed == 0 {
		t.Errorf("no index scan on policies in the plan:\n%s", raw)
	}
	t.Logf("plan:\n%s", raw)
}
