package policycache

import (
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"slices"
	"testing"

	"netman/lib/models"
)

// benchPolicies returns n policies of the seed's shape (about n/2 apps, 1-3
// destinations each) and the app ids, without a database.
func benchPolicies(n int) ([]models.Policy, []string) {
	rng := rand.New(rand.NewPCG(9, 10))
	apps := max(2, n/2)
	ids := make([]string, apps)
	for i := range ids {
		ids[i] = fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", rng.Uint32(), rng.Uint32()&0xffff, rng.Uint32()&0xfff, rng.Uint32()&0xfff, rng.Uint64()&0xffffffffffff)
	}
	slices.Sort(ids)
	tag := func(i int) string { return fmt.Sprintf("%04X", i+1) }
	var ps []models.Policy
	for i := 0; len(ps) < n; i = (i + 1) % apps {
		for k := range 1 + rng.IntN(3) {
			if len(ps) == n {
				break
			}
			d := (i + 1 + k*7919) % apps
			ps = append(ps, models.Policy{
				Source:      models.Source{ID: ids[i], Tag: tag(i)},
				Destination: models.Destination{ID: ids[d], Tag: tag(d), Protocol: "tcp", Ports: models.Ports{Start: 8080 + k, End: 8080 + k}},
			})
		}
	}
	return ps, ids
}

func jsonish(b []byte, p *Policy) []byte {
	b = append(b, `{"source":{"id":"`...)
	b = append(b, p.Source.ID...)
	b = append(b, `","tag":"`...)
	b = append(b, p.Source.Tag...)
	b = append(b, `"},"destination":{"id":"`...)
	b = append(b, p.Destination.ID...)
	return append(b, `"}}`...)
}

// BenchmarkApplyOneChange: the CPU a replica spends on one logged change at 100k
// policies (alternately adding a policy between existing groups and removing it),
// against BenchmarkFullLoad, which is what every change cost before the change log.
func BenchmarkApplyOneChange(b *testing.B) {
	all, ids := benchPolicies(100_000)
	snap := build(1, all, Separately(jsonish, jsonish), maphash.MakeSeed())
	p := models.Policy{
		Source:      models.Source{ID: ids[10], Tag: fmt.Sprintf("%04X", 11)},
		Destination: models.Destination{ID: ids[20], Tag: fmt.Sprintf("%04X", 21), Protocol: "udp", Ports: models.Ports{Start: 53, End: 53}},
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		next, err := snap.apply(snap.Version+1, []models.Change{{Version: snap.Version + 1, Added: i%2 == 0, Policies: []models.Policy{p}}})
		if err != nil {
			b.Fatal(err)
		}
		snap = next
	}
}

func BenchmarkFullLoad(b *testing.B) {
	all, _ := benchPolicies(100_000)
	seed := maphash.MakeSeed()
	b.ReportAllocs()
	for b.Loop() {
		build(1, all, Separately(jsonish, jsonish), seed)
	}
}

// BenchmarkLookup: the snapshot's share of a poll naming 10 and 100 app ids.
func BenchmarkLookup(b *testing.B) {
	all, ids := benchPolicies(100_000)
	snap := build(1, all, Encoding{}, maphash.MakeSeed())
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			sets := make([][]string, 64)
			for i := range sets {
				for range n {
					sets[i] = append(sets[i], ids[rng.IntN(len(ids))])
				}
				slices.Sort(sets[i])
				sets[i] = slices.Compact(sets[i])
			}
			b.ReportAllocs()
			var hits []Hit
			i := 0
			for b.Loop() {
				hits, _ = snap.AppendLookup(hits[:0], sets[i%len(sets)])
				i++
			}
		})
	}
}
