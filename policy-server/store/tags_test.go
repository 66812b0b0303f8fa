package store_test

import (
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"netman/internal/testsupport/pgtest"
	"netman/lib/models"
	"netman/policy-server/store"
)

// selfPolicies returns one policy from each id to itself: a cheap way to make groups.
func selfPolicies(ids ...string) []models.Policy {
	ps := make([]models.Policy, len(ids))
	for i, id := range ids {
		ps[i] = pol(id, id, "tcp", 8080, 8080)
	}
	return ps
}

func numbered(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return ids
}

func tagMap(t *testing.T, s *store.Store) map[string]string {
	t.Helper()
	tags, err := s.Tags(ctxT(t))
	if err != nil {
		t.Fatalf("Tags: %v", err)
	}
	m := make(map[string]string, len(tags))
	for _, tg := range tags {
		m[tg.ID] = tg.Tag
	}
	return m
}

func TestTagFormat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		length int
		want   []string
	}{
		{1, []string{"01", "02", "03", "04", "05", "06", "07", "08", "09", "0A", "0B", "0C"}},
		{2, []string{"0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "000A", "000B", "000C"}},
		{3, []string{"000001", "000002", "000003", "000004", "000005", "000006", "000007", "000008", "000009", "00000A", "00000B", "00000C"}},
	} {
		t.Run(fmt.Sprint(tc.length), func(t *testing.T) {
			t.Parallel()
			s, _, _ := newStore(t, tc.length)
			ctx := ctxT(t)
			// Created in one batch: new groups get tags in id order.
			mustCreate(t, s, selfPolicies(numbered("g", 12)...)...)
			tags, err := s.Tags(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for i, tg := range tags {
				if want := fmt.Sprintf("g%03d", i); tg.ID != want || tg.Type != "app" {
					t.Errorf("Tags[%d] = %+v, want id %s of type app", i, tg, want)
				}
				got = append(got, tg.Tag)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("tags = %v, want %v", got, tc.want)
			}
			all := mustAll(t, s)
			if all[10].Source.Tag != tc.want[10] || all[10].Destination.Tag != tc.want[10] {
				t.Errorf("All()[10] tags = %q/%q, want %q", all[10].Source.Tag, all[10].Destination.Tag, tc.want[10])
			}
		})
	}
}

// TestConcurrentCreateOfNewGroup races two replicas (separate pools, separate stores)
// creating policies for the same new groups at the same moment, many times.
func TestConcurrentCreateOfNewGroup(t *testing.T) {
	t.Parallel()
	_, dsn := pgtest.Open(t)
	ctx := ctxT(t)
	replicas := make([]*store.Store, 2)
	for i := range replicas {
		db, err := sql.Open("postgres", dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := store.Migrate(ctx, db); err != nil {
			t.Fatal(err)
		}
		if replicas[i], err = store.New(db, store.Options{}); err != nil {
			t.Fatal(err)
		}
	}

	const rounds = 60
	seen := map[string]string{} // tag -> group
	for round := range rounds {
		src, dst := fmt.Sprintf("src-%d", round), fmt.Sprintf("dst-%d", round)
		pinned := fmt.Sprintf("pinned-%d", round)
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, 2)
		ensured := make([]models.Tag, 2)
		for i, s := range replicas {
			wg.Go(func() {
				<-start
				// The replicas name the groups in opposite roles, as two users might.
				p := pol(src, dst, "tcp", 8080, 8080)
				if i == 1 {
					p = pol(dst, src, "udp", 53, 53)
				}
				if errs[i] = s.Create(ctx, []models.Policy{p}); errs[i] != nil {
					return
				}
				ensured[i], errs[i] = s.EnsureTag(ctx, pinned, "router")
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: replica %d: %v", round, i, err)
			}
		}
		if ensured[0] != ensured[1] {
			t.Fatalf("round %d: EnsureTag gave %+v and %+v", round, ensured[0], ensured[1])
		}
		for _, s := range replicas {
			tags := tagMap(t, s)
			for _, id := range []string{src, dst, pinned} {
				tag := tags[id]
				if tag == "" {
					t.Fatalf("round %d: group %s has no tag", round, id)
				}
				if other, ok := seen[tag]; ok && other != id {
					t.Fatalf("round %d: tag %s given to %s and %s", round, tag, other, id)
				}
				seen[tag] = id
			}
		}
	}
	if len(seen) != 3*rounds {
		t.Fatalf("%d distinct tags for %d groups", len(seen), 3*rounds)
	}
	p, g, err := replicas[0].Counts(ctx)
	if err != nil || p != 2*rounds || g != 3*rounds {
		t.Fatalf("Counts = %d policies, %d groups (%v); want %d, %d", p, g, err, 2*rounds, 3*rounds)
	}
}

func TestTagsExhausted(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, 1)
	ctx := ctxT(t)
	ids := numbered("g", 255)
	mustCreate(t, s, selfPolicies(ids...)...)
	tags := tagMap(t, s)
	if tags["g000"] != "01" || tags["g254"] != "FF" || len(tags) != 255 {
		t.Fatalf("255 groups with tag_length 1: first %q, last %q, %d tags", tags["g000"], tags["g254"], len(tags))
	}
	before, _ := s.LastUpdated(ctx)
	all := keys(mustAll(t, s))

	// A policy between existing groups rides in the same batch as one needing a new tag.
	err := s.Create(ctx, []models.Policy{pol("g000", "g001", "tcp", 1, 1), pol("g002", "one-too-many", "tcp", 1, 1)})
	if !errors.Is(err, store.ErrTagsExhausted) {
		t.Fatalf("Create of the 256th group: err = %v, want ErrTagsExhausted", err)
	}
	if !strings.Contains(err.Error(), "the request needs 1 new tag, and all 255 tags that fit tag_length 1 are in use") {
		t.Errorf("error %q does not say what was needed and the tag_length in force", err)
	}
	if got := keys(mustAll(t, s)); !slices.Equal(got, all) {
		t.Errorf("the failed batch changed the policies")
	}
	if after, _ := s.LastUpdated(ctx); after != before {
		t.Errorf("LastUpdated moved on a failed batch")
	}
	if _, err := s.EnsureTag(ctx, "one-too-many", "app"); !errors.Is(err, store.ErrTagsExhausted) {
		t.Errorf("EnsureTag of the 256th group: err = %v, want ErrTagsExhausted", err)
	}
	// Existing groups still work.
	mustCreate(t, s, pol("g000", "g001", "tcp", 1, 1))
}

// TestFreedTagReuse: a freed tag goes back into use only when no never-used tag is left,
// and freed tags come back least recently freed first.
func TestFreedTagReuse(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, 1)
	ctx := ctxT(t)
	mustCreate(t, s, selfPolicies("g1", "g2", "g3", "g4", "g5")...)

	del := func(ids ...string) {
		t.Helper()
		if err := s.Delete(ctx, selfPolicies(ids...)); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
	create := func(id string) string {
		t.Helper()
		mustCreate(t, s, selfPolicies(id)...)
		return tagMap(t, s)[id]
	}
	del("g4") // frees 04
	del("g2") // frees 02
	if got := create("n1"); got != "06" {
		t.Fatalf("new group after freeing 04 and 02 got %s, want the never-used 06", got)
	}
	// Use up every never-used tag: 07..FF.
	mustCreate(t, s, selfPolicies(numbered("fill", 0xFF-0x06)...)...)
	if got := tagMap(t, s)["fill248"]; got != "FF" {
		t.Fatalf("last filler got %s, want FF", got)
	}
	del("g5") // frees 05
	for _, want := range []struct{ id, tag string }{{"r1", "04"}, {"r2", "02"}, {"r3", "05"}} {
		if got := create(want.id); got != want.tag {
			t.Fatalf("group %s got %s, want %s (least recently freed first)", want.id, got, want.tag)
		}
	}
	if err := s.Create(ctx, selfPolicies("r4")); !errors.Is(err, store.ErrTagsExhausted) {
		t.Fatalf("Create with every tag in use: err = %v, want ErrTagsExhausted", err)
	}
}

// TestGroupLifecycle: a group keeps its tag while any policy names it; groups pinned by
// EnsureTag outlive their policies.
func TestGroupLifecycle(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, 0)
	ctx := ctxT(t)
	router, err := s.EnsureTag(ctx, "router", "router")
	if err != nil {
		t.Fatal(err)
	}
	if router != (models.Tag{ID: "router", Type: "router", Tag: "0001"}) {
		t.Fatalf("EnsureTag = %+v", router)
	}
	mustCreate(t, s, pol("a", "b", "tcp", 1, 1), pol("a", "c", "tcp", 1, 1), pol("c", "router", "tcp", 1, 1))
	before := tagMap(t, s)

	steps := []struct {
		delete models.Policy
		want   []string // groups left
	}{
		{pol("a", "b", "tcp", 1, 1), []string{"a", "c", "router"}},
		{pol("c", "router", "tcp", 1, 1), []string{"a", "c", "router"}},
		{pol("a", "c", "tcp", 1, 1), []string{"router"}},
	}
	for i, st := range steps {
		if err := s.Delete(ctx, []models.Policy{st.delete}); err != nil {
			t.Fatal(err)
		}
		tags := tagMap(t, s)
		var left []string
		for id, tag := range tags {
			left = append(left, id)
			if tag != before[id] {
				t.Errorf("step %d: tag of %s changed from %s to %s", i, id, before[id], tag)
			}
		}
		slices.Sort(left)
		slices.Sort(st.want)
		if !slices.Equal(left, st.want) {
			t.Errorf("step %d: groups %v, want %v", i, left, st.want)
		}
	}
	// An app group becomes pinned when someone asks for its tag.
	mustCreate(t, s, pol("x", "y", "tcp", 1, 1))
	x, err := s.EnsureTag(ctx, "x", "other")
	if err != nil {
		t.Fatal(err)
	}
	if x.Type != "app" || x.Tag != tagMap(t, s)["x"] {
		t.Errorf("EnsureTag on an existing app group = %+v", x)
	}
	if err := s.Delete(ctx, []models.Policy{pol("x", "y", "tcp", 1, 1)}); err != nil {
		t.Fatal(err)
	}
	if tags := tagMap(t, s); tags["x"] != x.Tag || tags["y"] != "" {
		t.Errorf("after deleting x's last policy: tags %v; x pinned, y gone expected", tags)
	}
	var invalid *store.InvalidInputError
	if _, err := s.EnsureTag(ctx, "", "app"); !errors.As(err, &invalid) {
		t.Errorf("EnsureTag with an empty id: err = %v, want *InvalidInputError", err)
	}
	if _, err := s.EnsureTag(ctx, "z", ""); !errors.As(err, &invalid) {
		t.Errorf("EnsureTag with an empty type: err = %v, want *InvalidInputError", err)
	}
}

func TestCheckTagLength(t *testing.T) {
	t.Parallel()
	s, db, _ := newStore(t, 2)
	ctx := ctxT(t)
	mustCreate(t, s, selfPolicies(numbered("g", 256)...)...) // tags up to 0100

	for _, tc := range []struct {
		length  int
		wantErr bool
		lastTag string
	}{
		{1, true, ""},
		{2, false, "0100"},
		{3, false, "000100"},
	} {
		s, err := store.New(db, store.Options{TagLength: tc.length})
		if err != nil {
			t.Fatal(err)
		}
		err = s.CheckTagLength(ctx)
		if (err != nil) != tc.wantErr {
			t.Fatalf("tag_length %d: CheckTagLength = %v, want error %v", tc.length, err, tc.wantErr)
		}
		if err != nil {
			if !strings.Contains(err.Error(), "tag_length 1") || !strings.Contains(err.Error(), "at least 2") {
				t.Errorf("error %q does not say what is wrong and what fits", err)
			}
			continue
		}
		if got := tagMap(t, s)["g255"]; got != tc.lastTag {
			t.Errorf("tag_length %d: tag of g255 = %s, want %s", tc.length, got, tc.lastTag)
		}
	}
}
