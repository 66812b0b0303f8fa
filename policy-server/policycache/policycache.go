// Package policycache keeps an in-memory, immutable snapshot of every policy so the
// internal API answers every read (lists, filtered polls, policies_last_updated) without
// a database round trip, and tells long-polling clients the moment it moves.
//
// Following changes: every write transaction logs what it changed under the version it
// produces (store.Changes). The cache reads the version and the changes after its own in
// one statement, and applies them to a new snapshot in O(changes) (see Snapshot). It
// loads everything only at start, when the log has a gap (the cache fell further behind
// than the log reaches, or a change does not fit), and on a slow periodic check that
// compares a fresh load with what the changes produced.
//
// Freshness rule: a snapshot is confirmed by the read that produced or re-checked it,
// as of when that read started. It is served as confirmed while that was less than
// MaxAge ago. A change committed at time C therefore cannot be hidden from a request
// served as confirmed after C+MaxAge. Because a check costs one small query whatever the
// number of policies, and runs on every notification and every CheckInterval, a
// snapshot does not expire under writes. When checks fail (the database is down or
// hangs) the last snapshot is still served, marked unconfirmed, until StaleLimit; after
// that requests fail with ErrUnavailable.
package policycache

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"netman/lib/logattr"
	"netman/lib/models"
)

// Store is what the cache reads from.
type Store interface {
	// Snapshot returns every policy and the version they are exactly the state of,
	// read together.
	Snapshot(ctx context.Context) ([]models.Policy, int64, error)
	// Changes returns the current version and the changes after since, read together;
	// complete is false when they do not reach back to since.
	Changes(ctx context.Context, since int64) (version int64, changes []models.Change, complete bool, err error)
	// Invalidate moves the version on without a change, so every replica loads
	// everything again (FullCheck, when the log missed a write).
	Invalidate(ctx context.Context) error
}

// ErrUnavailable is returned when no snapshot can be served: none was ever loaded, or
// the last one could not be confirmed for longer than StaleLimit.
var ErrUnavailable = errors.New("policies unavailable")

// Options tune a Cache.
type Options struct {
	// MaxAge is how long after its confirmation a snapshot is served as confirmed
	// (default 900ms: a committed change is served everywhere within a second).
	MaxAge time.Duration
	// CheckInterval is how often the version is checked without a notification
	// (default 200ms).
	CheckInterval time.Duration
	// QueryTimeout bounds each check (default 5s).
	QueryTimeout time.Duration
	// LoadTimeout bounds loading all policies (default 2m).
	LoadTimeout time.Duration
	// FullCheckInterval is how often a full load is compared with the snapshot the
	// changes produced (default 10m). It runs beside the checks and never delays them.
	FullCheckInterval time.Duration
	// StaleLimit is how long after its confirmation a snapshot is still served, marked
	// unconfirmed, while the database cannot be reached (default 2m). Agents keep
	// enforcing what they have either way; serving it lets a restarted agent enforce
	// the last known policies instead of none.
	StaleLimit time.Duration
	// FallbackWait is how long a request that finds the snapshot unconfirmed waits for
	// the check it triggers before it is answered with the unconfirmed snapshot (default
	// 1s, and never past the request's deadline). While checks are known to fail,
	// requests do not wait.
	FallbackWait time.Duration
	// Encoding writes each policy's wire forms once, when it enters a snapshot
	// (Policy.AppendEncoded).
	Encoding Encoding
	Logger   *slog.Logger
	// Observe, when set, is told about loads, applied changes and fallbacks (metrics).
	Observe Observer
}

// Observer receives the cache's events.
type Observer interface {
	// Rebuilt: all policies were loaded.
	Rebuilt(version int64, policies int, took time.Duration)
	// Applied: changes moved the snapshot to version, which holds policies.
	Applied(version int64, policies, changes int, took time.Duration)
	// Fallback: a request found the snapshot unconfirmed and had to wait for a check
	// (or be answered unconfirmed).
	Fallback()
}

// Cache holds the current snapshot. It is safe for concurrent use.
type Cache struct {
	store Store
	opts  Options
	seed  maphash.Seed
	kick  chan struct{}

	state   atomic.Pointer[state]
	failing atomic.Bool // the last check failed

	mu       sync.Mutex // guards the fields below and serialises installs
	inflight *flight
	moved    chan struct{} // closed when a snapshot of another version is installed
}

type state struct {
	snap      *Snapshot
	confirmed time.Time // when the read that produced or confirmed snap started
}

// flight is one check, shared by every caller that wants it.
type flight struct {
	started time.Time
	done    chan struct{}
	err     error
}

// New returns a Cache with no snapshot; Refresh or Run loads one.
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
	if opts.FullCheckInterval <= 0 {
		opts.FullCheckInterval = 10 * time.Minute
	}
	if opts.StaleLimit <= 0 {
		opts.StaleLimit = 2 * time.Minute
	}
	opts.StaleLimit = max(opts.StaleLimit, opts.MaxAge)
	if opts.FallbackWait <= 0 {
		opts.FallbackWait = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Cache{store: store, opts: opts, seed: maphash.MakeSeed(), kick: make(chan struct{}, 1), moved: make(chan struct{})}
}

// Changed asks for an immediate check; pass it to Store.Watch.
func (c *Cache) Changed(int64) {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Refresh runs a check now (joining one under way) and waits for it.
func (c *Cache) Refresh(ctx context.Context) error {
	f := c.check()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// check starts a check unless one is under way, and returns it.
func (c *Cache) check() *flight {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inflight != nil {
		return c.inflight
	}
	f := &flight{started: time.Now(), done: make(chan struct{})}
	c.inflight = f
	go func() {
		f.err = c.refresh(context.Background())
		c.failing.Store(f.err != nil)
		c.mu.Lock()
		c.inflight = nil
		c.mu.Unlock()
		close(f.done)
	}()
	return f
}

// refresh confirms the snapshot, applying the changes since its version, or loads
// everything when there is no snapshot or the changes do not reach it.
func (c *Cache) refresh(ctx context.Context) error {
	cur := c.state.Load()
	if cur == nil {
		return c.rebuild(ctx, "first load")
	}
	started := time.Now()
	qctx, cancel := context.WithTimeout(ctx, c.opts.QueryTimeout)
	version, changes, complete, err := c.store.Changes(qctx, cur.snap.Version)
	cancel()
	if err != nil {
		return fmt.Errorf("reading policy changes: %w", err)
	}
	if !complete {
		return c.rebuild(ctx, fmt.Sprintf("the change log does not reach back to version %d (now %d)", cur.snap.Version, version))
	}
	if version == cur.snap.Version {
		c.install(cur.snap, started)
		return nil
	}
	if n := changedPolicies(changes); n > max(1000, cur.snap.Len()/2) {
		// A bulk import: loading everything is cheaper than replaying it.
		return c.rebuild(ctx, fmt.Sprintf("%d policies changed at once", n))
	}
	next, err := cur.snap.apply(version, changes)
	if err != nil {
		c.opts.Logger.Error("policy changes do not fit the snapshot; loading everything", "error", err)
		return c.rebuild(ctx, "inconsistent change")
	}
	c.install(next, started)
	if c.opts.Observe != nil {
		c.opts.Observe.Applied(version, next.Len(), len(changes), time.Since(started))
	}
	return nil
}

func changedPolicies(changes []models.Change) int {
	n := 0
	for _, c := range changes {
		n += len(c.Policies)
	}
	return n
}

// load reads every policy into a new snapshot, with the policies' forms written by
// encoding.
func (c *Cache) load(ctx context.Context, encoding Encoding) (*Snapshot, time.Time, error) {
	started := time.Now()
	qctx, cancel := context.WithTimeout(ctx, c.opts.LoadTimeout)
	all, version, err := c.store.Snapshot(qctx)
	cancel()
	if err != nil {
		return nil, started, fmt.Errorf("loading policies: %w", err)
	}
	snap := build(version, all, encoding, c.seed)
	took := time.Since(started)
	if c.opts.Observe != nil {
		c.opts.Observe.Rebuilt(version, snap.Len(), took)
	}
	c.opts.Logger.Info("policy snapshot loaded", "version", version, "policies", snap.Len(), logattr.Duration(took))
	return snap, started, nil
}

func (c *Cache) rebuild(ctx context.Context, why string) error {
	c.opts.Logger.Info("loading all policies", "reason", why)
	snap, started, err := c.load(ctx, c.opts.Encoding)
	if err != nil {
		return err
	}
	c.install(snap, started)
	return nil
}

// install makes snap current as confirmed at confirmed, unless a newer version or a
// later confirmation is current already.
func (c *Cache) install(snap *Snapshot, confirmed time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.state.Load()
	if cur != nil && (snap.Version < cur.snap.Version || snap.Version == cur.snap.Version && !confirmed.After(cur.confirmed)) {
		return
	}
	c.state.Store(&state{snap: snap, confirmed: confirmed})
	if cur == nil || cur.snap.Version != snap.Version {
		close(c.moved)
		c.moved = make(chan struct{})
	}
}

// Run keeps the snapshot current until ctx ends: a check on every Changed and every
// CheckInterval, and the full comparison every FullCheckInterval. After failures it
// checks less often (up to every 10s); requests are answered from the last snapshot,
// marked unconfirmed, meanwhile.
func (c *Cache) Run(ctx context.Context) error {
	failures := 0
	fullCheck := time.NewTicker(c.opts.FullCheckInterval)
	defer fullCheck.Stop()
	var fullDone chan struct{}
	for {
		f := c.check()
		select {
		case <-ctx.Done():
			return nil
		case <-f.done:
		}
		wait := c.opts.CheckInterval
		if f.err != nil {
			if failures == 0 {
				c.opts.Logger.Error("policy check failed; serving the last snapshot unconfirmed", "error", f.err)
			}
			failures++
			wait = min(c.opts.CheckInterval<<min(failures, 10), 10*time.Second)
		} else if failures > 0 {
			c.opts.Logger.Info("policy checks recovered", "failed_checks", failures)
			failures = 0
		}
		t := time.NewTimer(wait)
	waiting:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
				break waiting
			case <-c.kick:
				t.Stop()
				break waiting
			case <-fullCheck.C:
				if fullDone == nil {
					fullDone = make(chan struct{})
					go func() {
						defer close(fullDone)
						if err := c.FullCheck(ctx); err != nil && ctx.Err() == nil {
							c.opts.Logger.Warn("periodic full policy check failed", "error", err)
						}
					}()
				}
			case <-fullDone:
				fullDone = nil
			}
		}
	}
}

// FullCheck loads every policy, brings the load up to the snapshot's version with the
// change log, and replaces the snapshot if the two differ (which only a writer that
// bypasses the triggers, such as TRUNCATE, can cause). It reports whether it replaced
// the snapshot.
func (c *Cache) FullCheck(ctx context.Context) error {
	// Without the forms, which are most of a snapshot's memory: the comparison does not
	// need them, and the snapshot it builds is almost always thrown away.
	loaded, _, err := c.load(ctx, Encoding{})
	if err != nil {
		return err
	}
	cur := c.state.Load()
	if cur != nil && cur.snap.Version > loaded.Version {
		qctx, cancel := context.WithTimeout(ctx, c.opts.QueryTimeout)
		version, changes, complete, err := c.store.Changes(qctx, loaded.Version)
		cancel()
		if err != nil {
			return fmt.Errorf("catching up: %w", err)
		}
		if !complete {
			return nil // try again next time
		}
		if loaded, err = loaded.apply(version, changes); err != nil {
			return fmt.Errorf("catching up: %w", err)
		}
	}
	cur = c.state.Load()
	if cur == nil || cur.snap.Version != loaded.Version {
		return nil // moved again meanwhile; the next check compares
	}
	if equal(cur.snap, loaded) {
		return nil
	}
	loaded.encode(c.opts.Encoding)
	c.mu.Lock()
	// Checks confirm the snapshot all the time (a new state each): replace it unless
	// another snapshot took its place meanwhile, keeping the latest confirmation.
	now := c.state.Load()
	replaced := now.snap == cur.snap
	if replaced {
		c.state.Store(&state{snap: loaded, confirmed: now.confirmed})
	}
	c.mu.Unlock()
	if replaced {
		c.opts.Logger.Error("the policy snapshot differed from the database; replaced it", "version", loaded.Version)
	} else {
		c.opts.Logger.Warn("the policy snapshot differed from the database and moved on meanwhile", "version", loaded.Version)
	}
	// The other replicas' snapshots are wrong alike, and clients holding this version's
	// answers would get 304s: a new version without a logged change makes every replica
	// load everything and every client's answer change.
	qctx, cancel := context.WithTimeout(ctx, c.opts.QueryTimeout)
	defer cancel()
	if err := c.store.Invalidate(qctx); err != nil {
		return fmt.Errorf("the snapshot differed from the database: %w", err)
	}
	return nil
}

// Current returns the snapshot as it is, without confirming it: nil before the first
// load. confirmed is when it was last confirmed.
func (c *Cache) Current() (snap *Snapshot, confirmed time.Time) {
	st := c.state.Load()
	if st == nil {
		return nil, time.Time{}
	}
	return st.snap, st.confirmed
}

// Serve returns the snapshot to answer a request from. When the snapshot is older than
// MaxAge it starts (or joins) a check and waits for it up to FallbackWait and ctx's
// deadline, so all requests that arrive meanwhile share one database read. confirmed is
// false when that did not confirm it: the caller should say so (the internal API sends
// a header). err wraps ErrUnavailable when there is no snapshot or it is older than
// StaleLimit.
func (c *Cache) Serve(ctx context.Context) (snap *Snapshot, confirmed bool, err error) {
	st := c.state.Load()
	if st != nil && time.Since(st.confirmed) <= c.opts.MaxAge {
		return st.snap, true, nil
	}
	if c.opts.Observe != nil {
		c.opts.Observe.Fallback()
	}
	f := c.check()
	wait := c.opts.FallbackWait - time.Since(f.started)
	if c.failing.Load() && st != nil && time.Since(st.confirmed) <= c.opts.StaleLimit {
		// Checks are failing: answer unconfirmed at once rather than make every request
		// wait for the next one. (Past the limit, waiting is the only way to an answer.)
		wait = 0
	}
	if dl, ok := ctx.Deadline(); ok {
		// Leave time to write the answer before the deadline.
		wait = min(wait, time.Until(dl)*9/10)
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-f.done:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	st = c.state.Load()
	if st == nil {
		return nil, false, fmt.Errorf("%w: no policy snapshot loaded yet", ErrUnavailable)
	}
	age := time.Since(st.confirmed)
	switch {
	case age <= c.opts.MaxAge:
		return st.snap, true, nil
	case age <= c.opts.StaleLimit:
		return st.snap, false, nil
	}
	return nil, false, fmt.Errorf("%w: the policies could not be confirmed for %s (the limit is %s)",
		ErrUnavailable, age.Round(time.Second), c.opts.StaleLimit)
}

// Moved returns a channel that is closed once the current snapshot's version is no
// longer version (at once if it is not now): a long poll waits on it.
func (c *Cache) Moved(version int64) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.state.Load(); st == nil || st.snap.Version != version {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	return c.moved
}
