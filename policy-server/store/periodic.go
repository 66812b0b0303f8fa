package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Job names a periodic job that one replica at a time runs.
type Job string

// The policy server's periodic jobs.
const (
	JobSecurityGroupSync Job = "security_group_sync"
	JobPolicyCleanup     Job = "policy_cleanup"
)

// jobLockKeys are the advisory lock keys of the jobs, beside the store's other keys.
var jobLockKeys = map[Job]int64{
	JobSecurityGroupSync: 0x6e65746d616e03, // "netman" + 3
	JobPolicyCleanup:     0x6e65746d616e04, // "netman" + 4
}

// RunPeriodic runs fn for job unless another replica is running it right now or
// completed it less than every/2 ago: with n replicas each calling RunPeriodic every
// `every`, the job runs about once per `every`, never twice at once. It holds a
// transaction-scoped advisory lock (try, never wait) for the whole of fn, so a replica
// that dies mid-job frees it with its connection. fn gets the state the last
// successful run left and returns the next one; its store writes go through the
// Store's own methods (their own transactions). When fn fails, the run is not
// recorded, so the next call, here or on another replica, tries again.
func (s *Store) RunPeriodic(ctx context.Context, job Job, every time.Duration, fn func(ctx context.Context, state string) (string, error)) (ran bool, err error) {
	key, ok := jobLockKeys[job]
	if !ok {
		return false, fmt.Errorf("periodic job %q is unknown", job)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("%s: beginning transaction: %w", job, err)
	}
	defer tx.Rollback()
	var locked bool
	if err := tx.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock($1)`, key).Scan(&locked); err != nil {
		return false, fmt.Errorf("%s: taking the job lock: %w", job, err)
	}
	if !locked {
		return false, nil
	}
	var state string
	var fresh bool
	err = tx.QueryRowContext(ctx,
		`SELECT state, last_run > now() - make_interval(secs => $2) FROM periodic_jobs WHERE name = $1`,
		string(job), (every/2).Seconds()).Scan(&state, &fresh)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return false, fmt.Errorf("%s: reading the last run: %w", job, err)
	case fresh:
		return false, nil
	}
	next, err := fn(ctx, state)
	if err != nil {
		return true, err
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO periodic_jobs (name, last_run, state) VALUES ($1, now(), $2)
		ON CONFLICT (name) DO UPDATE SET last_run = now(), state = $2`, string(job), next); err != nil {
		return true, fmt.Errorf("%s: recording the run: %w", job, err)
	}
	if err := tx.Commit(); err != nil {
		return true, fmt.Errorf("%s: recording the run: %w", job, err)
	}
	return true, nil
}
