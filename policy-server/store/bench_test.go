package store

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// Run with
//
//	scripts/with-postgres go test -run xxx -bench . -benchtime 200x ./policy-server/store/

// seededStore returns a store over 100,000 seeded policies, the seeded app ids and a
// context for the benchmark's calls.
func seededStore(b *testing.B) (*Store, []string, context.Context) {
	db, ids := seeded(b, 100_000)
	s, err := New(db, Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	b.ReportAllocs()
	b.ResetTimer()
	return s, ids, ctx
}

func BenchmarkByGroupIDs10At100k(b *testing.B) {
	s, ids, ctx := seededStore(b)
	rng := rand.New(rand.NewPCG(5, 6))
	query := make([]string, 10)
	rows := 0
	for b.Loop() {
		for i := range query {
			query[i] = ids[rng.IntN(len(ids))]
		}
		ps, err := s.ByGroupIDs(ctx, query)
		if err != nil {
			b.Fatal(err)
		}
		rows += len(ps)
	}
	b.ReportMetric(float64(rows)/float64(b.N), "policies/op")
}

func BenchmarkAllAt100k(b *testing.B) {
	s, _, ctx := seededStore(b)
	for b.Loop() {
		ps, err := s.All(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(ps) != 100_000 {
			b.Fatalf("All returned %d policies, want 100000", len(ps))
		}
	}
}
