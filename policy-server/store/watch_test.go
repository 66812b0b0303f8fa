package store_test

import (
	"context"
	"database/sql"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"netman/internal/testsupport/syncbuf"
	"netman/lib/models"
	"netman/policy-server/store"
)

func TestLastUpdatedAndCounts(t *testing.T) {
	t.Parallel()
	s, db, _ := newStore(t, 0)
	ctx := ctxT(t)
	a := pol("a", "b", "tcp", 8080, 8080)
	b := pol("b", "c", "udp", 53, 53)
	steps := []struct {
		name         string
		do           func() error
		grows        bool
		policies     int64
		groups       int64
		wantFailures bool
	}{
		{"create", func() error { return s.Create(ctx, []models.Policy{a}) }, true, 1, 2, false},
		{"create again", func() error { return s.Create(ctx, []models.Policy{a}) }, false, 1, 2, false},
		{"create another", func() error { return s.Create(ctx, []models.Policy{a, b}) }, true, 2, 3, false},
		{"failed create", func() error { return s.Create(ctx, []models.Policy{pol("x", "y", "sctp", 1, 1)}) }, false, 2, 3, true},
		{"delete missing", func() error { return s.Delete(ctx, []models.Policy{pol("x", "y", "tcp", 1, 1)}) }, false, 2, 3, false},
		{"ensure existing tag", func() error { _, err := s.EnsureTag(ctx, "a", "app"); return err }, false, 2, 3, false},
		{"ensure new tag", func() error { _, err := s.EnsureTag(ctx, "r", "router"); return err }, true, 2, 4, false},
		{"delete", func() error { return s.Delete(ctx, []models.Policy{b}) }, true, 1, 3, false},
		{"delete again", func() error { return s.Delete(ctx, []models.Policy{b}) }, false, 1, 3, false},
	}
	last, err := s.LastUpdated(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range steps {
		if err := st.do(); (err != nil) != st.wantFailures {
			t.Fatalf("%s: err = %v", st.name, err)
		}
		v, err := s.LastUpdated(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.grows && v <= last {
			t.Errorf("%s: LastUpdated %d -> %d, want growth", st.name, last, v)
		}
		if !st.grows && v != last {
			t.Errorf("%s: LastUpdated %d -> %d, want no change", st.name, last, v)
		}
		last = v
		snap, sv, err := s.Snapshot(ctx)
		if err != nil || sv != v || !slices.Equal(snap, mustAll(t, s)) {
			t.Errorf("%s: Snapshot = version %d (%v), want %d and the policies of All", st.name, sv, err, v)
		}
		p, g, err := s.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var realP, realG int64
		if err := db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM policies), (SELECT count(*) FROM groups)`).Scan(&realP, &realG); err != nil {
			t.Fatal(err)
		}
		if p != st.policies || g != st.groups || p != realP || g != realG {
			t.Errorf("%s: Counts = %d, %d; want %d, %d (tables hold %d, %d)", st.name, p, g, st.policies, st.groups, realP, realG)
		}
	}
}

// TestWatch: a change committed through another replica reaches Watch within a second,
// through NOTIFY alone (polling set to an hour), also when the listening connection was
// cut, and a change that sent no notification is found by the poll.
func TestWatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		poll   time.Duration
		change func(t *testing.T, other *store.Store, db *sql.DB)
	}{
		{"notify", time.Hour, func(t *testing.T, other *store.Store, _ *sql.DB) {
			mustCreate(t, other, pol("a", "b", "tcp", 8080, 8080))
		}},
		{"reconnect", time.Hour, func(t *testing.T, other *store.Store, db *sql.DB) {
			// Cut the listening connection, then change: the notification is lost with
			// the connection, and Watch must find the change when it reconnects.
			var cut int
			for deadline := time.Now().Add(5 * time.Second); cut == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if err := db.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
					WHERE datname = current_database() AND query LIKE 'LISTEN%'`).Scan(&cut); err != nil {
					t.Fatalf("terminating the listener's connection: %v", err)
				}
			}
			if cut != 1 {
				t.Fatalf("terminated %d listening connections, want 1", cut)
			}
			mustCreate(t, other, pol("a", "b", "tcp", 8080, 8080))
		}},
		{"poll", 100 * time.Millisecond, func(t *testing.T, _ *store.Store, db *sql.DB) {
			// As if the notification were lost.
			if _, err := db.Exec(`UPDATE store_meta SET version = version + 1`); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			watcher, _, dsn := newStore(t, 0)
			otherDB, err := sql.Open("postgres", dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { otherDB.Close() })
			other, err := store.New(otherDB, store.Options{})
			if err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithCancel(ctxT(t))
			versions := make(chan int64, 16)
			done := make(chan error, 1)
			go func() {
				done <- watcher.Watch(ctx, dsn, tc.poll, func(v int64) { versions <- v })
			}()
			var initial int64
			select {
			case initial = <-versions:
			case <-time.After(5 * time.Second):
				t.Fatal("Watch did not report the current version at start")
			}
			// Give LISTEN a moment to be in place; Watch checks the version once it is,
			// so a change before that would also be reported, by that check.
			time.Sleep(300 * time.Millisecond)
			select {
			case v := <-versions:
				t.Fatalf("Watch reported version %d without a change", v)
			default:
			}

			tc.change(t, other, otherDB)
			changed := time.Now()
			select {
			case v := <-versions:
				if v <= initial {
					t.Errorf("Watch reported %d after %d", v, initial)
				}
				t.Logf("change seen after %s", time.Since(changed))
			case <-time.After(time.Second):
				t.Fatal("Watch did not see the change within 1s")
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Watch returned %v after cancel", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Watch did not return after its context ended")
			}
		})
	}
}

// TestWatchVersionReadsHaveADeadline: a version read that cannot finish (here: the
// version row is locked) ends after QueryTimeout, and Watch carries on and reports the
// version once the database answers again.
func TestWatchVersionReadsHaveADeadline(t *testing.T) {
	t.Parallel()
	_, db, dsn := newStore(t, 0)
	logs := &syncbuf.Buffer{}
	watcher, err := store.New(db, store.Options{
		Logger:       slog.New(slog.NewJSONHandler(logs, nil)),
		QueryTimeout: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	lock, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback()
	if _, err := lock.ExecContext(ctx, `LOCK TABLE store_meta IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	versions := make(chan int64, 16)
	go watcher.Watch(ctx, dsn, 50*time.Millisecond, func(v int64) { versions <- v })
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), "cannot read the version"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no failed version read logged while the version was locked; logs:\n%s", logs)
		}
	}
	select {
	case v := <-versions:
		t.Fatalf("Watch reported version %d while it could not be read", v)
	default:
	}
	if err := lock.Rollback(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-versions:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not report the version after the lock was released")
	}
}
