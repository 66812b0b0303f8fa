package policycache

import (
	"fmt"
	"hash/maphash"
	"testing"

	"netman/lib/models"
)

// TestRemovedGroupsAreForgotten: groups that lost their last policy are remembered (so
// LookupChanged sees the removal) until they outnumber half the groups; then the snapshot
// forgets them and raises Floor, so every older answer counts as changed once.
func TestRemovedGroupsAreForgotten(t *testing.T) {
	t.Parallel()
	all, ids := benchPolicies(200)
	snap := build(1, all, nil, maphash.MakeSeed())
	size := snap.Len()
	p := func(i int) models.Policy {
		id := fmt.Sprintf("gone-%d", i)
		return models.Policy{Source: models.Source{ID: id, Tag: "F" + id}, Destination: models.Destination{ID: ids[0], Tag: "0001", Protocol: "tcp", Ports: models.Ports{Start: 1, End: 1}}}
	}
	v := snap.Version
	for i := range 1100 {
		var err error
		v++
		if snap, err = snap.apply(v, []models.Change{{Version: v, Added: true, Policies: []models.Policy{p(i)}}}); err != nil {
			t.Fatal(err)
		}
		v++
		if snap, err = snap.apply(v, []models.Change{{Version: v, Added: false, Policies: []models.Policy{p(i)}}}); err != nil {
			t.Fatal(err)
		}
		id := p(i).Source.ID
		if _, changed := snap.LookupChanged([]string{id}); snap.tombs > 0 && changed != v {
			t.Fatalf("group %s removed at %d: changed at %d", id, v, changed)
		}
	}
	if snap.Floor <= 1 || snap.tombs > 1024 {
		t.Fatalf("after 1100 removed groups: Floor %d, %d tombstones", snap.Floor, snap.tombs)
	}
	if _, got := snap.LookupChanged([]string{"gone-0"}); got != snap.Floor {
		t.Errorf("a forgotten group: changed at %d, want Floor %d", got, snap.Floor)
	}
	if snap.Len() != size || len(snap.Lookup([]string{ids[0]})) == 0 {
		t.Errorf("after the churn: %d policies, want %d", snap.Len(), size)
	}
}
