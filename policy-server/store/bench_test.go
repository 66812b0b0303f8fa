package store

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// The figures these give are recorded in docs by the policy-server owner; run them with
//
//	scripts/with-postgres go test -run xxx -bench . -benchtime 200x ./policy-server/store/

func BenchmarkByGroupIDs10At100k(b *testing.B) {
	db, ids := seeded(b, 100_000)
	s, err := New(db, Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(5, 6))
	query := make([]string, 10)
	rows := 0
	b.ReportAllocs()
	b.ResetTimer()
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
	db, _ := seeded(b, 100_000)
	s, err := New(db, Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b.ReportAllocs()
	b.ResetTimer()
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
