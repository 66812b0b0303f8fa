package asg_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"netman/lib/apiwire"
	"netman/lib/containerrules"
	"netman/lib/datastore"
	"netman/lib/policyclient"
	"netman/policy-agent/asg"
)

// groupSource serves fixed groups; the policy server is measured by its own benchmarks.
type groupSource struct{ groups []policyclient.SecurityGroup }

func (s *groupSource) SecurityGroups(context.Context, []string) ([]policyclient.SecurityGroup, error) {
	return s.groups, nil
}

// countingWriter stands in for iptables (measured by the wrapper's benchmarks): it counts
// the containers it is asked to rewrite.
type countingWriter struct{ rewritten int }

func (w *countingWriter) ReplaceEgress(_ context.Context, chains map[string][]containerrules.Chain) ([]string, error) {
	w.rewritten += len(chains)
	return nil, nil
}

// BenchmarkCycle is one round on a cell of 250 containers in 50 spaces, with a running
// default group and one 10-rule group per space: when nothing changed, and when one
// space's group changed (5 containers rewritten).
func BenchmarkCycle(b *testing.B) {
	ctx := context.Background()
	ds, err := datastore.New(filepath.Join(b.TempDir(), "store.json"), datastore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 250 {
		if _, err := ds.Add(ctx, datastore.Container{Handle: fmt.Sprintf("container-%03d", i), IP: fmt.Sprintf("10.255.%d.%d", i/200, i%200+2),
			Metadata: map[string]any{"space_id": fmt.Sprintf("space-%d", i%50), "container_workload": "app"}}); err != nil {
			b.Fatal(err)
		}
	}
	rules := func(seed int) []apiwire.SecurityGroupRule {
		var rs []apiwire.SecurityGroupRule
		for j := range 10 {
			rs = append(rs, apiwire.SecurityGroupRule{Protocol: "tcp", Destination: fmt.Sprintf("198.%d.%d.0/24", seed%250, j), Ports: "443,8000-8080"})
		}
		return rs
	}
	src := &groupSource{groups: []policyclient.SecurityGroup{{GUID: "public", RunningDefault: true, Rules: rules(251)}}}
	for s := range 50 {
		src.groups = append(src.groups, policyclient.SecurityGroup{GUID: fmt.Sprint("g", s), RunningSpaces: []string{fmt.Sprintf("space-%d", s)}, Rules: rules(s)})
	}
	w := &countingWriter{}
	syncer, err := asg.New(asg.Options{Datastore: ds.Path(), Interval: time.Minute, Source: src, Writer: w,
		Overlay: []netip.Prefix{netip.MustParsePrefix("10.255.0.0/16")}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := syncer.Cycle(ctx); err != nil {
		b.Fatal(err)
	}
	b.Run("unchanged", func(b *testing.B) {
		w.rewritten = 0
		for b.Loop() {
			if _, err := syncer.Cycle(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(w.rewritten)/float64(b.N), "containers_rewritten/op")
	})
	b.Run("one-space-changed", func(b *testing.B) {
		w.rewritten = 0
		n := 0
		for b.Loop() {
			n++
			src.groups[1].Rules = rules(100 + n%2)
			if _, err := syncer.Cycle(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(w.rewritten)/float64(b.N), "containers_rewritten/op")
	})
}
