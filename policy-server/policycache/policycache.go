// Package policycache keeps an in-memory, immutable snapshot of every policy so the
// internal API can answer agents' polls without a database round trip.
//
// Freshness rule: a snapshot is only served while the database's policy version was
// last confirmed equal to the snapshot's version less than MaxAge ago (measured from
// the start of the confirming query). A change committed at time C therefore cannot
// be hidden from a request served after C+MaxAge: either the snapshot was confirmed
// after C, so it contains the change, or it is too old and the request is answered
// from the database instead. Store.Watch (LISTEN/NOTIFY) only makes rebuilds start
// sooner; correctness does not depend on it.
package policycache

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"netman/lib/models"
)

// Store is what the cache reads from.
type Store interface {
	// Snapshot returns every policy and the version they are exactly the state of,
	// read together.
	Snapshot(ctx context.Context) ([]models.Policy, int64, error)
	ByGroupIDs(ctx context.Context, ids []string) ([]models.Policy, error)
	LastUpdated(ctx context.Context) (int64, error)
}

// Group is a policy group as a snapshot keeps it: one value per id, shared by every
// policy that names the group.
type Group struct {
	ID  string
	Tag string
}

// Policy is the compact form of models.Policy.
type Policy struct {
	Source      *Group
	Destination *Group
	Protocol    string
	Start, End  int32
}

// Snapshot is every policy at one database version, in the stable order (source id,
// destination id, protocol, ports), indexed by group id. It is never modified.
type Snapshot struct {
	Version  int64
	Policies []Policy
	byGroup  map[string][]int32

	bodyOnce sync.Once
	body     []byte
}

// Body returns encode(s), calling encode at most once per snapshot. The internal API
// keeps the encoded full list here so that it lives exactly as long as the snapshot.
func (s *Snapshot) Body(encode func(*Snapshot) []byte) []byte {
	s.bodyOnce.Do(func() { s.body = encode(s) })
	return s.body
}

// Options tune a Cache.
type Options struct {
	// MaxAge is how long a confirmed snapshot may be served (default 900ms, keeping
	// the promise that a committed change is served everywhere within a second).
	MaxAge time.Duration
	// CheckInterval is how often the database version is confirmed (default 200ms).
	CheckInterval time.Duration
	// QueryTimeout bounds each version check (default 5s).
	QueryTimeout time.Duration
	// LoadTimeout bounds loading all policies for a new snapshot (default 2m).
	LoadTimeout time.Duration
	// RebuildPause is the shortest pause Run leaves between the end of one rebuild and
	// the start of the next (default 100ms). While the version keeps moving (a bulk
	// import commits every few milliseconds) the pause also lasts as long as the last
	// rebuild took, so rebuilds use about half the time instead of running back to
	// back, unless that would let the served snapshot expire before the next one is
	// ready (see rebuildPause). A change after a quiet period is picked up at once.
	// Freshness does not depend on it: a snapshot that waits for its rebuild ages out
	// after MaxAge like any other, and requests then go to the database.
	RebuildPause time.Duration
	Logger       *slog.Logger
	// Observe, when set, is told about rebuilds and database fallbacks (metrics).
	Observe Observer
}

// Observer receives the cache's events.
type Observer interface {
	Rebuilt(version int64, policies int, took time.Duration)
	Fallback()
}

// Cache serves policies from a snapshot while it is fresh and from the store otherwise.
type Cache struct {
	store Store
	opts  Options
	kick  chan struct{}
	state atomic.Pointer[state]
}

type state struct {
	snap      *Snapshot
	confirmed time.Time // when the query that confirmed snap.Version started
}

// New returns a Cache with no snapshot; Run loads one and keeps it current.
func New(store Store, opts Options) *Cache {
	if opts.MaxAge <= 0 {
		opts.MaxAge = 900 * time.Millisecond
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = 200 * time.Millisecond
	}
	if opts.QueryTimeout <= 0 {
		opts.QueryTimeout = 5 * time.Second
	}
	if opts.LoadTimeout <= 0 {
		opts.LoadTimeout = 2 * time.Minute
	}
	if opts.RebuildPause <= 0 {
		opts.RebuildPause = 100 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Cache{store: store, opts: opts, kick: make(chan struct{}, 1)}
}

// Changed asks for an immediate version check; pass it to Store.Watch.
func (c *Cache) Changed(int64) {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Refresh confirms the snapshot against the database version, rebuilding it when the
// version moved. Run calls it in a loop; tests call it directly.
func (c *Cache) Refresh(ctx context.Context) error {
	_, _, err := c.refresh(ctx, true)
	return err
}

// refresh is Refresh; when the version moved and mayRebuild is false it leaves the
// snapshot as it is (to age out) and reports pending. took is how long a rebuild took,
// 0 when there was none.
func (c *Cache) refresh(ctx context.Context, mayRebuild bool) (pending bool, took time.Duration, err error) {
	started := time.Now()
	qctx, cancel := context.WithTimeout(ctx, c.opts.QueryTimeout)
	version, err := c.store.LastUpdated(qctx)
	cancel()
	if err != nil {
		return false, 0, fmt.Errorf("reading policy version: %w", err)
	}
	if cur := c.state.Load(); cur != nil && cur.snap.Version == version {
		c.state.Store(&state{snap: cur.snap, confirmed: started})
		return false, 0, nil
	}
	if !mayRebuild {
		return true, 0, nil
	}
	// The snapshot is labelled with the version its policies were read at, not the
	// one just checked: a change committed in between is then in both, and the next
	// check does not rebuild for it again.
	qctx, cancel = context.WithTimeout(ctx, c.opts.LoadTimeout)
	all, version, err := c.store.Snapshot(qctx)
	cancel()
	if err != nil {
		return false, 0, fmt.Errorf("loading policies: %w", err)
	}
	snap := build(version, all)
	c.state.Store(&state{snap: snap, confirmed: started})
	took = time.Since(started)
	if c.opts.Observe != nil {
		c.opts.Observe.Rebuilt(version, len(snap.Policies), took)
	}
	c.opts.Logger.Info("policy snapshot rebuilt", "version", version, "policies", len(snap.Policies), "took_ms", took.Milliseconds())
	return false, took, nil
}

// Run keeps the snapshot current until ctx ends. After a failure it retries with a
// growing pause (up to 10s), so a database that cannot deliver a full load is not
// asked for one every CheckInterval; requests are answered from the database meanwhile.
// Rebuilds are spaced by RebuildPause (see Options).
func (c *Cache) Run(ctx context.Context) error {
	failures := 0
	var nextRebuild time.Time // no rebuild starts before this
	for {
		wait := c.opts.CheckInterval
		pending, took, err := c.refresh(ctx, !time.Now().Before(nextRebuild))
		if took > 0 {
			nextRebuild = time.Now().Add(c.rebuildPause(took))
		}
		kick := c.kick
		if pending {
			// Wake when the rebuild may start; notifications meanwhile say nothing new.
			wait = min(wait, time.Until(nextRebuild))
			kick = nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if failures == 0 {
				c.opts.Logger.Error("policy snapshot check failed; answering from the database", "error", err)
			}
			failures++
			wait = min(c.opts.CheckInterval<<min(failures, 10), 10*time.Second)
		} else if failures > 0 {
			c.opts.Logger.Info("policy snapshot checks recovered", "failed_checks", failures)
			failures = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		case <-kick:
			t.Stop()
		}
	}
}

// rebuildPause is how long Run waits after a rebuild that took took before starting
// another: as long as the rebuild took, but short enough that the next rebuild, if it
// takes as long, is ready before the snapshot just built expires (its confirmation
// started took before now), so polls keep being served from memory; and never less
// than RebuildPause.
func (c *Cache) rebuildPause(took time.Duration) time.Duration {
	return max(c.opts.RebuildPause, min(took, c.opts.MaxAge-2*took-c.opts.RebuildPause))
}

// Fresh returns the snapshot if it may be served now, or nil.
func (c *Cache) Fresh() *Snapshot {
	st := c.state.Load()
	if st == nil || time.Since(st.confirmed) > c.opts.MaxAge {
		return nil
	}
	return st.snap
}

// All returns every policy. snap is the snapshot they came from, or nil when they were
// read from the database because no fresh snapshot exists.
func (c *Cache) All(ctx context.Context) (policies []Policy, snap *Snapshot, err error) {
	if s := c.Fresh(); s != nil {
		return s.Policies, s, nil
	}
	c.fallback()
	all, _, err := c.store.Snapshot(ctx)
	if err != nil {
		return nil, nil, err
	}
	return compact(all), nil, nil
}

// ByGroupIDs returns the policies whose source or destination is one of ids (which
// must hold no duplicates), in the stable order.
func (c *Cache) ByGroupIDs(ctx context.Context, ids []string) ([]*Policy, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if s := c.Fresh(); s != nil {
		return s.Lookup(ids), nil
	}
	c.fallback()
	found, err := c.store.ByGroupIDs(ctx, ids)
	if err != nil {
		return nil, err
	}
	ps := compact(found)
	out := make([]*Policy, len(ps))
	for i := range ps {
		out[i] = &ps[i]
	}
	return out, nil
}

func (c *Cache) fallback() {
	if c.opts.Observe != nil {
		c.opts.Observe.Fallback()
	}
}

// Lookup returns the snapshot's policies that name one of ids, in snapshot order.
func (s *Snapshot) Lookup(ids []string) []*Policy {
	var idx []int32
	for _, id := range ids {
		idx = append(idx, s.byGroup[id]...)
	}
	slices.Sort(idx)
	idx = slices.Compact(idx) // a policy between two requested groups is listed under both
	out := make([]*Policy, len(idx))
	for i, n := range idx {
		out[i] = &s.Policies[n]
	}
	return out
}

func build(version int64, all []models.Policy) *Snapshot {
	ps := compact(all)
	// Two passes: count each group's policies, then fill one shared backing array, so
	// the index costs one allocation instead of one growing slice per group.
	counts := make(map[*Group]int32)
	for i := range ps {
		counts[ps[i].Source]++
		if ps[i].Destination != ps[i].Source {
			counts[ps[i].Destination]++
		}
	}
	total := 0
	for _, n := range counts {
		total += int(n)
	}
	backing := make([]int32, total)
	lists := make(map[*Group][]int32, len(counts))
	off := 0
	for g, n := range counts {
		// Zero length, capacity n: the appends below fill exactly this window.
		lists[g] = backing[off : off : off+int(n)]
		off += int(n)
	}
	// Policies are visited in order, so each group's list comes out sorted.
	for i := range ps {
		p := &ps[i]
		lists[p.Source] = append(lists[p.Source], int32(i))
		if p.Destination != p.Source {
			lists[p.Destination] = append(lists[p.Destination], int32(i))
		}
	}
	byGroup := make(map[string][]int32, len(lists))
	for g, l := range lists {
		byGroup[g.ID] = l
	}
	return &Snapshot{Version: version, Policies: ps, byGroup: byGroup}
}

// compact converts and sorts policies, sharing one Group (and its strings) between all
// the policies that name it.
func compact(all []models.Policy) []Policy {
	groups := make(map[string]*Group)
	group := func(id, tag string) *Group {
		if g, ok := groups[id]; ok {
			return g
		}
		g := &Group{ID: id, Tag: tag}
		groups[id] = g
		return g
	}
	ps := make([]Policy, len(all))
	for i, p := range all {
		ps[i] = Policy{
			Source:      group(p.Source.ID, p.Source.Tag),
			Destination: group(p.Destination.ID, p.Destination.Tag),
			Protocol:    models.InternProtocol(p.Destination.Protocol),
			Start:       int32(p.Destination.Ports.Start),
			End:         int32(p.Destination.Ports.End),
		}
	}
	// The store returns this order already; checking is cheaper than sorting, and
	// sorting keeps the promise for input that is not.
	if !slices.IsSortedFunc(ps, Compare) {
		slices.SortStableFunc(ps, Compare)
	}
	return ps
}

// Key returns p's place in the policy order (models.PolicyKey).
func (p Policy) Key() models.PolicyKey {
	return models.PolicyKey{
		Source: p.Source.ID, Destination: p.Destination.ID, Protocol: p.Protocol,
		Start: int(p.Start), End: int(p.End),
	}
}

// Compare orders policies by source id, destination id, protocol, then ports.
func Compare(a, b Policy) int { return a.Key().Compare(b.Key()) }
