package asg_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
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

// notifyingWriter tells the test each set of handles it is asked to rewrite.
type notifyingWriter struct{ rewrites chan []string }

func (w *notifyingWriter) ReplaceEgress(_ context.Context, chains map[string][]containerrules.Chain) ([]string, error) {
	var hs []string
	for h := range chains {
		hs = append(hs, h)
	}
	slices.Sort(hs)
	w.rewrites <- hs
	return nil, nil
}

// A container recorded between two rounds gets its set when the datastore's version
// moves, not an interval (an hour here) later.
func TestRunAppliesNewContainersAtOnce(t *testing.T) {
	ctx := context.Background()
	ds, err := datastore.New(filepath.Join(t.TempDir(), "store.json"), datastore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	meta := map[string]any{"space_id": "s1", "container_workload": "app"}
	if _, err := ds.Add(ctx, datastore.Container{Handle: "a", IP: "10.255.0.2", Metadata: meta}); err != nil {
		t.Fatal(err)
	}
	src := &groupSource{groups: []policyclient.SecurityGroup{{GUID: "g", RunningDefault: true,
		Rules: []apiwire.SecurityGroupRule{{Protocol: "all", Destination: "10.9.0.0/16"}}}}}
	w := &notifyingWriter{rewrites: make(chan []string, 4)}
	s, err := asg.New(asg.Options{Datastore: ds.Path(), Interval: time.Hour, DatastoreCheck: 10 * time.Millisecond,
		Source: src, Writer: w, Overlay: []netip.Prefix{netip.MustParsePrefix("10.255.0.0/16")}})
	if err != nil {
		t.Fatal(err)
	}
	signals, ready, done := make(chan os.Signal, 1), make(chan struct{}), make(chan error, 1)
	go func() { done <- s.Run(signals, ready) }()
	<-ready
	if got := <-w.rewrites; !slices.Equal(got, []string{"a"}) {
		t.Fatalf("first round rewrote %v, want [a]", got)
	}
	if _, err := ds.Add(ctx, datastore.Container{Handle: "b", IP: "10.255.0.3", Metadata: meta}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-w.rewrites:
		if !slices.Equal(got, []string{"b"}) {
			t.Errorf("after b was recorded the round rewrote %v, want [b]", got)
		}
	case <-time.After(30 * time.Second):
		t.Error("a new container was not given its security groups before the interval")
	}
	signals <- os.Interrupt
	if err := <-done; err != nil {
		t.Error(err)
	}
}
