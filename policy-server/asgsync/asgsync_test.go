package asgsync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"netman/internal/testsupport/ccstub"
	"netman/internal/testsupport/storetest"
	"netman/policy-server/asgsync"
	"netman/policy-server/ccclient"
	"netman/policy-server/store"
)

// Cloud Controller is the ccstub stand-in (CC cannot run here); Postgres is real.

type env struct {
	cc    *ccstub.CC
	st    *store.Store
	newSt func() *store.Store
	cli   *ccclient.Client
}

func setup(t testing.TB) env {
	t.Helper()
	st, db, _ := storetest.Open(t, store.Options{})
	newSt := func() *store.Store {
		s, err := store.New(db, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	cc := ccstub.New(t)
	cli := cc.Client(t, nil)
	return env{cc: cc, st: st, newSt: newSt, cli: cli}
}

func group(guid string, spaces ...string) ccstub.SecurityGroup {
	return ccstub.SecurityGroup{
		GUID: guid, Name: "name-" + guid, RunningSpaces: spaces,
		Rules: []ccstub.Rule{{Protocol: "tcp", Destination: "10.1.0.0/16", Ports: "443", Description: "a <b> & c"}},
	}
}

func stored(t testing.TB, st *store.Store, spaces ...string) map[string]store.SecurityGroup {
	t.Helper()
	p, err := st.SecurityGroupsForSpaces(context.Background(), spaces, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.SecurityGroup{}
	for _, g := range p.Groups {
		out[g.GUID] = g
	}
	return out
}

func TestChangeReachesTheStoreInTheNextRound(t *testing.T) {
	e := setup(t)
	e.cc.SetSecurityGroup(group("sg-1", "space-1"))
	results := make(chan asgsync.Result, 100)
	s := &asgsync.Syncer{CC: e.cli, Store: e.st, Interval: 100 * time.Millisecond, Registerer: prometheus.NewRegistry(),
		OnResult: func(r asgsync.Result, err error) {
			if err != nil {
				t.Errorf("round failed: %v", err)
			}
			results <- r
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	if r := <-results; !r.Changed {
		t.Fatalf("first round: %+v, want the group stored", r)
	}
	g := stored(t, e.st, "space-1")["sg-1"]
	var rules []map[string]any
	if err := json.Unmarshal([]byte(g.Rules), &rules); err != nil || rules[0]["ports"] != "443" || rules[0]["description"] != "a <b> & c" {
		t.Fatalf("stored rules %q (%v)", g.Rules, err)
	}

	e.cc.SetSecurityGroup(group("sg-1", "space-2"))
	// The first round that runs after the change stores it: at most one interval.
	for r := range results {
		if !r.Ran {
			continue
		}
		if !r.Changed {
			t.Fatalf("the round after the change did not store it: %+v", r)
		}
		break
	}
	if _, ok := stored(t, e.st, "space-2")["sg-1"]; !ok {
		t.Fatal("sg-1 not bound to space-2 after the sync")
	}
}

func TestUnchangedCCIsNotListedAgain(t *testing.T) {
	e := setup(t)
	e.cc.SetSecurityGroup(group("sg-1", "space-1"))
	s := &asgsync.Syncer{CC: e.cli, Store: e.st, Interval: time.Millisecond}
	ctx := context.Background()
	if r, err := s.SyncOnce(ctx); err != nil || !r.Changed {
		t.Fatalf("first: %+v %v", r, err)
	}
	v, _, _ := e.st.SecurityGroupsVersion(ctx)
	lists := e.cc.Requests("security_groups")
	time.Sleep(2 * time.Millisecond) // past half the 1ms interval: the next call is a round
	r, err := s.SyncOnce(ctx)
	if err != nil || !r.Ran || r.Fetched {
		t.Fatalf("second: %+v %v; want a round that did not list", r, err)
	}
	if n := e.cc.Requests("security_groups"); n != lists {
		t.Errorf("listed again although last_update did not move (%d -> %d requests)", lists, n)
	}
	if v2, _, _ := e.st.SecurityGroupsVersion(ctx); v2 != v {
		t.Errorf("version moved %d -> %d without a change", v, v2)
	}
}

func TestReplicasDoNotDoubleWork(t *testing.T) {
	e := setup(t)
	e.cc.SetSecurityGroup(group("sg-1", "space-1"))
	e.cc.SetDelay(50 * time.Millisecond) // rounds overlap
	var wg sync.WaitGroup
	var mu sync.Mutex
	ran := 0
	for i := range 4 {
		wg.Add(1)
		s := &asgsync.Syncer{CC: e.cli, Store: e.newSt(), Interval: time.Hour}
		go func() {
			defer wg.Done()
			r, err := s.SyncOnce(context.Background())
			if err != nil {
				t.Errorf("replica %d: %v", i, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if r.Ran {
				ran++
			}
		}()
	}
	wg.Wait()
	if ran != 1 || e.cc.Requests("security_groups") != 1 {
		t.Fatalf("4 replicas: %d rounds ran, %d listings; want 1 and 1", ran, e.cc.Requests("security_groups"))
	}
}

func TestCCDownKeepsGroupsAndBacksOff(t *testing.T) {
	e := setup(t)
	e.cc.SetSecurityGroup(group("sg-1", "space-1"))
	type round struct {
		at  time.Time
		err error
	}
	rounds := make(chan round, 100)
	s := &asgsync.Syncer{CC: e.cli, Store: e.st, Interval: 2 * time.Second, MinBackoff: 200 * time.Millisecond,
		OnResult: func(_ asgsync.Result, err error) { rounds <- round{time.Now(), err} }}
	// Groups an earlier sync stored (written directly: no sync round is recorded).
	if _, err := e.st.ReplaceSecurityGroups(context.Background(), []store.SecurityGroup{{GUID: "sg-1", Rules: "[]", RunningSpaces: []string{"space-1"}}}); err != nil {
		t.Fatal(err)
	}
	e.cc.SetDown(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	var failed []time.Time
	for len(failed) < 4 {
		r := <-rounds
		if r.err == nil {
			t.Fatal("a round succeeded while CC was down")
		}
		failed = append(failed, r.at)
		if _, ok := stored(t, e.st, "space-1")["sg-1"]; !ok {
			t.Fatal("stored groups were dropped while CC was down")
		}
	}
	// Waits of 200ms, 400ms, 800ms after the failed rounds: the third gap is 600ms
	// longer than the first, whatever a round itself takes on a loaded machine.
	gap1, gap3 := failed[1].Sub(failed[0]), failed[3].Sub(failed[2])
	if gap3-gap1 < 400*time.Millisecond {
		t.Errorf("retries did not back off: gaps %v then %v", gap1, gap3)
	}
	e.cc.SetDown(false)
	for r := range rounds {
		if r.err == nil {
			break
		}
	}
}

// BenchmarkSync1000Groups measures one full round for 1,000 groups of 10 rules: the
// listing from the stand-in, the conversion and the write to Postgres.
func BenchmarkSync1000Groups(b *testing.B) {
	e := setup(b)
	groups := make([]ccstub.SecurityGroup, 1000)
	for i := range groups {
		g := ccstub.SecurityGroup{GUID: fmt.Sprintf("sg-%04d", i), Name: fmt.Sprintf("group-%d", i),
			RunningSpaces: []string{fmt.Sprintf("space-%d", i%50)}, StagingSpaces: []string{fmt.Sprintf("space-%d", i%50)}}
		for r := range 10 {
			g.Rules = append(g.Rules, ccstub.Rule{Protocol: "tcp", Destination: fmt.Sprintf("10.%d.%d.0/24", i%250, r), Ports: "443,8080-8090", Description: "rule"})
		}
		groups[i] = g
	}
	s := &asgsync.Syncer{CC: e.cli, Store: e.st, Interval: time.Nanosecond}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		groups[0].Name = fmt.Sprintf("changed-%d", i) // every round lists and writes
		e.cc.SetSecurityGroups(groups)
		b.StartTimer()
		r, err := s.SyncOnce(context.Background())
		if err != nil || !r.Changed || r.Groups != 1000 {
			b.Fatalf("%+v %v", r, err)
		}
	}
}
