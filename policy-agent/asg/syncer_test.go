package asg_test

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"netman/lib/apiwire"
	"netman/lib/containerrules"
	"netman/lib/datastore"
	"netman/lib/policyclient"
	"netman/policy-agent/asg"
)

// recordingWriter stands in for iptables (the integration test uses the real one) to
// inject failures: it records the handles it is asked to rewrite.
type recordingWriter struct {
	handles []string
	fail    error
}

func (w *recordingWriter) ReplaceEgress(_ context.Context, chains map[string][]containerrules.Chain) ([]string, error) {
	if w.fail != nil {
		return nil, w.fail
	}
	w.handles = w.handles[:0]
	for h := range chains {
		w.handles = append(w.handles, h)
	}
	slices.Sort(w.handles)
	return nil, nil
}

func TestCycleRewritesOnlyWhatChanged(t *testing.T) {
	ctx := context.Background()
	ds, err := datastore.New(filepath.Join(t.TempDir(), "store.json"), datastore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	add := func(handle, ip string, meta map[string]any) {
		t.Helper()
		if _, err := ds.Add(ctx, datastore.Container{Handle: handle, IP: ip, Metadata: meta}); err != nil {
			t.Fatal(err)
		}
	}
	add("a", "10.255.0.2", map[string]any{"space_id": "s1", "container_workload": "app"})
	add("b", "10.255.0.3", map[string]any{"space_id": "s2", "container_workload": "staging"})
	add("no-space", "10.255.0.4", map[string]any{"container_workload": "app"})
	src := &groupSource{groups: []policyclient.SecurityGroup{
		{GUID: "g1", RunningSpaces: []string{"s1"}, StagingSpaces: []string{"s2"},
			Rules: []apiwire.SecurityGroupRule{{Protocol: "tcp", Destination: "10.9.0.1", Ports: "443"}}},
	}}
	w := &recordingWriter{}
	s, err := asg.New(asg.Options{Datastore: ds.Path(), Interval: time.Minute, Source: src, Writer: w,
		Overlay: []netip.Prefix{netip.MustParsePrefix("10.255.0.0/16")}})
	if err != nil {
		t.Fatal(err)
	}
	cycle := func(want ...string) {
		t.Helper()
		w.handles = nil
		res, err := s.Cycle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.Changed, want) || !slices.Equal(w.handles, want) {
			t.Errorf("rewrote %v (writer saw %v), want %v", res.Changed, w.handles, want)
		}
	}
	cycle("a", "b") // a container without a space keeps the rules of its ADD
	cycle()

	// A failed write is retried at the next cycle.
	src.groups[0].Rules[0].Ports = "8443"
	w.fail = errors.New("iptables-restore: exit status 4")
	if _, err := s.Cycle(ctx); err == nil {
		t.Fatal("a failed write was not reported")
	}
	w.fail = nil
	cycle("a", "b")

	// A container re-created under the same handle (a new address) gets its set again.
	if _, err := ds.Remove(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	add("a", "10.255.0.9", map[string]any{"space_id": "s1", "container_workload": "app"})
	cycle("a")

	// Moving the group off s2's staging changes b only.
	src.groups[0].StagingSpaces = nil
	cycle("b")
}
