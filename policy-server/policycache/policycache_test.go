package policycache_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"netman/lib/models"
	"netman/policy-server/api/apitest"
	"netman/policy-server/policycache"
	"netman/policy-server/store"
)

func keys(ps []*policycache.Policy) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = fmt.Sprintf("%s(%s)>%s(%s)/%s:%d-%d", p.Source.ID, p.Source.Tag, p.Destination.ID, p.Destination.Tag, p.Protocol, p.Start, p.End)
	}
	return out
}

func ptrs(ps []policycache.Policy) []*policycache.Policy {
	out := make([]*policycache.Policy, len(ps))
	for i := range ps {
		out[i] = &ps[i]
	}
	return out
}

func modelKeys(ps []models.Policy) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = fmt.Sprintf("%s(%s)>%s(%s)/%s:%d-%d", p.Source.ID, p.Source.Tag, p.Destination.ID, p.Destination.Tag, p.Destination.Protocol, p.Destination.Ports.Start, p.Destination.Ports.End)
	}
	return out
}

// The snapshot answers exactly what the store's SQL filter answers, in the same order.
func TestSnapshotMatchesStore(t *testing.T) {
	st, db, _ := apitest.NewStore(t)
	ctx := apitest.Ctx(t)
	groups, err := store.Seed(ctx, db, 3000, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	// A range, a udp policy and a self policy, which the seed does not make.
	apitest.Create(t, st,
		apitest.Policy(groups[0], groups[1], "tcp", 9000, 9010),
		apitest.Policy(groups[0], groups[1], "udp", 53, 53),
		apitest.Policy(groups[2], groups[2], "tcp", 5555, 5555))

	c := policycache.New(st, policycache.Options{})
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Fresh() == nil {
		t.Fatal("no fresh snapshot after Refresh")
	}
	all, snap, err := c.All(ctx)
	if err != nil || snap == nil {
		t.Fatalf("All: snapshot %v, err %v", snap, err)
	}
	want, err := st.All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys(ptrs(all)), modelKeys(want)) {
		t.Fatalf("snapshot differs from the store's list")
	}

	rng := rand.New(rand.NewPCG(3, 4))
	idSets := [][]string{
		{groups[0]}, {groups[2]}, {groups[0], groups[1]}, {"not-a-group"}, groups[:50],
	}
	for range 20 {
		var ids []string
		for range 1 + rng.IntN(20) {
			ids = append(ids, groups[rng.IntN(len(groups))])
		}
		slices.Sort(ids)
		idSets = append(idSets, slices.Compact(ids))
	}
	for _, ids := range idSets {
		got, err := c.ByGroupIDs(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		want, err := st.ByGroupIDs(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(keys(got), modelKeys(want)) {
			t.Fatalf("ids %v:\nsnapshot %v\nstore    %v", ids, keys(got), modelKeys(want))
		}
	}
}

func TestRefreshFollowsTheVersion(t *testing.T) {
	st, _, _ := apitest.NewStore(t)
	ctx := apitest.Ctx(t)
	apitest.Create(t, st, apitest.Policy("a", "b", "tcp", 8080, 8080))
	c := policycache.New(st, policycache.Options{MaxAge: time.Hour})
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	first := c.Fresh()
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Fresh() != first {
		t.Fatal("an unchanged version rebuilt the snapshot")
	}
	apitest.Create(t, st, apitest.Policy("b", "c", "tcp", 8080, 8080))
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := c.ByGroupIDs(ctx, []string{"c"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Source.ID != "b" {
		t.Fatalf("after the change: %v", keys(got))
	}
	if c.Fresh() == first {
		t.Fatal("a changed version kept the old snapshot")
	}
}

// A snapshot that has not been confirmed for MaxAge is not served: the database is.
func TestStaleSnapshotIsNotServed(t *testing.T) {
	st, _, _ := apitest.NewStore(t)
	ctx := apitest.Ctx(t)
	apitest.Create(t, st, apitest.Policy("a", "b", "tcp", 8080, 8080))
	fallbacks := &countingObserver{}
	// MaxAge leaves room for a slow Create on a loaded machine between Refresh and the
	// "still fresh" check below.
	c := policycache.New(st, policycache.Options{MaxAge: time.Second, Observe: fallbacks})

	// Before the first snapshot, requests are answered from the database.
	got, err := c.ByGroupIDs(ctx, []string{"a"})
	if err != nil || len(got) != 1 {
		t.Fatalf("without a snapshot: %v, %v", keys(got), err)
	}
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	apitest.Create(t, st, apitest.Policy("a", "c", "tcp", 8080, 8080))
	got, _ = c.ByGroupIDs(ctx, []string{"a"})
	if len(got) != 1 {
		t.Fatalf("a fresh snapshot should still be served: %v", keys(got))
	}
	time.Sleep(1100 * time.Millisecond)
	if c.Fresh() != nil {
		t.Fatal("snapshot still fresh after MaxAge without a check")
	}
	got, err = c.ByGroupIDs(ctx, []string{"a"})
	if err != nil || len(got) != 2 {
		t.Fatalf("stale snapshot: want both policies from the database, got %v, %v", keys(got), err)
	}
	all, snap, err := c.All(ctx)
	if err != nil || snap != nil || len(all) != 2 {
		t.Fatalf("stale snapshot: All = %d policies, snapshot %v, err %v", len(all), snap, err)
	}
	if fallbacks.fallbacks != 3 {
		t.Fatalf("fallbacks observed: %d, want 3", fallbacks.fallbacks)
	}
}

type countingObserver struct{ rebuilds, fallbacks int }

func (o *countingObserver) Rebuilt(int64, int, time.Duration) { o.rebuilds++ }
func (o *countingObserver) Fallback()                         { o.fallbacks++ }

// failingStore injects database failures.
type failingStore struct {
	policycache.Store
	versionErr, listErr error
}

func (f *failingStore) LastUpdated(ctx context.Context) (int64, error) {
	if f.versionErr != nil {
		return 0, f.versionErr
	}
	return f.Store.LastUpdated(ctx)
}

func (f *failingStore) Snapshot(ctx context.Context) ([]models.Policy, int64, error) {
	if f.listErr != nil {
		return nil, 0, f.listErr
	}
	return f.Store.Snapshot(ctx)
}

func TestDatabaseFailures(t *testing.T) {
	st, _, _ := apitest.NewStore(t)
	ctx := apitest.Ctx(t)
	apitest.Create(t, st, apitest.Policy("a", "b", "tcp", 8080, 8080))
	boom := errors.New("connection refused")
	fs := &failingStore{Store: st}
	c := policycache.New(fs, policycache.Options{MaxAge: 50 * time.Millisecond})

	fs.listErr = boom
	if err := c.Refresh(ctx); !errors.Is(err, boom) {
		t.Fatalf("Refresh with a failing list: %v", err)
	}
	if _, _, err := c.All(ctx); !errors.Is(err, boom) {
		t.Fatalf("All without snapshot and with a failing database: %v", err)
	}
	fs.listErr = nil
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	fs.versionErr = boom
	if err := c.Refresh(ctx); !errors.Is(err, boom) {
		t.Fatalf("Refresh with a failing version read: %v", err)
	}
	time.Sleep(60 * time.Millisecond)
	if c.Fresh() != nil {
		t.Fatal("a snapshot that could not be confirmed is still served")
	}
}

func TestRunStopsWithContext(t *testing.T) {
	st, _, _ := apitest.NewStore(t)
	c := policycache.New(st, policycache.Options{CheckInterval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for c.Fresh() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if c.Fresh() == nil {
		t.Fatal("Run did not load a snapshot")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}

// movingStore's version moves on every read, as during a bulk import, and each full
// load takes load and is recorded.
type movingStore struct {
	policycache.Store
	load    time.Duration
	mu      sync.Mutex
	version int64
	loads   [][2]time.Time // start, end
}

func (m *movingStore) LastUpdated(context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.version++
	return m.version, nil
}

func (m *movingStore) Snapshot(context.Context) ([]models.Policy, int64, error) {
	start := time.Now()
	time.Sleep(m.load)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.loads = append(m.loads, [2]time.Time{start, time.Now()})
	m.version++
	return nil, m.version, nil
}

// While the version keeps moving, Run does not rebuild back to back: it pauses at
// least RebuildPause, and at least as long as the last rebuild took.
func TestRunSpacesRebuildsWhileTheVersionMoves(t *testing.T) {
	for _, tc := range []struct {
		name        string
		load, pause time.Duration
		wantGap     time.Duration
	}{
		{"pause longer than a rebuild", 5 * time.Millisecond, 40 * time.Millisecond, 40 * time.Millisecond},
		{"rebuild longer than the pause", 40 * time.Millisecond, time.Millisecond, 40 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &movingStore{load: tc.load}
			c := policycache.New(m, policycache.Options{CheckInterval: time.Millisecond, RebuildPause: tc.pause})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			// Notifications arrive all the time, too.
			for end := time.Now().Add(600 * time.Millisecond); time.Now().Before(end); time.Sleep(time.Millisecond) {
				c.Changed(0)
			}
			cancel()
			<-done
			m.mu.Lock()
			defer m.mu.Unlock()
			if len(m.loads) < 3 {
				t.Fatalf("%d rebuilds in 600ms while the version moved; want it to keep rebuilding", len(m.loads))
			}
			for i := 1; i < len(m.loads); i++ {
				if gap := m.loads[i][0].Sub(m.loads[i-1][1]); gap < tc.wantGap {
					t.Fatalf("rebuild %d started %s after the previous one ended; want at least %s", i, gap, tc.wantGap)
				}
			}
			t.Logf("%d rebuilds in 600ms", len(m.loads))
		})
	}
}

// The freshness promise holds while rebuilds are spaced out: with a change committed
// every few milliseconds, every answer holds every change committed more than a second
// before it was asked for, whether it comes from a snapshot or from the database.
func TestFreshWithinASecondWhileTheVersionMoves(t *testing.T) {
	st, _, _ := apitest.NewStore(t)
	ctx := apitest.Ctx(t)
	c := policycache.New(st, policycache.Options{RebuildPause: 300 * time.Millisecond})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go c.Run(runCtx)

	var mu sync.Mutex
	committed := map[string]time.Time{} // destination id -> when its Create returned
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		for i := 0; runCtx.Err() == nil && i < 400; i++ {
			dst := fmt.Sprintf("d%04d", i)
			if err := st.Create(runCtx, []models.Policy{apitest.Policy("src", dst, "tcp", 8080, 8080)}); err != nil {
				return
			}
			mu.Lock()
			committed[dst] = time.Now()
			mu.Unlock()
			time.Sleep(3 * time.Millisecond)
		}
	}()
	checked := 0
	for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); time.Sleep(7 * time.Millisecond) {
		asked := time.Now()
		got, err := c.ByGroupIDs(ctx, []string{"src"})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, p := range got {
			seen[p.Destination.ID] = true
		}
		mu.Lock()
		for dst, at := range committed {
			if asked.Sub(at) > time.Second && !seen[dst] {
				mu.Unlock()
				t.Fatalf("policy to %s committed %s before the request is missing from its answer", dst, asked.Sub(at))
			}
			if asked.Sub(at) > time.Second {
				checked++
			}
		}
		mu.Unlock()
	}
	cancel()
	<-writing
	if checked == 0 {
		t.Fatal("no answer was old enough to check")
	}
}

// racingStore commits a change right after a version read, as another replica might
// while the cache loads.
type racingStore struct {
	*store.Store
	change func()
}

func (r *racingStore) LastUpdated(ctx context.Context) (int64, error) {
	v, err := r.Store.LastUpdated(ctx)
	if r.change != nil {
		r.change()
		r.change = nil
	}
	return v, err
}

// A change committed between the version check and the load is in the snapshot, and
// the snapshot carries its version: the next check confirms it instead of rebuilding.
func TestChangeDuringLoadIsNotRebuiltTwice(t *testing.T) {
	st, _, _ := apitest.NewStore(t)
	ctx := apitest.Ctx(t)
	apitest.Create(t, st, apitest.Policy("a", "b", "tcp", 8080, 8080))
	rs := &racingStore{Store: st, change: func() { apitest.Create(t, st, apitest.Policy("a", "c", "tcp", 8080, 8080)) }}
	rebuilds := &countingObserver{}
	c := policycache.New(rs, policycache.Options{MaxAge: time.Hour, Observe: rebuilds})
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := c.ByGroupIDs(ctx, []string{"a"})
	if err != nil || len(got) != 2 {
		t.Fatalf("snapshot after a change during the load: %v, %v; want both policies", keys(got), err)
	}
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if rebuilds.rebuilds != 1 {
		t.Fatalf("%d rebuilds, want 1: the second check should confirm the snapshot", rebuilds.rebuilds)
	}
}
