package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
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

func TestMigrateTwiceAndConcurrently(t *testing.T) {
	t.Parallel()
	db, dsn := pgtest.Open(t)
	ctx := ctxT(t)

	// Several replicas starting at the same moment, each with its own pool.
	const replicas = 6
	errs := make(chan error, replicas)
	start := make(chan struct{})
	for range replicas {
		go func() {
			pool, err := sql.Open("postgres", dsn)
			if err != nil {
				errs <- err
				return
			}
			defer pool.Close()
			<-start
			errs <- store.Migrate(ctx, pool)
		}()
	}
	close(start)
	for range replicas {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Migrate: %v", err)
		}
	}
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	var applied, distinct int
	if err := db.QueryRowContext(ctx, `SELECT count(*), count(DISTINCT version) FROM schema_migrations`).Scan(&applied, &distinct); err != nil {
		t.Fatal(err)
	}
	if applied == 0 || applied != distinct {
		t.Fatalf("schema_migrations holds %d rows for %d versions", applied, distinct)
	}
	// The migrated schema works.
	s, err := store.New(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, pol("a", "b", "tcp", 1, 1))
}

func TestMigrateRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.Open(t)
	ctx := ctxT(t)
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	pgtest.MustExec(t, db, `INSERT INTO schema_migrations (version, name) VALUES (9999, '9999_future.sql')`)
	if err := store.Migrate(ctx, db); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Migrate on a newer schema: err = %v, want a refusal", err)
	}
}

func TestNewValidatesTagLength(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.Open(t)
	for _, tc := range []struct {
		length  int
		wantErr bool
		want    int
	}{
		{length: 0, want: 2},
		{length: 1, want: 1},
		{length: 2, want: 2},
		{length: 3, want: 3},
		{length: -1, wantErr: true},
		{length: 4, wantErr: true},
	} {
		s, err := store.New(db, store.Options{TagLength: tc.length})
		if (err != nil) != tc.wantErr {
			t.Errorf("New(TagLength %d): err = %v, want error %v", tc.length, err, tc.wantErr)
			continue
		}
		if err == nil && s.TagLength() != tc.want {
			t.Errorf("New(TagLength %d).TagLength() = %d, want %d", tc.length, s.TagLength(), tc.want)
		}
	}
}

func TestCreateIsAllOrNothing(t *testing.T) {
	t.Parallel()
	valid := pol("new-src", "new-dst", "tcp", 8080, 8080)
	for _, tc := range []struct {
		name    string
		invalid models.Policy
	}{
		{"protocol", pol("x", "y", "icmp", 80, 80)},
		{"upper-case protocol", pol("x", "y", "TCP", 80, 80)},
		{"port 0", pol("x", "y", "tcp", 0, 80)},
		{"port 65536", pol("x", "y", "tcp", 80, 65536)},
		{"start above end", pol("x", "y", "udp", 90, 80)},
		{"empty source", pol("", "y", "tcp", 80, 80)},
		{"empty destination", pol("x", "", "tcp", 80, 80)},
		{"id too long", pol(strings.Repeat("x", 256), "y", "tcp", 80, 80)},
		{"NUL in id", pol("x\x00", "y", "tcp", 80, 80)},
		{"invalid UTF-8", pol("x\xff", "y", "tcp", 80, 80)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, _, _ := newStore(t, 0)
			ctx := ctxT(t)
			existing := pol("old-src", "old-dst", "tcp", 443, 443)
			mustCreate(t, s, existing)
			before, _ := s.LastUpdated(ctx)

			err := s.Create(ctx, []models.Policy{valid, tc.invalid, pol("old-src", "new-dst", "udp", 53, 53)})
			var invalid *store.InvalidInputError
			if !errors.As(err, &invalid) {
				t.Fatalf("Create: err = %v, want *InvalidInputError", err)
			}
			if invalid.Reason == "" {
				t.Errorf("InvalidInputError without a reason: %v", err)
			}
			if got := keys(mustAll(t, s)); !slices.Equal(got, []string{key(existing)}) {
				t.Errorf("after the failed batch All = %v, want only the policy from before", got)
			}
			if after, _ := s.LastUpdated(ctx); after != before {
				t.Errorf("LastUpdated moved from %d to %d on a failed batch", before, after)
			}
			tags, _ := s.Tags(ctx)
			if len(tags) != 2 {
				t.Errorf("Tags after the failed batch = %v, want the 2 groups from before", tags)
			}
			// The failed batch consumed no tags.
			mustCreate(t, s, valid)
			tags, _ = s.Tags(ctx)
			if want := []string{"0003", "0004"}; !slices.Equal(tagsOf(tags, "new-dst", "new-src"), want) {
				t.Errorf("tags of groups created after the failure = %v, want %v", tagsOf(tags, "new-dst", "new-src"), want)
			}
		})
	}
}

func tagsOf(tags []models.Tag, ids ...string) []string {
	var out []string
	for _, id := range ids {
		for _, t := range tags {
			if t.ID == id {
				out = append(out, t.Tag)
			}
		}
	}
	return out
}

func TestCreateAndDeleteAreIdempotent(t *testing.T) {
	t.Parallel()
	a := pol("a", "b", "tcp", 8080, 8080)
	b := pol("a", "b", "tcp", 8080, 8090) // same groups, another port range
	c := pol("b", "a", "udp", 53, 53)
	type step struct {
		create, delete []models.Policy
		want           []models.Policy
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"create twice", []step{{create: []models.Policy{a}, want: []models.Policy{a}}, {create: []models.Policy{a}, want: []models.Policy{a}}}},
		{"duplicates in one batch", []step{{create: []models.Policy{a, a, b, a}, want: []models.Policy{a, b}}}},
		{"port ranges are distinct policies", []step{{create: []models.Policy{b, a}, want: []models.Policy{a, b}}}},
		{"delete twice", []step{{create: []models.Policy{a, c}}, {delete: []models.Policy{a}, want: []models.Policy{c}}, {delete: []models.Policy{a}, want: []models.Policy{c}}}},
		{"delete missing", []step{{create: []models.Policy{a}}, {delete: []models.Policy{b, c, pol("x", "y", "tcp", 1, 1)}, want: []models.Policy{a}}}},
		{"delete with duplicates", []step{{create: []models.Policy{a, b, c}}, {delete: []models.Policy{b, b, c}, want: []models.Policy{a}}}},
		{"delete all then create again", []step{{create: []models.Policy{a, c}}, {delete: []models.Policy{c, a}, want: []models.Policy{}}, {create: []models.Policy{c}, want: []models.Policy{c}}}},
		{"empty batches", []step{{create: []models.Policy{}, want: []models.Policy{}}, {delete: nil, want: []models.Policy{}}}},
		{"input tags are ignored", []step{{create: []models.Policy{{Source: models.Source{ID: "a", Tag: "FFFF"}, Destination: models.Destination{ID: "b", Tag: "EEEE", Protocol: "tcp", Ports: models.Ports{Start: 8080, End: 8080}}}}, want: []models.Policy{a}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, _, _ := newStore(t, 0)
			ctx := ctxT(t)
			for i, st := range tc.steps {
				if st.create != nil {
					if err := s.Create(ctx, st.create); err != nil {
						t.Fatalf("step %d: Create: %v", i, err)
					}
				}
				if st.delete != nil {
					if err := s.Delete(ctx, st.delete); err != nil {
						t.Fatalf("step %d: Delete: %v", i, err)
					}
				}
				if st.want == nil {
					continue
				}
				all := mustAll(t, s)
				if got, want := keys(all), keys(st.want); !slices.Equal(got, want) {
					t.Fatalf("step %d: All = %v, want %v", i, got, want)
				}
				for _, p := range all {
					if p.Source.Tag == "" || p.Destination.Tag == "" || p.Source.Tag == "FFFF" {
						t.Fatalf("step %d: policy with tags not assigned by the store: %+v", i, p)
					}
				}
			}
		})
	}
}

func TestOrdering(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, 0)
	ctx := ctxT(t)
	// The order a client must see: source id, destination id (byte-wise: upper case
	// before lower case), protocol, start port, end port.
	want := []models.Policy{
		pol("A", "B", "tcp", 80, 80),
		pol("A", "a", "tcp", 80, 80),
		pol("B", "A", "tcp", 443, 443),
		pol("B", "B", "tcp", 5, 5),
		pol("a", "a", "tcp", 1000, 1000),
		pol("a", "a", "tcp", 1000, 2000),
		pol("a", "a", "tcp", 8080, 8080),
		pol("a", "a", "udp", 53, 53),
		pol("a", "b", "tcp", 1, 65535),
		pol("a-1", "a", "tcp", 1, 1),
		pol("b", "A", "udp", 9, 9),
	}
	shuffled := slices.Clone(want)
	rand.New(rand.NewPCG(7, 8)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	// Several batches, so insertion order differs from the wanted order.
	mustCreate(t, s, shuffled[:4]...)
	mustCreate(t, s, shuffled[4:]...)

	if got := keys(mustAll(t, s)); !slices.Equal(got, keys(want)) {
		t.Errorf("All order:\n got %v\nwant %v", got, keys(want))
	}
	filtered, err := s.ByGroupIDs(ctx, []string{"a", "A", "B", "b", "a-1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(filtered); !slices.Equal(got, keys(want)) {
		t.Errorf("ByGroupIDs order:\n got %v\nwant %v", got, keys(want))
	}
}

func TestByGroupIDs(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, 0)
	ctx := ctxT(t)
	ab := pol("a", "b", "tcp", 8080, 8080)
	be := pol("b", "e", "tcp", 8080, 8080)
	cd := pol("c", "d", "udp", 53, 53)
	ff := pol("f", "f", "tcp", 9000, 9100)
	mustCreate(t, s, ab, be, cd, ff)

	many := make([]string, 0, 5000)
	for i := range 4998 {
		many = append(many, fmt.Sprintf("unknown-%d", i))
	}
	many = append(many, "e", "c")

	for _, tc := range []struct {
		name string
		ids  []string
		want []models.Policy
	}{
		{"nil", nil, []models.Policy{}},
		{"empty", []string{}, []models.Policy{}},
		{"source", []string{"a"}, []models.Policy{ab}},
		{"destination", []string{"d"}, []models.Policy{cd}},
		{"source or destination", []string{"b"}, []models.Policy{ab, be}},
		{"duplicates", []string{"b", "b", "a", "b"}, []models.Policy{ab, be}},
		{"self policy once", []string{"f"}, []models.Policy{ff}},
		{"unknown", []string{"zzz"}, []models.Policy{}},
		{"unknown and known", []string{"zzz", "d", ""}, []models.Policy{cd}},
		{"5000 ids", many, []models.Policy{be, cd}},
		{"everything", []string{"a", "b", "c", "d", "e", "f"}, []models.Policy{ab, be, cd, ff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ByGroupIDs(ctx, tc.ids)
			if err != nil {
				t.Fatalf("ByGroupIDs: %v", err)
			}
			if got == nil {
				t.Fatal("ByGroupIDs returned nil, want a non-nil slice")
			}
			if !slices.Equal(keys(got), keys(tc.want)) {
				t.Fatalf("ByGroupIDs(%d ids) = %v, want %v", len(tc.ids), keys(got), keys(tc.want))
			}
		})
	}
}

// TestByGroupIDsMatchesAll checks the SQL filter against a filter of All computed here,
// on seeded data and 5,000 ids in one call.
func TestByGroupIDsMatchesAll(t *testing.T) {
	t.Parallel()
	s, db, _ := newStore(t, 0)
	ctx := ctxT(t)
	rng := rand.New(rand.NewPCG(9, 10))
	ids, err := store.Seed(ctx, db, 4000, rng)
	if err != nil {
		t.Fatalf("Seed: %v", err)
	}
	all := mustAll(t, s)
	if len(all) != 4000 {
		t.Fatalf("All after Seed(4000) = %d policies", len(all))
	}
	query := make([]string, 0, 5000)
	for len(query) < 5000 {
		if rng.IntN(3) == 0 {
			query = append(query, fmt.Sprintf("missing-%d", len(query)))
		} else {
			query = append(query, ids[rng.IntN(len(ids))])
		}
	}
	wanted := map[string]bool{}
	for _, id := range query {
		wanted[id] = true
	}
	var want []models.Policy
	for _, p := range all {
		if wanted[p.Source.ID] || wanted[p.Destination.ID] {
			want = append(want, p)
		}
	}
	got, err := s.ByGroupIDs(ctx, query)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ByGroupIDs with 5000 ids: %d policies, filtering All gives %d (or they differ)", len(got), len(want))
	}
}

func TestSeedShape(t *testing.T) {
	t.Parallel()
	s, db, _ := newStore(t, 0)
	ctx := ctxT(t)
	ids, err := store.Seed(ctx, db, 1000, rand.New(rand.NewPCG(11, 12)))
	if err != nil {
		t.Fatalf("Seed: %v", err)
	}
	if len(ids) != 500 {
		t.Errorf("Seed(1000) made %d apps, want 500", len(ids))
	}
	all := mustAll(t, s)
	if len(all) != 1000 {
		t.Fatalf("Seed(1000) made %d policies", len(all))
	}
	perSource := map[string]int{}
	for _, p := range all {
		perSource[p.Source.ID]++
		if p.Destination.Protocol != "tcp" || p.Destination.Ports != (models.Ports{Start: 8080, End: 8080}) {
			t.Fatalf("seeded policy %+v is not tcp 8080", p)
		}
	}
	for src, n := range perSource {
		if n < 1 || n > 3 {
			t.Errorf("source %s has %d destinations, want 1-3", src, n)
		}
	}
	policies, groups, err := s.Counts(ctx)
	if err != nil || policies != 1000 || groups != 500 {
		t.Errorf("Counts = %d, %d, %v; want 1000, 500", policies, groups, err)
	}
	// Seeded groups took tags the allocator knows about.
	mustCreate(t, s, pol("after-seed", "after-seed", "tcp", 1, 1))
	tags, _ := s.Tags(ctx)
	if got := tagsOf(tags, "after-seed"); !slices.Equal(got, []string{"01F5"}) {
		t.Errorf("tag of the first group after seeding 500 = %v, want 01F5", got)
	}
}

// TestAllAfterManyDeletes covers All's lookup of destinations whose ids have grown sparse.
func TestAllAfterManyDeletes(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, 0)
	ctx := ctxT(t)
	var ps []models.Policy
	for i := range 3000 {
		ps = append(ps, pol(fmt.Sprintf("s%04d", i%7), fmt.Sprintf("d%04d", i), "tcp", 1+i%5, 10+i%5))
	}
	mustCreate(t, s, ps...)
	var keep, drop []models.Policy
	for i, p := range ps {
		if i%500 == 499 || i < 3 {
			keep = append(keep, p)
		} else {
			drop = append(drop, p)
		}
	}
	if err := s.Delete(ctx, drop); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(keep, func(a, b models.Policy) int { return strings.Compare(key(a), key(b)) })
	all := mustAll(t, s)
	if got := keys(all); !slices.Equal(got, keys(keep)) {
		t.Fatalf("All = %v\nwant %v", got, keys(keep))
	}
	filtered, err := s.ByGroupIDs(ctx, []string{"s0000", "s0001", "s0002", "s0003", "s0004", "s0005", "s0006"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(filtered, all) {
		t.Fatalf("ByGroupIDs differs from All:\n%v\n%v", filtered, all)
	}
}
