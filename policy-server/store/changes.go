package store

import (
	"context"
	"fmt"

	"github.com/lib/pq"

	"netman/lib/models"
)

// MaxChanges is the most versions Changes returns at once. A reader further behind gets
// complete == false and loads everything with Snapshot, which is then cheaper than
// replaying the log.
const MaxChanges = 2000

// Changes returns the store's version and the changes that led from version since to
// it, in version order, read in one statement (so the version and the changes are the
// same state). complete is false when they cannot be replayed: the log no longer holds
// every version after since (it keeps the last 10,000), since is ahead of the store (the
// database was replaced), or more than MaxChanges versions passed; the caller must then
// load everything with Snapshot.
func (s *Store) Changes(ctx context.Context, since int64) (version int64, changes []models.Change, complete bool, err error) {
	type result struct {
		version  int64
		changes  []models.Change
		complete bool
	}
	r, err := bounded(ctx, func() (result, error) {
		v, cs, ok, err := s.changes(ctx, since)
		return result{v, cs, ok}, err
	})
	if err != nil {
		return 0, nil, false, fmt.Errorf("reading policy changes: %w", err)
	}
	return r.version, r.changes, r.complete, nil
}

func (s *Store) changes(ctx context.Context, since int64) (int64, []models.Change, bool, error) {
	// The LEFT JOIN returns the version even when nothing changed; the second condition
	// stops a reader far behind from pulling the whole log only to throw it away.
	rows, err := s.db.QueryContext(ctx, `
		SELECT m.version, c.version, c.added, c.source_ids, c.source_tags, c.dest_ids, c.dest_tags,
		       c.protocols, c.start_ports, c.end_ports
		FROM store_meta m
		LEFT JOIN policy_changes c ON c.version > $1 AND m.version - $1 <= $2
		ORDER BY c.version`, since, MaxChanges)
	if err != nil {
		return 0, nil, false, err
	}
	defer rows.Close()
	var version int64
	var changes []models.Change
	for rows.Next() {
		var cv *int64
		var added *bool
		var src, dst, proto []string
		var srcTag, dstTag, start, end pq.Int64Array
		if err := rows.Scan(&version, &cv, &added, (*pq.StringArray)(&src), &srcTag, (*pq.StringArray)(&dst), &dstTag,
			(*pq.StringArray)(&proto), &start, &end); err != nil {
			return 0, nil, false, err
		}
		if cv == nil {
			continue // no change after since
		}
		n := len(src)
		if len(srcTag) != n || len(dst) != n || len(dstTag) != n || len(proto) != n || len(start) != n || len(end) != n {
			return 0, nil, false, fmt.Errorf("change %d: columns of different lengths", *cv)
		}
		c := models.Change{Version: *cv, Added: added != nil && *added}
		if n > 0 {
			c.Policies = make([]models.Policy, n)
		}
		for i := range n {
			c.Policies[i] = models.Policy{
				Source: models.Source{ID: src[i], Tag: s.formatTag(int(srcTag[i]))},
				Destination: models.Destination{
					ID: dst[i], Tag: s.formatTag(int(dstTag[i])), Protocol: models.InternProtocol(proto[i]),
					Ports: models.Ports{Start: int(start[i]), End: int(end[i])},
				},
			}
		}
		changes = append(changes, c)
	}
	if err := rows.Err(); err != nil {
		return 0, nil, false, err
	}
	// Versions are consecutive, so the log is complete exactly when it holds since+1 ..
	// version, one row each.
	complete := since <= version && int64(len(changes)) == version-since
	for i, c := range changes {
		if c.Version != since+1+int64(i) {
			complete = false
			break
		}
	}
	if !complete {
		return version, nil, false, nil
	}
	return version, changes, true, nil
}

// Invalidate moves the version on without logging a change: every replica then finds a
// gap in the change log and loads everything again, and every ETag a client holds is
// older than the new version. The policy cache's full check calls it when its snapshot
// differed from the database, which only a write that bypassed the triggers (TRUNCATE,
// a restored backup) can cause: then every replica's snapshot is wrong alike, and agents
// holding answers of the current version would otherwise be told nothing changed.
func (s *Store) Invalidate(ctx context.Context) error {
	err := boundedErr(ctx, func() error {
		_, err := s.db.ExecContext(ctx, `
			WITH bumped AS (UPDATE store_meta SET version = version + 1 RETURNING version)
			SELECT pg_notify('netman_policies', version::text) FROM bumped`)
		return err
	})
	if err != nil {
		return fmt.Errorf("moving the policy version on: %w", err)
	}
	return nil
}
