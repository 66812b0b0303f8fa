package store_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"netman/policy-server/store"
)

func sg(guid string, running, staging []string, defaults ...string) store.SecurityGroup {
	g := store.SecurityGroup{GUID: guid, Name: "name-" + guid, Rules: `[{"protocol":"tcp","destination":"10.0.0.1","ports":"80"}]`,
		RunningSpaces: running, StagingSpaces: staging}
	g.RunningDefault = slices.Contains(defaults, "running")
	g.StagingDefault = slices.Contains(defaults, "staging")
	return g
}

func guids(p store.SecurityGroupsPage) []string {
	var out []string
	for _, g := range p.Groups {
		out = append(out, g.GUID)
	}
	return out
}

func TestReplaceSecurityGroupsOnlyOnChange(t *testing.T) {
	s, _, _ := newStore(t, 2)
	ctx := ctxT(t)
	groups := []store.SecurityGroup{
		sg("a", []string{"s1"}, nil),
		sg("b", nil, []string{"s2"}),
		sg("c", nil, nil, "running"),
	}
	changed, err := s.ReplaceSecurityGroups(ctx, groups)
	if err != nil || !changed {
		t.Fatalf("first replace: changed=%v err=%v", changed, err)
	}
	v1, _, _ := s.SecurityGroupsVersion(ctx)
	// The same groups in another order, spaces repeated: no change, no write.
	same := []store.SecurityGroup{groups[2], groups[0], sg("b", nil, []string{"s2", "s2"})}
	if changed, err := s.ReplaceSecurityGroups(ctx, same); err != nil || changed {
		t.Fatalf("same groups: changed=%v err=%v; want no change", changed, err)
	}
	if v, _, _ := s.SecurityGroupsVersion(ctx); v != v1 {
		t.Errorf("version moved from %d to %d without a change", v1, v)
	}
	// b changes, a goes, d comes: the ids of unchanged groups stay.
	next := []store.SecurityGroup{sg("b", []string{"s1"}, []string{"s2"}), groups[2], sg("d", []string{"s2"}, nil)}
	if changed, err := s.ReplaceSecurityGroups(ctx, next); err != nil || !changed {
		t.Fatalf("changed groups: changed=%v err=%v", changed, err)
	}
	after, err := s.SecurityGroupsForSpaces(ctx, []string{"s1", "s2"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := guids(after), []string{"b", "c", "d"}; !slices.Equal(got, want) {
		t.Fatalf("after replace: %v, want %v", got, want)
	}
	if after.Groups[0].RunningSpaces[0] != "s1" {
		t.Errorf("b was not updated: %+v", after.Groups[0])
	}
	if v, _, _ := s.SecurityGroupsVersion(ctx); v != v1+1 {
		t.Errorf("version %d after one change from %d", v, v1)
	}
	// CC has no groups any more: all go.
	if changed, err := s.ReplaceSecurityGroups(ctx, nil); err != nil || !changed {
		t.Fatalf("no groups: changed=%v err=%v", changed, err)
	}
	if p, _ := s.SecurityGroupsForSpaces(ctx, []string{"s1", "s2"}, 0, 0); len(p.Groups) != 0 {
		t.Fatalf("groups left: %v", guids(p))
	}
}

func TestSecurityGroupsForSpacesFiltersAndPages(t *testing.T) {
	s, _, _ := newStore(t, 2)
	ctx := ctxT(t)
	var groups []store.SecurityGroup
	for i := range 10 {
		groups = append(groups, sg(fmt.Sprintf("g%02d", i), []string{fmt.Sprintf("space-%d", i%3)}, nil))
	}
	groups = append(groups, sg("global-running", nil, nil, "running"), sg("global-staging", nil, nil, "staging"),
		sg("staging-only", nil, []string{"space-2"}))
	if _, err := s.ReplaceSecurityGroups(ctx, groups); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		spaces []string
		want   []string
	}{
		{nil, []string{"global-running", "global-staging"}},
		{[]string{"space-0"}, []string{"g00", "g03", "g06", "g09", "global-running", "global-staging"}},
		{[]string{"space-2", "unknown"}, []string{"g02", "g05", "g08", "global-running", "global-staging", "staging-only"}},
	}
	for _, tc := range cases {
		p, err := s.SecurityGroupsForSpaces(ctx, tc.spaces, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		got := guids(p)
		slices.Sort(got)
		if !slices.Equal(got, tc.want) || p.Next != 0 {
			t.Errorf("spaces %v: %v next %d, want %v next 0", tc.spaces, got, p.Next, tc.want)
		}
	}
	// Paging two at a time returns every group once.
	var all []string
	var from int64
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		p, err := s.SecurityGroupsForSpaces(ctx, []string{"space-0"}, from, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Groups) > 2 {
			t.Fatalf("page of %d groups, limit 2", len(p.Groups))
		}
		all = append(all, guids(p)...)
		if p.Next == 0 {
			break
		}
		from = p.Next
	}
	slices.Sort(all)
	if want := []string{"g00", "g03", "g06", "g09", "global-running", "global-staging"}; !slices.Equal(all, want) {
		t.Errorf("pages: %v, want %v", all, want)
	}
}

func TestReplaceSecurityGroupsRefusesDuplicates(t *testing.T) {
	s, _, _ := newStore(t, 2)
	_, err := s.ReplaceSecurityGroups(ctxT(t), []store.SecurityGroup{sg("a", nil, nil), sg("a", nil, nil)})
	var bad *store.InvalidInputError
	if !errors.As(err, &bad) {
		t.Fatalf("err = %v, want *InvalidInputError", err)
	}
}
