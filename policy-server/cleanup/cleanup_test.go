package cleanup_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"netman/internal/testsupport/ccstub"
	"netman/internal/testsupport/storetest"
	"netman/lib/models"
	"netman/policy-server/ccclient"
	"netman/policy-server/cleanup"
	"netman/policy-server/store"
)

// Cloud Controller is the ccstub stand-in (CC cannot run here); Postgres is real.

func pol(src, dst string) models.Policy {
	return models.Policy{Source: models.Source{ID: src}, Destination: models.Destination{ID: dst, Protocol: "tcp", Ports: models.Ports{Start: 8080, End: 8080}}}
}

func setup(t *testing.T) (*ccstub.CC, *store.Store, *cleanup.Cleaner) {
	cc, st, c, _ := setupDSN(t)
	return cc, st, c
}

func setupDSN(t *testing.T) (*ccstub.CC, *store.Store, *cleanup.Cleaner, string) {
	t.Helper()
	st, _, dsn := storetest.Open(t, store.Options{TagLength: 1})
	cc := ccstub.New(t)
	cli := cc.Client(t, nil)
	return cc, st, &cleanup.Cleaner{CC: cli, Store: st, Interval: 20 * time.Millisecond}, dsn
}

func ids(ps []models.Policy) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Source.ID+">"+p.Destination.ID)
	}
	slices.Sort(out)
	return out
}

func tagsOf(t *testing.T, st *store.Store) map[string]string {
	t.Helper()
	tags, err := st.Tags(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, tg := range tags {
		out[tg.ID] = tg.Tag
	}
	return out
}

func TestDeleteStaleRemovesExactlyThePoliciesOfDeletedApps(t *testing.T) {
	cc, st, c := setup(t)
	ctx := context.Background()
	for _, a := range []string{"a", "b", "c", "d"} {
		cc.SetApp(a, "space")
	}
	if err := st.Create(ctx, []models.Policy{pol("a", "b"), pol("b", "c"), pol("c", "d"), pol("d", "a")}); err != nil {
		t.Fatal(err)
	}
	// A pinned group of another type (a tag asked for by a client) is not an app.
	if _, err := st.EnsureTag(ctx, "router-group", "router"); err != nil {
		t.Fatal(err)
	}
	before := tagsOf(t, st)
	cc.DeleteApp("b")

	gone, err := c.DeleteStale(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(gone), []string{"a>b", "b>c"}; !slices.Equal(got, want) {
		t.Fatalf("deleted %v, want %v", got, want)
	}
	left, _ := st.All(ctx)
	if got, want := ids(left), []string{"c>d", "d>a"}; !slices.Equal(got, want) {
		t.Fatalf("left %v, want %v", got, want)
	}
	after := tagsOf(t, st)
	if _, ok := after["b"]; ok {
		t.Error("b's group still holds a tag")
	}
	if after["router-group"] == "" {
		t.Error("the router group was cleaned up")
	}
	// b's tag is quarantined: new groups get never-used tags first.
	if err := st.Create(ctx, []models.Policy{pol("e", "f")}); err != nil {
		t.Fatal(err)
	}
	now := tagsOf(t, st)
	if now["e"] == before["b"] || now["f"] == before["b"] {
		t.Errorf("b's freed tag %s was reused at once (e=%s f=%s)", before["b"], now["e"], now["f"])
	}
}

func TestDeleteStaleWithCCDownDeletesNothing(t *testing.T) {
	cc, st, c := setup(t)
	ctx := context.Background()
	if err := st.Create(ctx, []models.Policy{pol("a", "b")}); err != nil {
		t.Fatal(err)
	}
	cc.SetDown(true)
	if _, err := c.DeleteStale(ctx); !errors.Is(err, ccclient.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if left, _ := st.All(ctx); len(left) != 1 {
		t.Fatalf("%d policies left, want 1: nothing may be deleted when CC cannot answer", len(left))
	}
}

func TestRunCleansUpPeriodically(t *testing.T) {
	cc, st, c, dsn := setupDSN(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cc.SetApp("a", "s")
	if err := st.Create(ctx, []models.Policy{pol("a", "gone")}); err != nil {
		t.Fatal(err)
	}
	v, _ := st.LastUpdated(ctx)
	changed := make(chan int64, 1)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		_ = st.Watch(watchCtx, dsn, 10*time.Millisecond, func(version int64) {
			if version > v {
				select {
				case changed <- version:
				default:
				}
			}
		})
	}()
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("the periodic cleanup did not delete the stale policy within 10s")
	}
	cancel()
	<-done
	if left, _ := st.All(context.Background()); len(left) != 0 {
		t.Fatalf("left %v", ids(left))
	}
}

func TestDeleteStaleDistrustsCCSeeingNoAppAtAll(t *testing.T) {
	_, st, c := setup(t)
	ctx := context.Background()
	var ps []models.Policy
	for i := range 10 {
		ps = append(ps, pol(fmt.Sprintf("src-%d", i), fmt.Sprintf("dst-%d", i)))
	}
	if err := st.Create(ctx, ps); err != nil {
		t.Fatal(err)
	}
	// CC answers, but knows none of the 20 apps: a client without admin_read_only.
	if _, err := c.DeleteStale(ctx); err == nil || !strings.Contains(err.Error(), "cloud_controller.admin_read_only") {
		t.Fatalf("err = %v, want a refusal naming the missing authority", err)
	}
	if left, _ := st.All(ctx); len(left) != 10 {
		t.Fatalf("%d policies left, want all 10", len(left))
	}
}
