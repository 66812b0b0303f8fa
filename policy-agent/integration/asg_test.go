package integration_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"netman/internal/testsupport/storetest"
	"netman/lib/containerrules"
	"netman/lib/datastore"
	"netman/lib/httpapi"
	"netman/lib/mutualtls"
	"netman/lib/mutualtls/mutualtlstest"
	"netman/lib/policyclient"
	"netman/lib/rules/rulestest"
	"netman/policy-agent/asg"
	"netman/policy-server/api/internalapi"
	"netman/policy-server/policycache"
	"netman/policy-server/store"
)

// Dynamic security groups: two containers on a cell (real iptables in a throwaway
// namespace, their egress chains installed as the wrapper's ADD installs them), a policy
// server's internal API over mutual TLS on a real store. Changing the security group of
// one container's space rewrites that container's egress chain and nothing of the other's;
// while the server is unreachable the rules stay.
func TestSecurityGroupChangeReachesOneContainer(t *testing.T) {
	rulestest.RequireEnforcement(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()

	st, _, _ := storetest.Open(t, store.Options{})
	groups := []store.SecurityGroup{
		{GUID: "public", Name: "public", RunningDefault: true, Rules: `[{"protocol":"tcp","destination":"203.0.113.0/24","ports":"443"}]`},
		{GUID: "db-1", Name: "db-1", RunningSpaces: []string{"space-1"}, Rules: `[{"protocol":"tcp","destination":"198.51.100.10","ports":"5432"}]`},
		{GUID: "db-2", Name: "db-2", RunningSpaces: []string{"space-2"}, Rules: `[{"protocol":"tcp","destination":"198.51.100.20","ports":"3306"}]`},
	}
	if _, err := st.ReplaceSecurityGroups(ctx, groups); err != nil {
		t.Fatal(err)
	}
	certs, _ := mutualtlstest.WriteFiles(t, dir)
	serverTLS, err := mutualtls.ServerConfig(certs.ServerCert, certs.ServerKey, certs.CACert)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(httpapi.NewMux(httpapi.Middleware{Server: "internal", Logger: slog.New(slog.DiscardHandler)},
		internalapi.V1Routes(policycache.New(st, policycache.Options{Encoding: internalapi.Encoding()}), st, 0)))
	srv.TLS = serverTLS
	srv.StartTLS()
	defer srv.Close()
	clientTLS, err := mutualtls.ClientConfig(certs.ClientCert, certs.ClientKey, certs.CACert)
	if err != nil {
		t.Fatal(err)
	}
	client, err := policyclient.New(srv.URL, clientTLS, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}

	cell := rulestest.NewNS(t)
	lock := filepath.Join(dir, "iptables.lock")
	applier, err := containerrules.NewApplier(lock)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := datastore.New(filepath.Join(dir, "store.json"), datastore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	overlay := []netip.Prefix{netip.MustParsePrefix("10.255.0.0/16")}
	egress := containerrules.Egress{Deny: containerrules.DenyNetworks{Always: []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16")}}}
	containers := []struct{ handle, ip, space string }{
		{"container-a", "10.255.1.2", "space-1"},
		{"container-b", "10.255.1.3", "space-2"},
	}
	for _, c := range containers {
		// What the wrapper installs at ADD: the static netOutRules garden gave.
		e := egress
		e.Workload = "app"
		e.Rules = []containerrules.NetOutRule{{Protocol: containerrules.ProtocolAll,
			Networks: []containerrules.IPRange{{Start: netip.MustParseAddr("0.0.0.0"), End: netip.MustParseAddr("255.255.255.255")}}}}
		set, err := containerrules.Build(containerrules.Spec{Handle: c.handle, IP: netip.MustParseAddr(c.ip), Overlay: overlay, Egress: &e})
		if err != nil {
			t.Fatal(err)
		}
		if err := cell.Do(func(ns.NetNS) error { return applier.Add(ctx, set) }); err != nil {
			t.Fatal(err)
		}
		if _, err := ds.Add(ctx, datastore.Container{Handle: c.handle, IP: c.ip,
			Metadata: map[string]any{"space_id": c.space, "container_workload": "app"}}); err != nil {
			t.Fatal(err)
		}
	}
	// A record whose container has no egress chain (DEL removed it, or the wrapper does
	// not enforce egress): the syncer must not create one.
	if _, err := ds.Add(ctx, datastore.Container{Handle: "container-c", IP: "10.255.1.4",
		Metadata: map[string]any{"space_id": "space-1", "container_workload": "app"}}); err != nil {
		t.Fatal(err)
	}
	syncer, err := asg.New(asg.Options{Datastore: ds.Path(), Interval: time.Minute, Source: client, Writer: applier,
		Overlay: overlay, Egress: egress})
	if err != nil {
		t.Fatal(err)
	}
	cycle := func() (asg.Result, error) {
		var res asg.Result
		var err error
		_ = cell.Do(func(ns.NetNS) error { res, err = syncer.Cycle(ctx); return nil })
		return res, err
	}
	chain := func(handle string) string {
		t.Helper()
		var out []byte
		err := cell.Do(func(ns.NetNS) error {
			var err error
			out, err = exec.Command("iptables", "-w", "10", "-t", "filter", "-S", containerrules.EgressChain(handle)).Output()
			return err
		})
		if err != nil {
			t.Fatalf("listing the egress chain of %s: %v", handle, err)
		}
		return string(out)
	}
	has := func(handle, rule string) bool { return strings.Contains(chain(handle), rule) }
	allowAll := func(handle string) bool {
		return slices.Contains(strings.Split(chain(handle), "\n"), "-A "+containerrules.EgressChain(handle)+" -j ACCEPT")
	}
	if !allowAll("container-a") {
		t.Fatalf("the ADD's allow-all rule is not in the chain:\n%s", chain("container-a"))
	}

	res, err := cycle()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Changed, []string{"container-a", "container-b"}) {
		t.Errorf("first cycle changed %v, want both containers", res.Changed)
	}
	if !slices.Equal(res.Missing, []string{"container-c"}) {
		t.Errorf("first cycle found %v without an egress chain, want container-c", res.Missing)
	}
	if err := cell.Do(func(ns.NetNS) error {
		return exec.Command("iptables", "-w", "10", "-t", "filter", "-S", containerrules.EgressChain("container-c")).Run()
	}); err == nil {
		t.Error("the syncer created an egress chain for container-c, which has none")
	}
	for _, c := range []struct{ handle, rule string }{
		{"container-a", "-d 198.51.100.10/32 -p tcp -m tcp --dport 5432 -j ACCEPT"},
		{"container-b", "-d 198.51.100.20/32 -p tcp -m tcp --dport 3306 -j ACCEPT"},
		{"container-a", "-d 203.0.113.0/24 -p tcp -m tcp --dport 443 -j ACCEPT"},
		{"container-b", "-d 203.0.113.0/24 -p tcp -m tcp --dport 443 -j ACCEPT"},
		// what the wrapper puts there besides the security groups stays
		{"container-a", "-d 10.255.0.0/16 -j RETURN"},
		{"container-a", "-d 169.254.0.0/16 -j nm-rej-"},
	} {
		if !has(c.handle, c.rule) {
			t.Errorf("egress chain of %s lacks %q:\n%s", c.handle, c.rule, chain(c.handle))
		}
	}
	if allowAll("container-a") || allowAll("container-b") {
		t.Errorf("the static allow-all rule of ADD is still there:\n%s", chain("container-a"))
	}
	if res, err := cycle(); err != nil || len(res.Changed) != 0 {
		t.Errorf("a cycle with nothing changed rewrote %v (err %v)", res.Changed, err)
	}

	// space-1's group changes: only container-a's chain is rewritten.
	bBefore := chain("container-b")
	groups[1].Rules = `[{"protocol":"tcp","destination":"198.51.100.11","ports":"5433"}]`
	if _, err := st.ReplaceSecurityGroups(ctx, groups); err != nil {
		t.Fatal(err)
	}
	res, err = cycle()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Changed, []string{"container-a"}) {
		t.Errorf("after space-1's change the cycle rewrote %v, want only container-a", res.Changed)
	}
	if !has("container-a", "-d 198.51.100.11/32 -p tcp -m tcp --dport 5433 -j ACCEPT") || has("container-a", "198.51.100.10") {
		t.Errorf("container-a's egress chain does not hold space-1's new group:\n%s", chain("container-a"))
	}
	if got := chain("container-b"); got != bBefore {
		t.Errorf("container-b's egress chain changed:\nbefore\n%s\nafter\n%s", bBefore, got)
	}

	// The server is unreachable: the cycle fails and the rules stay.
	aBefore := chain("container-a")
	srv.Close()
	groups[1].Rules = `[]`
	if _, err := cycle(); err == nil {
		t.Error("a cycle without the policy server succeeded")
	}
	if chain("container-a") != aBefore || chain("container-b") != bBefore {
		t.Error("the egress chains changed while the policy server was unreachable")
	}
}
