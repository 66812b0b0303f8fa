package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"netman/policy-server/store"
)

func TestRunPeriodicOneReplicaAtATime(t *testing.T) {
	s, db, _ := newStore(t, 2)
	other, err := store.New(db, store.Options{}) // a second replica on the same database
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	inside, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := s.RunPeriodic(ctx, store.JobSecurityGroupSync, time.Hour, func(ctx context.Context, state string) (string, error) {
			close(inside)
			<-release
			return "state-1", nil
		})
		done <- err
	}()
	<-inside
	ran, err := other.RunPeriodic(ctx, store.JobSecurityGroupSync, time.Hour, func(context.Context, string) (string, error) {
		t.Error("second replica ran the job while the first held it")
		return "", nil
	})
	if err != nil || ran {
		t.Fatalf("while held: ran=%v err=%v, want a skip", ran, err)
	}
	// Another job is not blocked by this one.
	if ran, err := other.RunPeriodic(ctx, store.JobPolicyCleanup, time.Hour, func(context.Context, string) (string, error) { return "", nil }); !ran || err != nil {
		t.Fatalf("another job: ran=%v err=%v", ran, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Just done: the other replica skips, it does not redo the work.
	ran, err = other.RunPeriodic(ctx, store.JobSecurityGroupSync, time.Hour, func(context.Context, string) (string, error) {
		t.Error("job ran again right after a run")
		return "", nil
	})
	if err != nil || ran {
		t.Fatalf("right after a run: ran=%v err=%v", ran, err)
	}
	// Once half the interval has passed the job runs again, with the state left.
	var got string
	ran, err = other.RunPeriodic(ctx, store.JobSecurityGroupSync, time.Millisecond, func(ctx context.Context, state string) (string, error) {
		got = state
		return "state-2", nil
	})
	if err != nil || !ran || got != "state-1" {
		t.Fatalf("later: ran=%v err=%v state=%q, want a run with state-1", ran, err, got)
	}
}

func TestRunPeriodicFailureIsNotRecorded(t *testing.T) {
	s, _, _ := newStore(t, 2)
	ctx := ctxT(t)
	boom := errors.New("boom")
	if _, err := s.RunPeriodic(ctx, store.JobPolicyCleanup, time.Hour, func(context.Context, string) (string, error) { return "x", boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	var state string
	ran, err := s.RunPeriodic(ctx, store.JobPolicyCleanup, time.Hour, func(ctx context.Context, st string) (string, error) { state = st; return "y", nil })
	if err != nil || !ran || state != "" {
		t.Fatalf("after a failure: ran=%v err=%v state=%q; want an immediate retry from the old state", ran, err, state)
	}
}
