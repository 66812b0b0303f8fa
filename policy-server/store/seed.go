package store

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"

	"github.com/lib/pq"
)

// seedMaxGroups keeps seeded data within the default tag_length (2 bytes).
const seedMaxGroups = 1<<16 - 1

// Seed adds n policies of the shape a real foundation has, for load tests and benchmarks
// only (it is not part of the server's write path): about n/2 apps with random GUIDs
// (at most 65,535 groups, so the default tag_length fits), each allowed to reach 1-3
// other apps on tcp 8080. It writes through set-based INSERTs from array parameters in
// one transaction holding the write lock, so counters, version and tag bookkeeping stay
// right, then VACUUM ANALYZEs the tables. It returns the ids of the apps it created; rng makes
// runs repeatable.
func Seed(ctx context.Context, db *sql.DB, n int, rng *rand.Rand) (groupIDs []string, err error) {
	if n <= 0 {
		return []string{}, nil
	}
	apps := min((n+1)/2, seedMaxGroups)
	if int64(apps)*int64(apps) < int64(n) {
		apps = min(n, seedMaxGroups)
	}
	ids := make([]string, apps)
	for i := range ids {
		ids[i] = randomGUID(rng)
	}

	// Every app is the source of 1-3 policies (more only when the group cap forces it),
	// to distinct destinations, n in all.
	perSource := make([]int, apps)
	limit := min(apps, max(3, (n+apps-1)/apps))
	for i := range perSource {
		perSource[i] = 1
	}
	for extra := n - apps; extra > 0; {
		if i := rng.IntN(apps); perSource[i] < limit {
			perSource[i]++
			extra--
		}
	}
	srcs := make([]string, 0, n)
	dsts := make([]string, 0, n)
	seen := make(map[int]bool, limit)
	for src, k := range perSource {
		clear(seen)
		for len(seen) < k {
			dst := rng.IntN(apps)
			if !seen[dst] {
				seen[dst] = true
				srcs = append(srcs, ids[src])
				dsts = append(dsts, ids[dst])
			}
		}
	}

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("seeding: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, writeLockKey); err != nil {
		return nil, fmt.Errorf("seeding: taking the write lock: %w", err)
	}
	// A commit that is not yet flushed (synchronous_commit=off, as on test clusters) keeps
	// the VACUUM below from marking the new rows all-visible, and index-only scans would
	// then visit the heap for every row.
	if _, err := tx.ExecContext(ctx, `SET LOCAL synchronous_commit = on`); err != nil {
		return nil, fmt.Errorf("seeding: %w", err)
	}
	var highWater int
	if err := tx.QueryRowContext(ctx, `SELECT tag_high_water FROM store_meta`).Scan(&highWater); err != nil {
		return nil, fmt.Errorf("seeding: %w", err)
	}
	if highWater+apps > seedMaxGroups {
		return nil, fmt.Errorf("seeding: %d new groups would not fit 2-byte tags (%d issued already)", apps, highWater)
	}
	steps := []struct {
		what  string
		query string
		args  []any
	}{
		{"groups", `INSERT INTO groups (id, tag)
			SELECT id, $2 + ord FROM unnest($1::text[]) WITH ORDINALITY AS u(id, ord)`,
			[]any{pq.Array(ids), highWater}},
		{"the tag high-water mark", `UPDATE store_meta SET tag_high_water = $1`, []any{highWater + apps}},
		{"destinations", `INSERT INTO destinations (group_id, protocol, start_port, end_port)
			SELECT DISTINCT dst, 'tcp', 8080, 8080 FROM unnest($1::text[]) AS u(dst)`,
			[]any{pq.Array(dsts)}},
		{"policies", `INSERT INTO policies (source_id, destination_id)
			SELECT u.src, d.id FROM unnest($1::text[], $2::text[]) AS u(src, dst)
			JOIN destinations d ON d.group_id = u.dst AND d.protocol = 'tcp' AND d.start_port = 8080 AND d.end_port = 8080`,
			[]any{pq.Array(srcs), pq.Array(dsts)}},
	}
	for _, st := range steps {
		if _, err := tx.ExecContext(ctx, st.query, st.args...); err != nil {
			return nil, fmt.Errorf("seeding %s: %w", st.what, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("seeding: committing: %w", err)
	}
	// Fresh statistics, so the planner picks the plans the server relies on right away,
	// and a visibility map, so index-only scans need not visit the heap; autovacuum would
	// get there too, later. The commits here must be synchronous: on a server running
	// with synchronous_commit=off (as test clusters do) an unflushed commit near the
	// seeding one keeps VACUUM from marking the seeded rows all-visible.
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("seeding: %w", err)
	}
	defer conn.Close()
	for _, stmt := range []string{
		`SET synchronous_commit = on`,
		`VACUUM ANALYZE groups`,
		`VACUUM ANALYZE destinations`,
		`VACUUM ANALYZE policies`,
		`RESET synchronous_commit`,
	} {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			return nil, fmt.Errorf("seeding: %s: %w", stmt, err)
		}
	}
	return ids, nil
}

// randomGUID returns a version-4 UUID drawn from rng.
func randomGUID(rng *rand.Rand) string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
