package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"netman/lib/models"
)

// All returns every policy with its tags, ordered by source id, destination id, protocol,
// start port and end port (ids compared byte-wise).
//
// It reads the three tables separately and joins them in Go, inside one read-only
// REPEATABLE READ transaction so the reads share one snapshot. At 100k policies a
// joined-and-sorted query spends most of its time hashing text keys and sorting on disk,
// while here every read comes out of an index already in the order needed: groups by id,
// destinations by group id (both merged against the groups list, no lookups by string),
// policies by (source id, destination id), so only the 1-3 rows of each source need sorting.
func (s *Store) All(ctx context.Context) ([]models.Policy, error) {
	policies, _, err := s.Snapshot(ctx)
	return policies, err
}

// Snapshot is All plus the version (LastUpdated) those policies are exactly the state
// of, read in the same transaction: a cache keyed by the version can never pair a
// version with older or newer policies.
func (s *Store) Snapshot(ctx context.Context) (policies []models.Policy, version int64, err error) {
	type result struct {
		policies []models.Policy
		version  int64
	}
	r, err := bounded(ctx, func() (result, error) {
		ps, v, err := s.snapshot(ctx)
		return result{ps, v}, err
	})
	policies, version = r.policies, r.version
	if err != nil {
		return nil, 0, fmt.Errorf("listing policies: %w", err)
	}
	return policies, version, nil
}

func (s *Store) snapshot(ctx context.Context) ([]models.Policy, int64, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback()

	var version, nPolicies, nGroups int64
	if err := tx.QueryRowContext(ctx, `SELECT version, policies, groups FROM store_meta`).Scan(&version, &nPolicies, &nGroups); err != nil {
		return nil, 0, err
	}
	groups, err := s.readGroups(ctx, tx, int(nGroups))
	if err != nil {
		return nil, 0, err
	}
	dests, err := readDestinations(ctx, tx, groups)
	if err != nil {
		return nil, 0, err
	}

	policies := make([]models.Policy, 0, nPolicies)
	rows, err := tx.QueryContext(ctx, `SELECT source_id, destination_id FROM policies ORDER BY source_id, destination_id`)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var src sql.RawBytes
	var dst int64
	gs := groupCursor{groups: groups}
	run := 0 // where the current source's rows start
	for rows.Next() {
		if err := rows.Scan(&src, &dst); err != nil {
			return nil, 0, err
		}
		g, ok := gs.seek(src)
		if !ok {
			return nil, 0, fmt.Errorf("source %q has no group", src)
		}
		d, ok := dests.get(dst)
		if !ok {
			return nil, 0, fmt.Errorf("destination %d missing", dst)
		}
		if run < len(policies) && policies[run].Source.ID != g.id {
			sortSourceRun(policies[run:])
			run = len(policies)
		}
		policies = append(policies, models.Policy{Source: models.Source{ID: g.id, Tag: g.tag}, Destination: d})
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	sortSourceRun(policies[run:])
	if err := tx.Commit(); err != nil {
		return nil, 0, err
	}
	return policies, version, nil
}

type groupTag struct{ id, tag string }

// readGroups returns all groups ordered by id (byte-wise, as Go compares strings).
func (s *Store) readGroups(ctx context.Context, tx *sql.Tx, sizeHint int) ([]groupTag, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, tag FROM groups ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("reading groups: %w", err)
	}
	defer rows.Close()
	groups := make([]groupTag, 0, sizeHint)
	// A string, not sql.RawBytes: lib/pq hands text over as a new string already, which
	// database/sql then passes on without another copy.
	var id string
	var tag int
	for rows.Next() {
		if err := rows.Scan(&id, &tag); err != nil {
			return nil, fmt.Errorf("reading groups: %w", err)
		}
		groups = append(groups, groupTag{id: id, tag: s.formatTag(tag)})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading groups: %w", err)
	}
	return groups, nil
}

// groupCursor finds groups for ids that arrive in ascending order by walking forward.
type groupCursor struct {
	groups []groupTag
	i      int
}

func (c *groupCursor) seek(id []byte) (groupTag, bool) {
	for c.i < len(c.groups) {
		switch strings.Compare(c.groups[c.i].id, string(id)) {
		case 0:
			return c.groups[c.i], true
		case -1:
			c.i++
		default:
			return groupTag{}, false
		}
	}
	return groupTag{}, false
}

// destinationTable finds destinations by id: a slice indexed by id when ids are dense
// (they come from an identity sequence, so they are unless many were deleted), a map
// otherwise.
type destinationTable struct {
	base  int64
	dense []models.Destination
	ok    []bool
	m     map[int64]models.Destination
}

func (t *destinationTable) get(id int64) (models.Destination, bool) {
	if t.m != nil {
		d, ok := t.m[id]
		return d, ok
	}
	i := id - t.base
	if i < 0 || i >= int64(len(t.dense)) || !t.ok[i] {
		return models.Destination{}, false
	}
	return t.dense[i], true
}

func readDestinations(ctx context.Context, tx *sql.Tx, groups []groupTag) (*destinationTable, error) {
	var lo, hi, n int64
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(min(id), 0), coalesce(max(id), -1), count(*) FROM destinations`).Scan(&lo, &hi, &n); err != nil {
		return nil, fmt.Errorf("reading destinations: %w", err)
	}
	t := &destinationTable{base: lo}
	if span := hi - lo + 1; span <= 2*n+1024 {
		t.dense = make([]models.Destination, span)
		t.ok = make([]bool, span)
	} else {
		t.m = make(map[int64]models.Destination, n)
	}
	rows, err := tx.QueryContext(ctx, `
		SELECT id, group_id, protocol, start_port, end_port FROM destinations
		ORDER BY group_id, protocol, start_port, end_port`)
	if err != nil {
		return nil, fmt.Errorf("reading destinations: %w", err)
	}
	defer rows.Close()
	gs := groupCursor{groups: groups}
	var id int64
	var gid, proto sql.RawBytes
	var start, end int
	for rows.Next() {
		if err := rows.Scan(&id, &gid, &proto, &start, &end); err != nil {
			return nil, fmt.Errorf("reading destinations: %w", err)
		}
		g, ok := gs.seek(gid)
		if !ok {
			return nil, fmt.Errorf("destination group %q missing", gid)
		}
		d := models.Destination{ID: g.id, Tag: g.tag, Protocol: models.InternProtocolBytes(proto), Ports: models.Ports{Start: start, End: end}}
		if t.m != nil {
			t.m[id] = d
		} else if i := id - t.base; i >= 0 && i < int64(len(t.dense)) {
			t.dense[i], t.ok[i] = d, true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading destinations: %w", err)
	}
	return t, nil
}

// sortSourceRun orders the policies of one source by destination id, protocol and ports.
func sortSourceRun(ps []models.Policy) {
	if len(ps) < 2 {
		return
	}
	slices.SortFunc(ps, models.ComparePolicies)
}
