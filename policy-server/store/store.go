// Package store keeps the policy server's policies and group tags in Postgres.
//
// Data model: a group is a policy group id (an app guid for type "app") with its tag; a
// destination is a group plus a protocol and an inclusive port range; a policy allows a
// source group to reach a destination. Constraints in the schema (foreign keys, CHECKs on
// protocol and ports, unique keys) keep invalid or duplicate rows out whoever writes.
//
// Writes (Create, Delete, EnsureTag, Seed) run one at a time across all replicas: each
// writing transaction first takes a transaction-scoped Postgres advisory lock. Policy
// changes are rare next to the agents' reads, and serialising them makes tag allocation
// and group clean-up race-free without retry loops: a replica that waited for the lock
// sees everything the previous writer committed (READ COMMITTED takes a new snapshot per
// statement), so two replicas adding the same new group get the same tag and no error.
// Reads never take the lock.
//
// Tags: tag_length bytes (1..3) printed as upper-case, zero-padded hex ("0001"); 0 is
// never issued. A group keeps its tag while it exists. Groups created by Create are deleted
// (and their tags freed) by the Delete that removes the last policy naming them; groups a
// client asked a tag for through EnsureTag are kept for good, because that client holds
// the tag. New groups get the lowest never-issued tag; freed tags are handed out again
// only once every tag has been issued, least recently freed first, so agents that still
// hold rules for a freed tag are least likely to see it reused.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/lib/pq"

	"netman/lib/models"
)

// DefaultTagLength is the tag length in bytes when Options.TagLength is 0.
const DefaultTagLength = 2

// ErrTagsExhausted is returned (wrapped, with the tag_length in force) when a new group
// needs a tag and every tag that fits tag_length is held by a group. Nothing is written.
var ErrTagsExhausted = errors.New("no tags left")

// InvalidInputError is returned when the database refuses a policy or group because of
// what the caller sent (a protocol other than tcp/udp, a port outside 1..65535, a start
// port above the end port, an empty or over-long id or type, text that is not valid
// UTF-8). An HTTP API should answer it with 400; nothing was written.
type InvalidInputError struct {
	Reason string // safe to show to the client
	Err    error
}

func (e *InvalidInputError) Error() string { return "invalid input: " + e.Reason }
func (e *InvalidInputError) Unwrap() error { return e.Err }

// Options configures a Store.
type Options struct {
	// TagLength is the tag size in bytes, 1..3; 0 means DefaultTagLength.
	TagLength int
	// Logger receives Watch's connection events; nil discards them.
	Logger *slog.Logger
	// QueryTimeout bounds each version read of Watch, which has no caller deadline of
	// its own (default 5s). Every other method runs under its caller's context.
	QueryTimeout time.Duration
}

// Store is the Postgres policy store. It is safe for concurrent use.
type Store struct {
	db           *sql.DB
	tagLength    int
	maxTag       int
	log          *slog.Logger
	queryTimeout time.Duration
}

// New returns a Store on db, which must have been migrated (Migrate). It checks only the
// options; call CheckTagLength at start to refuse a tag_length the stored tags do not fit.
func New(db *sql.DB, opts Options) (*Store, error) {
	if db == nil {
		return nil, errors.New("store: nil *sql.DB")
	}
	n := opts.TagLength
	if n == 0 {
		n = DefaultTagLength
	}
	if n < 1 || n > 3 {
		return nil, fmt.Errorf("store: tag_length must be 1, 2 or 3 bytes, got %d", opts.TagLength)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := opts.QueryTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &Store{db: db, tagLength: n, maxTag: 1<<(8*n) - 1, log: log, queryTimeout: timeout}, nil
}

// TagLength is the tag length in bytes in force.
func (s *Store) TagLength() int { return s.tagLength }

// CheckTagLength fails when a stored tag does not fit the configured tag_length, which
// happens when an operator lowers tag_length on an existing database. Printing such tags
// with fewer digits is impossible and handing out tags twice would be wrong, so the server
// should refuse to start. Raising tag_length is allowed: every tag is then printed with
// more leading zeros, which agents see as a change of all tags at once.
func (s *Store) CheckTagLength(ctx context.Context) error {
	var highest int
	if err := s.db.QueryRowContext(ctx, `SELECT coalesce(max(tag), 0) FROM groups`).Scan(&highest); err != nil {
		return fmt.Errorf("reading the highest tag: %w", err)
	}
	if highest > s.maxTag {
		return fmt.Errorf("tag_length %d allows tags up to %s, but the database holds tag %X: "+
			"use a tag_length of at least %d", s.tagLength, s.formatTag(s.maxTag), highest, bytesFor(highest))
	}
	return nil
}

func bytesFor(tag int) int {
	n := 1
	for tag > 0xff {
		tag >>= 8
		n++
	}
	return n
}

const hexDigits = "0123456789ABCDEF"

// formatTag prints tag as 2*tagLength upper-case hex digits. Hand-rolled because it runs
// twice per row of a 100k-row listing.
func (s *Store) formatTag(tag int) string {
	var buf [6]byte
	n := 2 * s.tagLength
	if tag > s.maxTag { // only after tag_length was lowered; CheckTagLength refuses that
		return fmt.Sprintf("%0*X", n, tag)
	}
	for i := n - 1; i >= 0; i-- {
		buf[i] = hexDigits[tag&0xf]
		tag >>= 4
	}
	return string(buf[:n])
}

// inTx runs fn in a transaction holding the store's write lock, and commits if fn
// returns nil.
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return boundedErr(ctx, func() error { return s.inTxUnbounded(ctx, fn) })
}

func (s *Store) inTxUnbounded(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, writeLockKey); err != nil {
		return fmt.Errorf("taking the write lock: %w", err)
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing: %w", classify(err))
	}
	return nil
}

// classify turns the database's refusals of caller data into *InvalidInputError.
func classify(err error) error {
	var pqErr *pq.Error
	if !errors.As(err, &pqErr) {
		return err
	}
	reason := ""
	switch pqErr.Code {
	case "23514": // check_violation
		switch pqErr.Constraint {
		case "destinations_protocol_check":
			reason = "protocol must be tcp or udp"
		case "destinations_start_port_check", "destinations_end_port_check":
			reason = "ports must be between 1 and 65535"
		case "destinations_port_range":
			reason = "the start port must not be greater than the end port"
		case "groups_id_check":
			reason = "a group id must be 1 to 255 characters"
		case "groups_type_check":
			reason = "a group type must be 1 to 255 characters"
		default:
			reason = "constraint " + pqErr.Constraint + " violated"
		}
	case "22021", "22P05": // invalid byte sequence, untranslatable character (NUL bytes)
		reason = "text must be valid UTF-8 without NUL characters"
	case "22001": // string_data_right_truncation
		reason = "a value is too long"
	default:
		return err
	}
	return &InvalidInputError{Reason: reason, Err: err}
}

// allocateTags issues n tags for new groups, in the order described in the package
// comment. The caller holds the write lock.
func (s *Store) allocateTags(ctx context.Context, tx *sql.Tx, n int) ([]int, error) {
	var highWater int
	if err := tx.QueryRowContext(ctx, `SELECT tag_high_water FROM store_meta`).Scan(&highWater); err != nil {
		return nil, fmt.Errorf("reading the tag high-water mark: %w", err)
	}
	fresh := min(n, max(0, s.maxTag-highWater))
	tags := make([]int, 0, n)
	for i := 1; i <= fresh; i++ {
		tags = append(tags, highWater+i)
	}
	if fresh > 0 {
		if _, err := tx.ExecContext(ctx, `UPDATE store_meta SET tag_high_water = $1`, highWater+fresh); err != nil {
			return nil, fmt.Errorf("moving the tag high-water mark: %w", err)
		}
	}
	rest := n - fresh
	if rest == 0 {
		return tags, nil
	}
	rows, err := tx.QueryContext(ctx, `
		WITH picked AS (
			SELECT tag FROM free_tags WHERE tag <= $1 ORDER BY freed_seq LIMIT $2
		)
		DELETE FROM free_tags f USING picked WHERE f.tag = picked.tag
		RETURNING f.tag, f.freed_seq`, s.maxTag, rest)
	if err != nil {
		return nil, fmt.Errorf("taking freed tags: %w", err)
	}
	type freed struct {
		tag int
		seq int64
	}
	var reused []freed
	for rows.Next() {
		var f freed
		if err := rows.Scan(&f.tag, &f.seq); err != nil {
			rows.Close()
			return nil, fmt.Errorf("taking freed tags: %w", err)
		}
		reused = append(reused, f)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("taking freed tags: %w", err)
	}
	if len(reused) < rest {
		// Say how far the request is from fitting: one new group too many reads
		// differently from a table that is full.
		if left := fresh + len(reused); left > 0 {
			return nil, fmt.Errorf("%w: the request needs %d new %s, only %d of the %d tags that fit tag_length %d are free",
				ErrTagsExhausted, n, plural(n, "tag", "tags"), left, s.maxTag, s.tagLength)
		}
		return nil, fmt.Errorf("%w: the request needs %d new %s, and all %d tags that fit tag_length %d are in use",
			ErrTagsExhausted, n, plural(n, "tag", "tags"), s.maxTag, s.tagLength)
	}
	slices.SortFunc(reused, func(a, b freed) int { return int(a.seq - b.seq) })
	for _, f := range reused {
		tags = append(tags, f.tag)
	}
	return tags, nil
}

// ensureGroups makes sure every id names a group, creating missing ones with groupType
// (pinned or not), and returns the tags of all of them. The caller holds the write lock.
func (s *Store) ensureGroups(ctx context.Context, tx *sql.Tx, ids []string, groupType string, pinned bool) (map[string]int, error) {
	tags := make(map[string]int, len(ids))
	rows, err := tx.QueryContext(ctx, `SELECT id, tag FROM groups WHERE id = ANY($1)`, pq.Array(ids))
	if err != nil {
		return nil, fmt.Errorf("looking up groups: %w", classify(err))
	}
	for rows.Next() {
		var id string
		var tag int
		if err := rows.Scan(&id, &tag); err != nil {
			rows.Close()
			return nil, fmt.Errorf("looking up groups: %w", err)
		}
		tags[id] = tag
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("looking up groups: %w", err)
	}
	var missing []string
	for _, id := range ids {
		if _, ok := tags[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return tags, nil
	}
	// ids is sorted, so new groups get ascending tags in id order: deterministic.
	newTags, err := s.allocateTags(ctx, tx, len(missing))
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO groups (id, tag, type, pinned)
		SELECT u.id, u.tag, $3, $4 FROM unnest($1::text[], $2::int[]) AS u(id, tag)`,
		pq.Array(missing), pq.Array(newTags), groupType, pinned); err != nil {
		return nil, fmt.Errorf("creating groups: %w", classify(err))
	}
	for i, id := range missing {
		tags[id] = newTags[i]
	}
	return tags, nil
}

// policyColumns are the arrays Create and Delete pass to unnest, one per policy field.
type policyColumns struct {
	src, dst, proto []string
	start, end      []int
}

func columnsOf(policies []models.Policy) policyColumns {
	c := policyColumns{
		src:   make([]string, len(policies)),
		dst:   make([]string, len(policies)),
		proto: make([]string, len(policies)),
		start: make([]int, len(policies)),
		end:   make([]int, len(policies)),
	}
	for i, p := range policies {
		c.src[i] = p.Source.ID
		c.dst[i] = p.Destination.ID
		c.proto[i] = p.Destination.Protocol
		c.start[i] = p.Destination.Ports.Start
		c.end[i] = p.Destination.Ports.End
	}
	return c
}

func (c policyColumns) args() []any {
	return []any{pq.Array(c.src), pq.Array(c.dst), pq.Array(c.proto), pq.Array(c.start), pq.Array(c.end)}
}

// Create adds policies, creating groups (type "app", with new tags) for ids not seen
// before; tags in the input are ignored. Policies that exist already are left as they
// are, so repeating a Create succeeds without a change. All policies of one call are
// written in one transaction: on any error nothing is written. Errors are
// *InvalidInputError for data the schema refuses and ErrTagsExhausted when new groups
// need more tags than are left.
func (s *Store) Create(ctx context.Context, policies []models.Policy) error {
	if len(policies) == 0 {
		return nil
	}
	cols := columnsOf(policies)
	ids := slices.Concat(cols.src, cols.dst)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	return s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := s.ensureGroups(ctx, tx, ids, "app", false); err != nil {
			return fmt.Errorf("creating policies: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO destinations (group_id, protocol, start_port, end_port)
			SELECT u.dst, u.proto, u.sp, u.ep
			FROM unnest($1::text[], $2::text[], $3::int[], $4::int[]) AS u(dst, proto, sp, ep)
			ON CONFLICT DO NOTHING`, cols.args()[1:]...); err != nil {
			return fmt.Errorf("creating destinations: %w", classify(err))
		}
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO policies (source_id, destination_id)
			SELECT u.src, d.id
			FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::int[]) AS u(src, dst, proto, sp, ep)
			JOIN destinations d
			  ON d.group_id = u.dst AND d.protocol = u.proto AND d.start_port = u.sp AND d.end_port = u.ep
			ON CONFLICT DO NOTHING`, cols.args()...); err != nil {
			return fmt.Errorf("creating policies: %w", classify(err))
		}
		return nil
	})
}

// Delete removes policies; ones that do not exist are skipped. Destinations and groups
// no longer named by any policy are removed with them (except groups pinned by
// EnsureTag), and the freed tags queue for reuse. One transaction.
func (s *Store) Delete(ctx context.Context, policies []models.Policy) error {
	if len(policies) == 0 {
		return nil
	}
	cols := columnsOf(policies)
	return s.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `
			DELETE FROM policies p
			USING unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::int[]) AS u(src, dst, proto, sp, ep),
			      destinations d
			WHERE d.group_id = u.dst AND d.protocol = u.proto AND d.start_port = u.sp AND d.end_port = u.ep
			  AND p.source_id = u.src AND p.destination_id = d.id
			RETURNING p.source_id, p.destination_id, d.group_id`, cols.args()...)
		if err != nil {
			return fmt.Errorf("deleting policies: %w", classify(err))
		}
		var groupIDs []string
		var destIDs []int64
		for rows.Next() {
			var src, dstGroup string
			var dst int64
			if err := rows.Scan(&src, &dst, &dstGroup); err != nil {
				rows.Close()
				return fmt.Errorf("deleting policies: %w", err)
			}
			groupIDs = append(groupIDs, src, dstGroup)
			destIDs = append(destIDs, dst)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("deleting policies: %w", err)
		}
		if len(destIDs) == 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `
			DELETE FROM destinations d
			WHERE d.id = ANY($1)
			  AND NOT EXISTS (SELECT 1 FROM policies p WHERE p.destination_id = d.id)`,
			pq.Array(destIDs)); err != nil {
			return fmt.Errorf("deleting unused destinations: %w", err)
		}
		slices.Sort(groupIDs)
		groupIDs = slices.Compact(groupIDs)
		// ORDER BY tag: tags freed together queue in a deterministic order.
		if _, err := tx.ExecContext(ctx, `
			WITH gone AS (
				DELETE FROM groups g
				WHERE g.id = ANY($1) AND NOT g.pinned
				  AND NOT EXISTS (SELECT 1 FROM policies p WHERE p.source_id = g.id)
				  AND NOT EXISTS (SELECT 1 FROM destinations d WHERE d.group_id = g.id)
				RETURNING g.tag
			)
			INSERT INTO free_tags (tag) SELECT tag FROM gone ORDER BY tag`,
			pq.Array(groupIDs)); err != nil {
			return fmt.Errorf("deleting unused groups: %w", err)
		}
		return nil
	})
}

const selectPolicies = `
SELECT p.source_id, sg.tag, d.group_id, dg.tag, d.protocol, d.start_port, d.end_port
FROM policies p
JOIN destinations d ON d.id = p.destination_id
JOIN groups sg ON sg.id = p.source_id
JOIN groups dg ON dg.id = d.group_id`

const orderPolicies = `
ORDER BY p.source_id, d.group_id, d.protocol, d.start_port, d.end_port`

// The id filter as a union of two index lookups: policies by source id, and policies by
// the destinations of the given groups. An OR across the two tables in one WHERE would
// make Postgres scan every policy.
const filterPolicies = `
WITH matched AS (
	SELECT p.id FROM policies p WHERE p.source_id = ANY($1)
	UNION
	SELECT p.id FROM destinations d JOIN policies p ON p.destination_id = d.id WHERE d.group_id = ANY($1)
)` + selectPolicies + `
WHERE p.id IN (SELECT id FROM matched)` + orderPolicies

// ByGroupIDs returns the policies whose source or destination id is one of ids, in the
// order of All. Unknown and repeated ids are harmless; no ids means no policies. The ids
// travel as one array parameter however many there are.
func (s *Store) ByGroupIDs(ctx context.Context, ids []string) ([]models.Policy, error) {
	if len(ids) == 0 {
		return []models.Policy{}, nil
	}
	return s.queryPolicies(ctx, 0, filterPolicies, pq.Array(ids))
}

func (s *Store) queryPolicies(ctx context.Context, sizeHint int, query string, args ...any) ([]models.Policy, error) {
	return bounded(ctx, func() ([]models.Policy, error) { return s.queryPoliciesUnbounded(ctx, sizeHint, query, args...) })
}

func (s *Store) queryPoliciesUnbounded(ctx context.Context, sizeHint int, query string, args ...any) ([]models.Policy, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("listing policies: %w", classify(err))
	}
	defer rows.Close()
	policies := make([]models.Policy, 0, sizeHint)
	// Ids repeat across rows and tags repeat more: share one string per value instead
	// of allocating a copy per row, which keeps a 100k listing's heap small.
	ids := make(map[string]string)
	tags := make(map[int]string)
	intern := func(b []byte) string {
		if s, ok := ids[string(b)]; ok {
			return s
		}
		s := string(b)
		ids[s] = s
		return s
	}
	tag := func(t int) string {
		if s, ok := tags[t]; ok {
			return s
		}
		s := s.formatTag(t)
		tags[t] = s
		return s
	}
	var src, dst, proto sql.RawBytes
	var srcTag, dstTag, start, end int
	for rows.Next() {
		if err := rows.Scan(&src, &srcTag, &dst, &dstTag, &proto, &start, &end); err != nil {
			return nil, fmt.Errorf("listing policies: %w", err)
		}
		policies = append(policies, models.Policy{
			Source: models.Source{ID: intern(src), Tag: tag(srcTag)},
			Destination: models.Destination{
				ID:       intern(dst),
				Tag:      tag(dstTag),
				Protocol: intern(proto),
				Ports:    models.Ports{Start: start, End: end},
			},
		})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing policies: %w", err)
	}
	return policies, nil
}

// Tags returns every group with its tag, ordered by group id.
func (s *Store) Tags(ctx context.Context) ([]models.Tag, error) {
	return bounded(ctx, func() ([]models.Tag, error) { return s.tags(ctx) })
}

func (s *Store) tags(ctx context.Context) ([]models.Tag, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, type, tag FROM groups ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("listing tags: %w", err)
	}
	defer rows.Close()
	out := []models.Tag{}
	for rows.Next() {
		var t models.Tag
		var tag int
		if err := rows.Scan(&t.ID, &t.Type, &tag); err != nil {
			return nil, fmt.Errorf("listing tags: %w", err)
		}
		t.Tag = s.formatTag(tag)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing tags: %w", err)
	}
	return out, nil
}

// EnsureTag returns the tag of group id, creating the group with groupType if it does
// not exist. The group is pinned: it keeps its tag even when no policy names it, because
// the caller now relies on it. For an existing group the stored type is returned.
func (s *Store) EnsureTag(ctx context.Context, id, groupType string) (models.Tag, error) {
	var t models.Tag
	var tag int
	var pinned bool
	err := boundedErr(ctx, func() error {
		return s.db.QueryRowContext(ctx, `SELECT type, tag, pinned FROM groups WHERE id = $1`, id).Scan(&t.Type, &tag, &pinned)
	})
	switch {
	case err == nil && pinned:
		t.ID, t.Tag = id, s.formatTag(tag)
		return t, nil
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		return models.Tag{}, fmt.Errorf("looking up the tag of %q: %w", id, classify(err))
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		tags, err := s.ensureGroups(ctx, tx, []string{id}, groupType, true)
		if err != nil {
			return err
		}
		tag = tags[id]
		return tx.QueryRowContext(ctx, `UPDATE groups SET pinned = true WHERE id = $1 RETURNING type`, id).Scan(&t.Type)
	})
	if err != nil {
		return models.Tag{}, fmt.Errorf("ensuring a tag for %q: %w", id, err)
	}
	t.ID, t.Tag = id, s.formatTag(tag)
	return t, nil
}

// LastUpdated returns the store's version: it grows with every committed transaction
// that added or removed a policy or a group, and stays put otherwise.
func (s *Store) LastUpdated(ctx context.Context) (int64, error) {
	v, err := bounded(ctx, func() (int64, error) {
		var v int64
		err := s.db.QueryRowContext(ctx, `SELECT version FROM store_meta`).Scan(&v)
		return v, err
	})
	if err != nil {
		return 0, fmt.Errorf("reading the store version: %w", err)
	}
	return v, nil
}

// Counts returns the number of policies and groups. It reads counters that triggers
// update in the same transaction as every insert and delete, so it is exact (not an
// estimate) and costs one single-row read, whatever the table sizes.
func (s *Store) Counts(ctx context.Context) (policies, groups int64, err error) {
	c, err := bounded(ctx, func() ([2]int64, error) {
		var c [2]int64
		err := s.db.QueryRowContext(ctx, `SELECT policies, groups FROM store_meta`).Scan(&c[0], &c[1])
		return c, err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("reading counts: %w", err)
	}
	return c[0], c[1], nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
