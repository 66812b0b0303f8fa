package policycache_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"netman/internal/testsupport/freezeproxy"
	"netman/internal/testsupport/pgtest"
	"netman/lib/models"
	"netman/policy-server/api/apitest"
	"netman/policy-server/policycache"
	"netman/policy-server/store"
)

// encodeKey is a test encoder: it writes what the policy is, so a test can check that
// the encoded form went with the right policy.
func encodeKey(b []byte, p *policycache.Policy) []byte {
	return fmt.Appendf(b, "%s(%s)>%s(%s)/%s:%d-%d", p.Source.ID, p.Source.Tag, p.Destination.ID, p.Destination.Tag, p.Protocol, p.Start, p.End)
}

func keys(ps []*policycache.Policy) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = string(encodeKey(nil, p))
		if enc := string(p.AppendEncoded(nil, 0)); enc != out[i] {
			out[i] += " ENCODED AS " + enc
		}
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

type countingObserver struct {
	rebuilds, applied, fallbacks atomic.Int64
}

func (o *countingObserver) Rebuilt(int64, int, time.Duration)      { o.rebuilds.Add(1) }
func (o *countingObserver) Applied(int64, int, int, time.Duration) { o.applied.Add(1) }
func (o *countingObserver) Fallback()                              { o.fallbacks.Add(1) }

func serve(t *testing.T, c *policycache.Cache) *policycache.Snapshot {
	t.Helper()
	snap, confirmed, err := c.Serve(apitest.Ctx(t))
	if err != nil || !confirmed {
		t.Fatalf("Serve: confirmed=%v, %v", confirmed, err)
	}
	return snap
}

// checkMatches: the snapshot lists exactly what the store lists, in the same order
// with the same tags, and answers every id filter as the store's SQL does.
func checkMatches(t *testing.T, st *store.Store, snap *policycache.Snapshot, idSets [][]string) {
	t.Helper()
	ctx := apitest.Ctx(t)
	want, version, err := st.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Version != version {
		t.Fatalf("snapshot version %d, store %d", snap.Version, version)
	}
	if got := keys(slices.Collect(snap.All())); !slices.Equal(got, modelKeys(want)) {
		t.Fatalf("snapshot differs from the store:\n got %v\nwant %v", got, modelKeys(want))
	}
	if snap.Len() != len(want) {
		t.Fatalf("Len %d, want %d", snap.Len(), len(want))
	}
	for _, ids := range idSets {
		want, err := st.ByGroupIDs(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		if got := keys(snap.Lookup(ids)); !slices.Equal(got, modelKeys(want)) {
			t.Fatalf("ids %v:\nsnapshot %v\nstore    %v", ids, got, modelKeys(want))
		}
	}
}

func randomIDSets(rng *rand.Rand, groups []string) [][]string {
	sets := [][]string{{groups[0]}, {"not-a-group"}, groups[:min(50, len(groups))]}
	for range 20 {
		var ids []string
		for range 1 + rng.IntN(20) {
			ids = append(ids, groups[rng.IntN(len(groups))])
		}
		slices.Sort(ids)
		sets = append(sets, slices.Compact(ids))
	}
	return sets
}

func TestSnapshotMatchesStore(t *testing.T) {
	t.Parallel()
	st, db, _ := apitest.NewStore(t)
	ctx := apitest.Ctx(t)
	groups, err := store.Seed(ctx, db, 3000, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	// A range, a udp policy and a self policy, which the seed does not make.
	if err := st.Create(ctx, []models.Policy{
		apitest.Policy(groups[0], groups[1], "tcp", 9000, 9010), apitest.Policy(groups[0], groups[1], "udp", 53, 53), apitest.Policy(groups[2], groups[2], "tcp", 5555, 5555),
	}); err != nil {
		t.Fatal(err)
	}
	c := policycache.New(st, policycache.Options{Encoding: policycache.Separately(encodeKey)})
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	checkMatches(t, st, serve(t, c), append(randomIDSets(rand.New(rand.NewPCG(3, 4)), groups), []string{groups[2]}))
}

// TestChangesAreApplied: across hundreds of random creates and deletes (new groups,
// groups deleted with their last policy and their tags reused, ranges, self policies),
// the snapshot the changes produce always equals what the store lists, and the cache
// loaded everything only once, at the start.
func TestChangesAreApplied(t *testing.T) {
	t.Parallel()
	st, db, _ := apitest.NewStore(t)
	ctx := apitest.Ctx(t)
	groups, err := store.Seed(ctx, db, 2000, rand.New(rand.NewPCG(5, 6)))
	if err != nil {
		t.Fatal(err)
	}
	obs := &countingObserver{}
	c := policycache.New(st, policycache.Options{MaxAge: time.Hour, Encoding: policycache.Separately(encodeKey), Observe: obs})
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	ids := append(slices.Clone(groups[:40]), "new-a", "new-b", "new-c", "new-d")
	randomPolicy := func() models.Policy {
		src, dst := ids[rng.IntN(len(ids))], ids[rng.IntN(len(ids))]
		start := 1000 + rng.IntN(5)
		return apitest.Policy(src, dst, []string{"tcp", "udp"}[rng.IntN(2)], start, start+rng.IntN(2)*10)
	}
	var created []models.Policy
	// For fixed id sets, the answer and Changed: LookupChanged's version must move whenever
	// the answer does (it is the ETag a long poll compares).
	type seen struct {
		answer  []string
		changed int64
	}
	lookupSeen := func(snap *policycache.Snapshot, ids []string) seen {
		ps, changed := snap.LookupChanged(ids)
		return seen{keys(ps), changed}
	}
	watched := [][]string{{"new-a"}, {"new-b", "new-c"}, {ids[0]}, {ids[1], ids[2], "new-d"}, {"never"}}
	last := make([]seen, len(watched))
	for i, set := range watched {
		snap := serve(t, c)
		last[i] = lookupSeen(snap, set)
	}
	for round := range 150 {
		var batch []models.Policy
		for range 1 + rng.IntN(4) {
			batch = append(batch, randomPolicy())
		}
		if rng.IntN(3) == 0 && len(created) > 0 {
			// Delete policies made here (groups new-* then lose their last policy) and
			// ones of the seed.
			rng.Shuffle(len(created), func(i, j int) { created[i], created[j] = created[j], created[i] })
			n := min(len(created), 1+rng.IntN(5))
			batch = append(created[:n:n], batch...)
			created = created[n:]
			if err := st.Delete(ctx, batch); err != nil {
				t.Fatal(err)
			}
		} else {
			if err := st.Create(ctx, batch); err != nil {
				t.Fatal(err)
			}
			created = append(created, batch...)
		}
		if err := c.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		snap := serve(t, c)
		for i, set := range watched {
			now := lookupSeen(snap, set)
			if now.changed > snap.Version || now.changed < last[i].changed {
				t.Fatalf("round %d, ids %v: Changed %d (was %d, version %d)", round, set, now.changed, last[i].changed, snap.Version)
			}
			if !slices.Equal(now.answer, last[i].answer) && now.changed == last[i].changed {
				t.Fatalf("round %d, ids %v: the answer changed but Changed stayed %d:\nwas %v\nnow %v", round, set, now.changed, last[i].answer, now.answer)
			}
			last[i] = now
		}
		if round%10 == 0 || round == 149 {
			checkMatches(t, st, serve(t, c), randomIDSets(rng, ids))
		}
	}
	if n := obs.rebuilds.Load(); n != 1 {
		t.Errorf("%d full loads, want 1 (the first)", n)
	}
	if n := obs.applied.Load(); n < 100 {
		t.Errorf("changes applied %d times over 150 writes", n)
	}
}

// TestGapAndMisfitReload: when the log no longer reaches the snapshot's version, or a
// logged change does not fit the snapshot, the cache loads everything and is right.
func TestGapAndMisfitReload(t *testing.T) {
	t.Parallel()
	st, db, _ := apitest.NewStore(t)
	ctx := apitest.Ctx(t)
	if err := st.Create(ctx, []models.Policy{apitest.Policy("a", "b", "tcp", 1, 1)}); err != nil {
		t.Fatal(err)
	}
	obs := &countingObserver{}
	c := policycache.New(st, policycache.Options{MaxAge: time.Hour, Encoding: policycache.Separately(encodeKey), Observe: obs})
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(ctx, []models.Policy{apitest.Policy("a", "c", "tcp", 1, 1)}); err != nil {
		t.Fatal(err)
	}
	pgtest.MustExec(t, db, `DELETE FROM policy_changes`)
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	checkMatches(t, st, serve(t, c), [][]string{{"a"}, {"c"}})
	if n := obs.rebuilds.Load(); n != 2 {
		t.Errorf("after a gap: %d full loads, want 2", n)
	}
	// A logged change that adds a policy the snapshot holds already.
	pgtest.MustExec(t, db, `WITH v AS (UPDATE store_meta SET version = version + 1 RETURNING version)
		INSERT INTO policy_changes (version, added, source_ids, source_tags, dest_ids, dest_tags, protocols, start_ports, end_ports)
		SELECT version, true, '{a}', '{1}', '{b}', '{2}', '{tcp}', '{1}', '{1}' FROM v`)
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	checkMatches(t, st, serve(t, c), [][]string{{"a"}, {"b"}})
	if n := obs.rebuilds.Load(); n != 3 {
		t.Errorf("after a change that does not fit: %d full loads, want 3", n)
	}
}

// TestFullCheckRepairs: a change that bypassed the triggers (TRUNCATE) is found by the
// periodic full check, which replaces the snapshot, also when a routine check confirms
// the snapshot while the full check encodes its replacement.
func TestFullCheckRepairs(t *testing.T) {
	t.Parallel()
	st, db, _ := apitest.NewStore(t)
	ctx := apitest.Ctx(t)
	if err := st.Create(ctx, []models.Policy{apitest.Policy("a", "b", "tcp", 1, 1), apitest.Policy("b", "c", "tcp", 1, 1)}); err != nil {
		t.Fatal(err)
	}
	// The encoding runs a routine check (which confirms the snapshot: a new state) the
	// first time it is called once armed: in the second full check below, between the
	// comparison and the replacement, as checks every 200 ms can.
	var c *policycache.Cache
	var armed atomic.Bool
	enc := policycache.Separately(encodeKey)
	confirmMeanwhile := policycache.Encoding{Forms: enc.Forms, Encode: func(b []byte, p *policycache.Policy, forms []policycache.Form) []byte {
		if armed.CompareAndSwap(true, false) {
			if err := c.Refresh(ctx); err != nil {
				t.Error(err)
			}
		}
		return enc.Encode(b, p, forms)
	}}
	c = policycache.New(st, policycache.Options{MaxAge: time.Hour, Encoding: confirmMeanwhile})
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	pgtest.MustExec(t, db, `TRUNCATE policies`)
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if serve(t, c).Len() != 2 {
		t.Fatal("the TRUNCATE was seen without a full check; this test proves nothing")
	}
	if err := c.FullCheck(ctx); err != nil {
		t.Fatal(err)
	}
	if n := serve(t, c).Len(); n != 0 {
		t.Fatalf("after the full check the snapshot holds %d policies, want 0", n)
	}
	// Once more with a policy to serve: the snapshot holds x -> y and p -> q, the
	// database only p -> q. The replacement (compared without its forms) is served with
	// them, and future changes are encoded too.
	if err := st.Create(ctx, []models.Policy{apitest.Policy("x", "y", "tcp", 1, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// Another replica, which runs no full check of its own.
	other := policycache.New(st, policycache.Options{MaxAge: time.Hour, Encoding: enc})
	if err := other.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	pgtest.MustExec(t, db, `TRUNCATE policies`)
	if err := st.Create(ctx, []models.Policy{apitest.Policy("p", "q", "tcp", 1, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if serve(t, c).Len() != 2 {
		t.Fatal("the second TRUNCATE was seen without a full check; this test proves nothing")
	}
	if err := other.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if serve(t, other).Len() != 2 {
		t.Fatal("the other replica saw the second TRUNCATE; this test proves nothing")
	}
	before := serve(t, c)
	armed.Store(true)
	if err := c.FullCheck(ctx); err != nil {
		t.Fatal(err)
	}
	if armed.Load() {
		t.Fatal("the full check never encoded its snapshot; this test proves nothing")
	}
	// The version moved on without a logged change: every replica loads everything,
	// and a client holding an answer of the old version gets a new one.
	if err := other.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if snap := serve(t, other); snap.Len() != 1 || snap.Version <= before.Version {
		t.Fatalf("the other replica after the full check: %d policies at version %d, want 1 after version %d", snap.Len(), snap.Version, before.Version)
	}
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, changed := serve(t, c).LookupChanged([]string{"p"}); changed <= before.Version {
		t.Fatalf("after the full check the answer for p changed at %d, not after %d: a client holding it gets 304", changed, before.Version)
	}
	if err := st.Create(ctx, []models.Policy{apitest.Policy("p", "r", "tcp", 1, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	snap := serve(t, c)
	got := keys(snap.Lookup([]string{"p", "x"}))
	want := []string{"p(0006)>q(0007)/tcp:1-1", "p(0006)>r(0008)/tcp:1-1"}
	if !slices.Equal(got, want) || snap.Len() != 2 {
		t.Fatalf("after the second full check and a change: %d policies, lookup of p and x %q, want %q", snap.Len(), got, want)
	}
	hits, _ := snap.AppendLookup(nil, []string{"p", "q", "r"})
	if len(hits) != 2 || string(hits[0].AppendEncoded(nil, 0)) != want[0] || string(hits[1].AppendEncoded(nil, 0)) != want[1] {
		t.Fatalf("after the second full check and a change: hits %v", hits)
	}
}

// TestMovedAndRun: Run follows a change at once through Changed (as the store's
// notifications call it), and Moved tells a waiting client.
func TestMovedAndRun(t *testing.T) {
	t.Parallel()
	st, _, _ := apitest.NewStore(t)
	ctx := apitest.Ctx(t)
	c := policycache.New(st, policycache.Options{CheckInterval: time.Hour})
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	v := serve(t, c).Version
	moved := c.Moved(v)
	select {
	case <-moved:
		t.Fatal("Moved closed before any change")
	default:
	}
	if err := st.Create(ctx, []models.Policy{apitest.Policy("a", "b", "tcp", 1, 1)}); err != nil {
		t.Fatal(err)
	}
	c.Changed(0)
	select {
	case <-moved:
	case <-time.After(10 * time.Second):
		t.Fatal("Moved not closed 10s after the change")
	}
	if snap := serve(t, c); snap.Len() != 1 || snap.Version == v {
		t.Fatalf("after the change: version %d (was %d), %d policies", snap.Version, v, snap.Len())
	}
	select {
	case <-c.Moved(v):
	default:
		t.Fatal("Moved(an old version) is not closed")
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestHungDatabase: with the database hanging (a proxy in front of it stops forwarding,
// as a SIGSTOPped Postgres would), requests are answered within their deadline from the
// last snapshot marked unconfirmed, until StaleLimit; then ErrUnavailable; and once the
// database answers again, confirmed.
func TestHungDatabase(t *testing.T) {
	t.Parallel()
	_, _, dsn := apitest.NewStore(t)
	proxy, viaProxy := freezeproxy.ForDSN(t, dsn)
	db, err := sql.Open("postgres", viaProxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st, err := store.New(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := apitest.Ctx(t)
	if err := st.Create(ctx, []models.Policy{apitest.Policy("a", "b", "tcp", 1, 1)}); err != nil {
		t.Fatal(err)
	}
	const maxAge, staleLimit = 200 * time.Millisecond, 1500 * time.Millisecond
	c := policycache.New(st, policycache.Options{MaxAge: maxAge, StaleLimit: staleLimit, QueryTimeout: 300 * time.Millisecond})
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	_, confirmedAt := c.Current()
	proxy.Freeze()
	sawUnconfirmed := false
	for {
		rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		start := time.Now()
		snap, confirmed, err := c.Serve(rctx)
		took := time.Since(start)
		cancel()
		if took > 500*time.Millisecond {
			t.Fatalf("Serve took %s with a 500ms deadline", took)
		}
		age := time.Since(confirmedAt)
		if err != nil {
			if !errors.Is(err, policycache.ErrUnavailable) {
				t.Fatalf("Serve: %v", err)
			}
			if age < staleLimit {
				t.Fatalf("unavailable %s after the last confirmation, before the stale limit %s", age, staleLimit)
			}
			break
		}
		if snap.Len() != 1 {
			t.Fatalf("served %d policies", snap.Len())
		}
		if !confirmed {
			sawUnconfirmed = true
		} else if age > maxAge+100*time.Millisecond {
			t.Fatalf("served as confirmed %s after the last confirmation", age)
		}
		if age > staleLimit+time.Second {
			t.Fatalf("still served %s after the last confirmation", age)
		}
		time.Sleep(20 * time.Millisecond) // pacing: answers while checks fail come at once
	}
	if !sawUnconfirmed {
		t.Error("never served unconfirmed before giving up")
	}
	proxy.Thaw()
	for c.Refresh(ctx) != nil {
		if ctx.Err() != nil {
			t.Fatal("not confirmed again after the database came back")
		}
	}
	if _, confirmed, err := c.Serve(ctx); !confirmed || err != nil {
		t.Fatalf("after the database came back: confirmed=%v, %v", confirmed, err)
	}
}

// gatedStore holds every Changes call until released and counts them.
type gatedStore struct {
	*store.Store
	gate    chan struct{}
	entered chan struct{}
	once    sync.Once
	calls   atomic.Int64
}

func (g *gatedStore) Changes(ctx context.Context, since int64) (int64, []models.Change, bool, error) {
	g.calls.Add(1)
	g.once.Do(func() { close(g.entered) })
	<-g.gate
	return g.Store.Changes(ctx, since)
}

// TestServeCoalesces: requests that find the snapshot unconfirmed share one read.
func TestServeCoalesces(t *testing.T) {
	t.Parallel()
	st, _, _ := apitest.NewStore(t)
	ctx := apitest.Ctx(t)
	g := &gatedStore{Store: st, gate: make(chan struct{}), entered: make(chan struct{})}
	c := policycache.New(g, policycache.Options{MaxAge: time.Nanosecond, FallbackWait: time.Minute})
	if err := c.Refresh(ctx); err != nil { // the first load reads Snapshot, not Changes
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var started sync.WaitGroup
	for range 50 {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			if _, _, err := c.Serve(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	<-g.entered // the shared read has started and is held
	started.Wait()
	close(g.gate)
	wg.Wait()
	// With MaxAge 1ns every request finds the snapshot unconfirmed; all of them joined
	// the one read under way (a request that got past the check after the read ended may
	// start one more).
	if n := g.calls.Load(); n > 2 {
		t.Errorf("50 requests made %d reads, want them to share one", n)
	}
}

func TestNoSnapshotIsUnavailable(t *testing.T) {
	t.Parallel()
	c := policycache.New(failing{}, policycache.Options{QueryTimeout: 50 * time.Millisecond, FallbackWait: 50 * time.Millisecond})
	if _, _, err := c.Serve(apitest.Ctx(t)); !errors.Is(err, policycache.ErrUnavailable) {
		t.Fatalf("Serve without a snapshot: %v", err)
	}
}

type failing struct{}

func (failing) Snapshot(context.Context) ([]models.Policy, int64, error) {
	return nil, 0, errors.New("down")
}
func (failing) Changes(context.Context, int64) (int64, []models.Change, bool, error) {
	return 0, nil, false, errors.New("down")
}
func (failing) Invalidate(context.Context) error { return errors.New("down") }
