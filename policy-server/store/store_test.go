package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"netman/internal/testsupport/pgtest"
	"netman/lib/models"
	"netman/policy-server/store"
)

// newStore returns a migrated, empty store on a database of its own.
func newStore(t *testing.T, tagLength int) (*store.Store, *sql.DB, string) {
	t.Helper()
	db, dsn := pgtest.Open(t)
	if err := store.Migrate(ctxT(t), db); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	s, err := store.New(db, store.Options{TagLength: tagLength})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s, db, dsn
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func pol(src, dst, proto string, start, end int) models.Policy {
	return models.Policy{
		Source:      models.Source{ID: src},
		Destination: models.Destination{ID: dst, Protocol: proto, Ports: models.Ports{Start: start, End: end}},
	}
}

// key drops tags so policies can be compared by what a client asked for.
func key(p models.Policy) string {
	return fmt.Sprintf("%s>%s/%s:%d-%d", p.Source.ID, p.Destination.ID, p.Destination.Protocol, p.Destination.Ports.Start, p.Destination.Ports.End)
}

func keys(ps []models.Policy) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = key(p)
	}
	return out
}

func mustCreate(t *testing.T, s *store.Store, ps ...models.Policy) {
	t.Helper()
	if err := s.Create(ctxT(t), ps); err != nil {
		t.Fatalf("Create: %v", err)
	}
}

func mustAll(t *testing.T, s *store.Store) []models.Policy {
	t.Helper()
	all, err := s.All(ctxT(t))
	if err != nil {
		t.Fatalf("All: %v", err)
	}
	return all
}

func TestCreateAllDelete(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, 0)
	ctx := ctxT(t)

	if all := mustAll(t, s); all == nil || len(all) != 0 {
		t.Fatalf("All on an empty store = %#v, want an empty non-nil slice", all)
	}
	a := pol("app-a", "app-b", "tcp", 8080, 8080)
	b := pol("app-b", "app-b", "udp", 1000, 2000)
	mustCreate(t, s, a, b)
	mustCreate(t, s, a) // again: no-op

	got := mustAll(t, s)
	want := []models.Policy{
		{Source: models.Source{ID: "app-a", Tag: "0001"}, Destination: models.Destination{ID: "app-b", Tag: "0002", Protocol: "tcp", Ports: models.Ports{Start: 8080, End: 8080}}},
		{Source: models.Source{ID: "app-b", Tag: "0002"}, Destination: models.Destination{ID: "app-b", Tag: "0002", Protocol: "udp", Ports: models.Ports{Start: 1000, End: 2000}}},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("All = %#v\nwant %#v", got, want)
	}

	if err := s.Delete(ctx, []models.Policy{a, pol("nope", "app-b", "tcp", 1, 1)}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := s.Delete(ctx, []models.Policy{a}); err != nil {
		t.Fatalf("Delete again: %v", err)
	}
	if got := keys(mustAll(t, s)); !slices.Equal(got, []string{key(b)}) {
		t.Fatalf("after delete All = %v", got)
	}
	tags, err := s.Tags(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// app-a is named by no policy any more: its group and tag are gone.
	if want := []models.Tag{{ID: "app-b", Type: "app", Tag: "0002"}}; !slices.Equal(tags, want) {
		t.Fatalf("Tags = %v, want %v", tags, want)
	}
	var invalid *store.InvalidInputError
	if err := s.Create(ctx, []models.Policy{pol("x", "y", "icmp", 1, 1)}); !errors.As(err, &invalid) {
		t.Fatalf("Create with icmp: err = %v, want *InvalidInputError", err)
	}
}
