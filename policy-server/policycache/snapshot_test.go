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
	snap := build(1, all, Encoding{}, maphash.MakeSeed())
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

// idsInOneShard returns n ids that hash to one shard of s.
func idsInOneShard(s *Snapshot, n int) []string {
	byShard := map[uint64][]string{}
	for i := 0; ; i++ {
		id := fmt.Sprintf("app-%d", i)
		h := s.hash(id) & (nShards - 1)
		if byShard[h] = append(byShard[h], id); len(byShard[h]) == n {
			return byShard[h]
		}
	}
}

func policyBetween(src, dst string) models.Policy {
	return models.Policy{
		Source:      models.Source{ID: src, Tag: "T" + src},
		Destination: models.Destination{ID: dst, Tag: "T" + dst, Protocol: "tcp", Ports: models.Ports{Start: 8080, End: 8080}},
	}
}

// TestAddGrowingTheSourcesTable: a change whose source and destination are new groups of
// one shard, where adding the destination grows the shard's table (moving the source's
// entry): both groups list the policy, and the old snapshot is unchanged.
func TestAddGrowingTheSourcesTable(t *testing.T) {
	t.Parallel()
	seed := maphash.MakeSeed()
	ids := idsInOneShard(build(1, nil, Encoding{}, seed), 41)
	// One group to start with, then each change adds two entries, source first: the
	// table grows when its 5th, 11th and 23rd entry is added, each a destination.
	snap := build(1, []models.Policy{policyBetween(ids[0], ids[0])}, Encoding{}, seed)
	v := snap.Version
	for i := 1; i+1 < len(ids); i += 2 {
		v++
		next, err := snap.apply(v, []models.Change{{Version: v, Added: true, Policies: []models.Policy{policyBetween(ids[i], ids[i+1])}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids[i : i+2] {
			if got := next.Lookup([]string{id}); len(got) != 1 || got[0].Source.ID != ids[i] {
				t.Fatalf("after adding %s -> %s: lookup of %s = %v", ids[i], ids[i+1], id, got)
			}
			if got := snap.Lookup([]string{id}); len(got) != 0 {
				t.Fatalf("the snapshot before the change lists %s: %v", id, got)
			}
		}
		snap = next
	}
	if got := snap.Lookup(ids); len(got) != 1+len(ids)/2 {
		t.Errorf("all %d groups: %d policies, want %d", len(ids), len(got), 1+len(ids)/2)
	}
}

// TestLookupPastAHashCollision: when another group with the same 64-bit hash comes first
// in a group's probe sequence, a lookup of several ids still finds the group.
func TestLookupPastAHashCollision(t *testing.T) {
	t.Parallel()
	ids := []string{"app-a", "app-b", "app-c"}
	all := []models.Policy{policyBetween(ids[0], ids[1]), policyBetween(ids[2], ids[1])}
	snap := build(1, all, Encoding{}, maphash.MakeSeed())
	// Rebuild app-a's shard with an impostor holding app-a's hash inserted first.
	h := snap.hash(ids[0])
	sh := &snap.shards[h&(nShards-1)]
	old := sh.slots
	*sh = shard{slots: make([]entry, len(old))}
	sh.insert(entry{hash: h, id: "impostor", g: &Group{ID: "impostor", Tag: "FFFF"}})
	for _, e := range old {
		if e.g != nil {
			sh.insert(e)
		}
	}
	if got := snap.Lookup(ids[:1]); len(got) != 1 || got[0].Source.ID != ids[0] {
		t.Fatalf("lookup of %s alone: %v", ids[0], got)
	}
	if got := snap.Lookup([]string{ids[0], ids[2]}); len(got) != 2 {
		t.Fatalf("lookup of %s and %s: %v, want both policies", ids[0], ids[2], got)
	}
}
