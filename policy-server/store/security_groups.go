package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/lib/pq"
)

// SecurityGroup is an application security group as Cloud Controller defines it and
// the agents receive it. Rules is the JSON array of its rules, kept as text because
// it is served as a string. The JSON names are those of the one document that carries
// a whole replacement to Postgres, not a wire shape of the API.
type SecurityGroup struct {
	GUID           string   `json:"guid"`
	Name           string   `json:"name"`
	Rules          string   `json:"rules"`
	StagingDefault bool     `json:"staging_default"`
	RunningDefault bool     `json:"running_default"`
	StagingSpaces  []string `json:"staging_spaces"`
	RunningSpaces  []string `json:"running_spaces"`
}

// ReplaceSecurityGroups makes the stored security groups exactly groups (by GUID:
// new ones added, changed ones updated in place keeping their id, missing ones
// deleted), in one transaction and one statement per kind of change. When groups are
// what the last call stored (same digest), nothing is written and changed is false.
func (s *Store) ReplaceSecurityGroups(ctx context.Context, groups []SecurityGroup) (changed bool, err error) {
	return bounded(ctx, func() (bool, error) { return s.replaceSecurityGroups(ctx, groups) })
}

func (s *Store) replaceSecurityGroups(ctx context.Context, groups []SecurityGroup) (changed bool, err error) {
	groups = append([]SecurityGroup{}, groups...) // never nil: "null" is not a recordset
	for i := range groups {
		groups[i].StagingSpaces = sortedSet(groups[i].StagingSpaces)
		groups[i].RunningSpaces = sortedSet(groups[i].RunningSpaces)
	}
	slices.SortFunc(groups, func(a, b SecurityGroup) int { return strings.Compare(a.GUID, b.GUID) })
	for i := 1; i < len(groups); i++ {
		if groups[i].GUID == groups[i-1].GUID {
			return false, &InvalidInputError{Reason: fmt.Sprintf("security group %q appears twice", groups[i].GUID)}
		}
	}
	doc, err := json.Marshal(groups)
	if err != nil {
		return false, fmt.Errorf("encoding security groups: %w", err)
	}
	sum := sha256.Sum256(doc)
	digest := hex.EncodeToString(sum[:])

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("replacing security groups: %w", err)
	}
	defer tx.Rollback()
	var have string
	// FOR UPDATE: two writers (a sync and an operator's replay) apply one after the other.
	if err := tx.QueryRowContext(ctx, `SELECT digest FROM security_groups_meta FOR UPDATE`).Scan(&have); err != nil {
		return false, fmt.Errorf("reading the security groups digest: %w", err)
	}
	if have == digest {
		_, err := tx.ExecContext(ctx, `UPDATE security_groups_meta SET synced_at = now()`)
		if err == nil {
			err = tx.Commit()
		}
		return false, err
	}
	// One JSON parameter carries every group: jsonb_to_recordset turns its arrays into
	// text[] columns, so 1,000 groups are one round trip, not 1,000.
	if _, err := tx.ExecContext(ctx, `
		DELETE FROM security_groups
		WHERE guid NOT IN (SELECT x.guid FROM jsonb_to_recordset($1::jsonb) AS x(guid text))`, doc); err != nil {
		return false, fmt.Errorf("deleting security groups: %w", classify(err))
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO security_groups AS sg (guid, name, rules, staging_default, running_default, staging_spaces, running_spaces)
		SELECT x.guid, x.name, x.rules, x.staging_default, x.running_default,
		       coalesce(x.staging_spaces, '{}'), coalesce(x.running_spaces, '{}')
		FROM jsonb_to_recordset($1::jsonb) AS x(guid text, name text, rules text, staging_default boolean,
		     running_default boolean, staging_spaces text[], running_spaces text[])
		ON CONFLICT (guid) DO UPDATE SET
		    name = excluded.name, rules = excluded.rules,
		    staging_default = excluded.staging_default, running_default = excluded.running_default,
		    staging_spaces = excluded.staging_spaces, running_spaces = excluded.running_spaces
		WHERE (sg.name, sg.rules, sg.staging_default, sg.running_default, sg.staging_spaces, sg.running_spaces)
		   IS DISTINCT FROM (excluded.name, excluded.rules, excluded.staging_default, excluded.running_default,
		                     excluded.staging_spaces, excluded.running_spaces)`, doc); err != nil {
		return false, fmt.Errorf("writing security groups: %w", classify(err))
	}
	if _, err := tx.ExecContext(ctx, `UPDATE security_groups_meta SET digest = $1, version = version + 1, synced_at = now()`, digest); err != nil {
		return false, fmt.Errorf("recording the security groups digest: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("replacing security groups: %w", classify(err))
	}
	return true, nil
}

// SecurityGroupsPage is one page of SecurityGroupsForSpaces.
type SecurityGroupsPage struct {
	Groups []SecurityGroup
	// Next is the id to pass as from for the next page; 0 on the last page.
	Next int64
}

// SecurityGroupsForSpaces returns the groups that apply to containers of the given
// spaces: every globally enabled (staging or running default) group, and every group
// bound to one of spaces for staging or running. That is the set cf-networking's
// policy server answers, and with no spaces only the global groups. Pages are in id
// order starting at id from (0: the start), limit groups each (0: no limit).
func (s *Store) SecurityGroupsForSpaces(ctx context.Context, spaces []string, from int64, limit int) (SecurityGroupsPage, error) {
	return bounded(ctx, func() (SecurityGroupsPage, error) { return s.securityGroupsForSpaces(ctx, spaces, from, limit) })
}

func (s *Store) securityGroupsForSpaces(ctx context.Context, spaces []string, from int64, limit int) (SecurityGroupsPage, error) {
	if spaces == nil {
		spaces = []string{}
	}
	q := `
		SELECT id, guid, name, rules, staging_default, running_default, staging_spaces, running_spaces
		FROM security_groups
		WHERE (staging_default OR running_default OR staging_spaces && $1 OR running_spaces && $1)
		  AND id >= $2
		ORDER BY id`
	args := []any{pq.Array(spaces), from}
	if limit > 0 {
		q += ` LIMIT $3`
		args = append(args, limit+1)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return SecurityGroupsPage{}, fmt.Errorf("listing security groups: %w", classify(err))
	}
	defer rows.Close()
	page := SecurityGroupsPage{Groups: []SecurityGroup{}}
	for rows.Next() {
		var id int64
		var g SecurityGroup
		if err := rows.Scan(&id, &g.GUID, &g.Name, &g.Rules, &g.StagingDefault, &g.RunningDefault,
			pq.Array(&g.StagingSpaces), pq.Array(&g.RunningSpaces)); err != nil {
			return SecurityGroupsPage{}, fmt.Errorf("listing security groups: %w", err)
		}
		if limit > 0 && len(page.Groups) == limit {
			page.Next = id
			break
		}
		page.Groups = append(page.Groups, g)
	}
	if err := rows.Err(); err != nil {
		return SecurityGroupsPage{}, fmt.Errorf("listing security groups: %w", err)
	}
	return page, nil
}

// SecurityGroupsVersion moves with every change ReplaceSecurityGroups writes.
func (s *Store) SecurityGroupsVersion(ctx context.Context) (version int64, synced sql.NullTime, err error) {
	type row struct {
		version int64
		synced  sql.NullTime
	}
	r, err := bounded(ctx, func() (row, error) {
		var r row
		err := s.db.QueryRowContext(ctx, `SELECT version, synced_at FROM security_groups_meta`).Scan(&r.version, &r.synced)
		return r, err
	})
	if err != nil {
		return 0, sql.NullTime{}, fmt.Errorf("reading the security groups version: %w", err)
	}
	return r.version, r.synced, nil
}

func sortedSet(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	out = slices.Compact(out)
	if out == nil {
		out = []string{}
	}
	return out
}
