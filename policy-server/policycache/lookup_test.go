package policycache

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"slices"
	"testing"

	"netman/lib/models"
)

// TestLookupMatchesReference compares Lookup with the obvious answer (every policy
// naming a requested group, sorted by models.PolicyKey, each once) over random
// snapshots and random changes applied to them. The ids share long prefixes, are
// shorter than the 8 bytes the sort keys hold, or differ only after a NUL, so that the
// keys' ties and the full comparison behind them are both exercised.
func TestLookupMatchesReference(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(13, 13))
	stems := []string{"", "a", "ab", "ab\x00", "abcdefgh", "abcdefgh-", "abcdefgi", "zz"}
	var groups []models.Source
	for i := range 60 {
		id := stems[rng.IntN(len(stems))] + fmt.Sprint(rng.IntN(4))
		if rng.IntN(3) == 0 {
			id = stems[rng.IntN(len(stems))]
		}
		if id == "" || slices.ContainsFunc(groups, func(g models.Source) bool { return g.ID == id }) {
			continue
		}
		groups = append(groups, models.Source{ID: id, Tag: fmt.Sprintf("%04X", i+1)})
	}
	randomPolicy := func() models.Policy {
		s, d := groups[rng.IntN(len(groups))], groups[rng.IntN(len(groups))]
		start := 1 + rng.IntN(3)
		return models.Policy{Source: s, Destination: models.Destination{
			ID: d.ID, Tag: d.Tag, Protocol: []string{"tcp", "udp", "icmp"}[rng.IntN(3)],
			Ports: models.Ports{Start: start, End: start + rng.IntN(2)},
		}}
	}
	for round := range 20 {
		held := map[models.PolicyKey]models.Policy{}
		for range rng.IntN(300) {
			p := randomPolicy()
			held[p.Key()] = p
		}
		var all []models.Policy
		for _, p := range held {
			all = append(all, p)
		}
		snap := build(1, all, Separately(jsonish, appendKey), maphash.MakeSeed())
		for step := range 40 {
			check(t, fmt.Sprintf("round %d step %d", round, step), snap, held, groups, rng)
			// One change: a new policy, or the removal of one the snapshot holds.
			p := randomPolicy()
			_, added := held[p.Key()]
			added = !added
			if added {
				held[p.Key()] = p
			} else {
				delete(held, p.Key())
			}
			v := snap.Version + 1
			next, err := snap.apply(v, []models.Change{{Version: v, Added: added, Policies: []models.Policy{p}}})
			if err != nil {
				t.Fatalf("round %d step %d: %v", round, step, err)
			}
			snap = next
		}
	}
}

func check(t *testing.T, what string, snap *Snapshot, held map[models.PolicyKey]models.Policy, groups []models.Source, rng *rand.Rand) {
	t.Helper()
	for range 10 {
		var ids []string
		for _, i := range rng.Perm(len(groups))[:rng.IntN(len(groups))] {
			ids = append(ids, groups[i].ID)
		}
		if rng.IntN(4) == 0 {
			ids = append(ids, "no-such-group")
		}
		var want []models.PolicyKey
		for k := range held {
			if slices.Contains(ids, k.Source) || slices.Contains(ids, k.Destination) {
				want = append(want, k)
			}
		}
		slices.SortFunc(want, models.PolicyKey.Compare)
		var got []models.PolicyKey
		reused := make([]Hit, rng.IntN(3), 8) // an answer appends after what dst holds
		found, _ := snap.AppendLookup(reused, ids)
		for _, h := range found[len(reused):] {
			got = append(got, h.Policy().Key())
			for i := range snap.encoding.Forms {
				if got, want := h.AppendEncoded(nil, i), h.Policy().AppendEncoded(nil, i); !bytes.Equal(got, want) || len(got) != h.Policy().EncodedLen(i) {
					t.Fatalf("%s: hit %v: form %d is %q (length %d), the policy's %q", what, h.Policy().Key(), i, got, h.Policy().EncodedLen(i), want)
				}
			}
		}
		for i := range snap.encoding.Forms {
			sum := 0
			for _, h := range found[len(reused):] {
				sum += len(h.AppendEncoded(nil, i))
			}
			if n, _ := FetchForms(found[len(reused):], i); n != sum {
				t.Fatalf("%s: FetchForms says form %d of the answer is %d bytes, it is %d", what, i, n, sum)
			}
		}
		if len(ids) == 0 {
			want = nil // no ids: the caller serves the full list instead
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: ids %q:\n got %v\nwant %v", what, ids, got, want)
		}
	}
}

// appendKey is a second encoder, so that a lookup is seen to find each form of a policy.
func appendKey(b []byte, p *Policy) []byte {
	return fmt.Appendf(b, "%v", p.Key())
}
