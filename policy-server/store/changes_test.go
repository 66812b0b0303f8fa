package store_test

import (
	"context"
	"database/sql"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"netman/internal/testsupport/freezeproxy"
	"netman/internal/testsupport/pgtest"
	"netman/lib/models"
	"netman/policy-server/store"
)

// replay applies changes to a set of policy keys the way a cache does.
func replay(t *testing.T, have map[string]bool, changes []models.Change) {
	t.Helper()
	for _, c := range changes {
		for _, p := range c.Policies {
			k := key(p)
			if c.Added == have[k] {
				t.Fatalf("version %d: added=%v for %s, which the replayed state holds=%v", c.Version, c.Added, k, have[k])
			}
			if c.Added {
				have[k] = true
			} else {
				delete(have, k)
			}
		}
	}
}

func keySet(ps []models.Policy) map[string]bool {
	m := map[string]bool{}
	for _, p := range ps {
		m[key(p)] = true
	}
	return m
}

// TestChangesReplayToAll: after every kind of write, the state at the previous version
// plus Changes equals All at the version Changes reports, tags included.
func TestChangesReplayToAll(t *testing.T) {
	t.Parallel()
	s, db, _ := newStore(t, 0)
	ctx := ctxT(t)
	a, b, c := pol("a", "b", "tcp", 8080, 8080), pol("b", "c", "udp", 53, 60), pol("c", "a", "tcp", 1, 1)
	writes := []struct {
		name string
		do   func() error
	}{
		{"create", func() error { return s.Create(ctx, []models.Policy{a, b}) }},
		{"create overlapping", func() error { return s.Create(ctx, []models.Policy{a, c}) }},
		{"ensure tag", func() error { _, err := s.EnsureTag(ctx, "router", "router"); return err }},
		{"delete", func() error { return s.Delete(ctx, []models.Policy{a}) }},
		{"delete all", func() error { return s.Delete(ctx, []models.Policy{b, c}) }},
		{"seed", func() error { _, err := store.Seed(ctx, db, 50, rand.New(rand.NewPCG(1, 2))); return err }},
	}
	since, _, complete, err := s.Changes(ctx, 0)
	if err != nil || !complete {
		t.Fatalf("Changes(0) on an empty store: complete=%v, %v", complete, err)
	}
	have := map[string]bool{}
	for _, w := range writes {
		if err := w.do(); err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		v, changes, complete, err := s.Changes(ctx, since)
		if err != nil || !complete {
			t.Fatalf("%s: Changes(%d): complete=%v, %v", w.name, since, complete, err)
		}
		if v <= since || changes[len(changes)-1].Version != v {
			t.Fatalf("%s: Changes(%d) = version %d, last change %+v", w.name, since, v, changes[len(changes)-1])
		}
		replay(t, have, changes)
		all, av, err := s.Snapshot(ctx)
		if err != nil || av != v {
			t.Fatalf("%s: Snapshot version %d, %v; want %d", w.name, av, err, v)
		}
		if want := keySet(all); !mapsEqual(have, want) {
			t.Fatalf("%s: replayed %v\nwant %v", w.name, sortedKeys(have), sortedKeys(want))
		}
		since = v
	}
	// Nothing changed: the same version, no changes, complete.
	if v, changes, complete, err := s.Changes(ctx, since); err != nil || v != since || len(changes) != 0 || !complete {
		t.Fatalf("Changes(current) = %d, %d changes, complete=%v, %v", v, len(changes), complete, err)
	}
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestChangesIncomplete: a reader whose versions the log no longer holds, one ahead of
// the store, and one too far behind are told to load everything.
func TestChangesIncomplete(t *testing.T) {
	t.Parallel()
	s, db, _ := newStore(t, 0)
	ctx := ctxT(t)
	mustCreate(t, s, pol("a", "b", "tcp", 1, 1))
	mustCreate(t, s, pol("a", "c", "tcp", 1, 1))
	v, _, _, err := s.Changes(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, complete, err := s.Changes(ctx, v+1); err != nil || complete {
		t.Errorf("Changes(ahead of the store): complete=%v, %v; want false", complete, err)
	}
	pgtest.MustExec(t, db, `DELETE FROM policy_changes WHERE version = (SELECT min(version) FROM policy_changes)`)
	if _, _, complete, err := s.Changes(ctx, 0); err != nil || complete {
		t.Errorf("Changes(pruned): complete=%v, %v; want false", complete, err)
	}
	if _, _, complete, err := s.Changes(ctx, v-1); err != nil || !complete {
		t.Errorf("Changes(after the pruned version): complete=%v, %v; want true", complete, err)
	}
	pgtest.MustExec(t, db, `UPDATE store_meta SET version = version + $1`, store.MaxChanges+1)
	if _, _, complete, err := s.Changes(ctx, v); err != nil || complete {
		t.Errorf("Changes(too far behind): complete=%v, %v; want false", complete, err)
	}
}

// TestLogIsPruned: the log keeps the last 10,000 versions, not every version ever.
func TestLogIsPruned(t *testing.T) {
	t.Parallel()
	s, db, _ := newStore(t, 0)
	ctx := ctxT(t)
	pgtest.MustExec(t, db, `UPDATE store_meta SET version = 20000`)
	pgtest.MustExec(t, db, `INSERT INTO policy_changes (version) SELECT generate_series(1, 20000)`)
	mustCreate(t, s, pol("a", "b", "tcp", 1, 1))
	var n, lowest int64
	if err := db.QueryRowContext(ctx, `SELECT count(*), min(version) FROM policy_changes`).Scan(&n, &lowest); err != nil {
		t.Fatal(err)
	}
	// One create writes two versions (groups, then policies): 20,002 is the newest.
	if lowest != 20002-10000+1 || n != 10000 {
		t.Errorf("log holds %d versions from %d; want 10000 from %d", n, lowest, 20002-10000+1)
	}
}

// TestHungDatabaseIsUnavailable: when the database stops answering (the proxy in front
// of it stops forwarding, as a stopped Postgres would), every call returns within its
// deadline with ErrUnavailable instead of hanging, and works again once it answers.
func TestHungDatabaseIsUnavailable(t *testing.T) {
	t.Parallel()
	_, _, dsn := newStore(t, 0)
	proxy, viaProxy := freezeproxy.ForDSN(t, dsn)
	db, err := sql.Open("postgres", viaProxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := store.New(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctxT(t)); err != nil {
		t.Fatalf("Ping before the freeze: %v", err)
	}
	proxy.Freeze()
	calls := map[string]func(ctx context.Context) error{
		"Ping":        s.Ping,
		"LastUpdated": func(ctx context.Context) error { _, err := s.LastUpdated(ctx); return err },
		"Changes":     func(ctx context.Context) error { _, _, _, err := s.Changes(ctx, 0); return err },
		"Snapshot":    func(ctx context.Context) error { _, _, err := s.Snapshot(ctx); return err },
		"ByGroupIDs":  func(ctx context.Context) error { _, err := s.ByGroupIDs(ctx, []string{"a"}); return err },
		"Tags":        func(ctx context.Context) error { _, err := s.Tags(ctx); return err },
		"Create":      func(ctx context.Context) error { return s.Create(ctx, []models.Policy{pol("a", "b", "tcp", 1, 1)}) },
		"Delete":      func(ctx context.Context) error { return s.Delete(ctx, []models.Policy{pol("a", "b", "tcp", 1, 1)}) },
		"EnsureTag":   func(ctx context.Context) error { _, err := s.EnsureTag(ctx, "x", "app"); return err },
	}
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		start := time.Now()
		err := call(ctx)
		took := time.Since(start)
		cancel()
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s while the database hangs: %v, want ErrUnavailable", name, err)
		}
		if took > 2*time.Second {
			t.Errorf("%s took %s with a 300ms deadline", name, took)
		}
	}
	proxy.Thaw()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if err := s.Ping(ctx); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("Ping after the thaw: %v", err)
		}
	}
}

// TestRefusedConnectionIsUnavailable: a database that refuses connections (down, or
// restarting) is transient, not a server fault.
func TestRefusedConnectionIsUnavailable(t *testing.T) {
	t.Parallel()
	db, err := sql.Open("postgres", "postgres://netman@127.0.0.1:1/none?sslmode=disable&connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := store.New(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LastUpdated(ctxT(t)); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("LastUpdated against a refused port: %v, want ErrUnavailable", err)
	}
}
