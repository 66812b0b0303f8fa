package integration

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"netman/lib/datastore"
	"netman/wrapper"
)

// The runtime may DEL a container while its ADD is still running (a create that timed
// out). Each round races the two; whatever the order, a record must never outlive the
// IP it names, or the next container given that IP would inherit the record's policies.
func TestAddRacingDelOfOneContainer(t *testing.T) {
	c := newCell(t, 1500)
	const rounds = 50
	recorded := 0
	for round := range rounds {
		id := fmt.Sprintf("race-%02d", round)
		container := newNS(t)
		conf := c.conf("1.0.0", c.bridgeDelegate(), map[string]any{"metadata": metadataFor(id)})
		add, err := c.start(invocation{command: "ADD", containerID: id, netns: container, conf: conf})
		if err != nil {
			t.Fatal(err)
		}
		del, err := c.start(invocation{command: "DEL", containerID: id, netns: container, conf: conf})
		if err != nil {
			t.Fatal(err)
		}
		_, addErr := add.wait()
		_, delErr := del.wait()
		if addErr != nil || delErr != nil {
			t.Fatalf("round %d: ADD: %v, DEL: %v", round, addErr, delErr)
		}
		if rec, ok := c.recordOf(id); ok {
			recorded++
			if !slices.Contains(c.reservedIPs("netman-test"), rec.IP) {
				t.Fatalf("round %d: record %s names %s, which host-local has released (holds %v)", round, id, rec.IP, c.reservedIPs("netman-test"))
			}
			if _, _, ok := containerLink(t, container); !ok {
				t.Fatalf("round %d: record %s without the container's interface", round, id)
			}
		}
		c.mustExec(invocation{command: "DEL", containerID: id, netns: container, conf: conf})
		c.expectNothingLeft(t, "netman-test", fmt.Sprintf("round %d", round))
	}
	t.Logf("%d of %d rounds ran DEL before ADD (record kept), the others ADD before DEL", recorded, rounds)
}

// A record whose container is gone but whose IP the delegate hands out again (a DEL
// that could not write the datastore, or another writer's leftover) is dropped by the
// ADD that gets the IP.
func TestAddDropsAStaleRecordWithItsIP(t *testing.T) {
	c := newCell(t, 1500)
	// host-local hands out the first free address after the gateway: 10.255.0.2.
	store, err := datastore.New(c.datastore(), datastore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Add(t.Context(), datastore.Container{Handle: "gone", IP: "10.255.0.2", Metadata: map[string]any{"policy_group_id": "other-app"}}); err != nil {
		t.Fatal(err)
	}
	container := newNS(t)
	ip, _ := c.addAndVerify("1.0.0", "fresh", container, c.bridgeDelegate(), 1500)
	if ip != "10.255.0.2" {
		t.Fatalf("host-local gave %s; the test expects the stale record's 10.255.0.2", ip)
	}
	if _, ok := c.recordOf("gone"); ok {
		t.Fatal("the stale record holding the new container's IP was kept")
	}
	c.delAndVerify("1.0.0", "fresh", container, c.bridgeDelegate(), "netman-test")
}

// fakeDelegate installs a delegate that speaks only CNI 0.4.0 and answers ADD with a
// result no earlier version can express. No real plugin produces such a result; it is
// the only way to make the final conversion fail. It logs each ADD/DEL with the version
// it was called in.
func fakeDelegate(t *testing.T, c *cell) (calls func() []string) {
	dir := t.TempDir()
	script := `#!/bin/sh
conf=$(cat)
if [ "$CNI_COMMAND" = VERSION ]; then
  echo '{"cniVersion":"0.4.0","supportedVersions":["0.4.0"]}'; exit 0
fi
echo "$CNI_COMMAND $(echo "$conf" | grep -o '"cniVersion":"[^"]*"' | cut -d'"' -f4)" >> "$(dirname "$0")/calls"
case "$conf" in *'"cniVersion":"0.4.0"'*) ;; *) echo '{"cniVersion":"0.4.0","code":1,"msg":"incompatible CNI versions"}'; exit 1;; esac
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{"cniVersion":"0.4.0","ips":[{"version":"5","address":"10.99.0.2/24"}]}'
fi
`
	if err := os.WriteFile(filepath.Join(dir, "fake-040"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c.cniPath = dir + string(os.PathListSeparator) + c.cniPath
	return func() []string {
		b, _ := os.ReadFile(filepath.Join(dir, "calls"))
		return strings.Fields(strings.ReplaceAll(string(b), "\n", ","))
	}
}

// The delegate is called in the highest version both speak (0.4.0 for a 0.2.0 runtime
// here, after it refused 0.2.0), and a result that cannot be given in the runtime's
// version undoes the ADD: no record, and the delegate's DEL ran.
func TestUnconvertibleResultUndoesAdd(t *testing.T) {
	c := newCell(t, 1500)
	calls := fakeDelegate(t, c)
	_, err := c.exec(invocation{command: "ADD", containerID: "conv", netns: newNS(t),
		conf: c.conf("0.2.0", map[string]any{"type": "fake-040"}, map[string]any{"metadata": metadataFor("conv")})})
	ce := expectCode(t, err, 1)
	if !strings.Contains(ce.Msg, "converting") {
		t.Errorf("error %s does not say the conversion failed", ce)
	}
	if _, ok := c.recordOf("conv"); ok {
		t.Error("the record of the failed ADD was kept")
	}
	want := []string{"ADD 0.2.0,ADD 0.4.0,DEL 0.4.0,"}
	if got := calls(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("delegate calls %q, want %q", got, want)
	}
}

// Metadata over 64 KiB is refused before the delegate runs; the DEL that follows a
// failed ADD is not held back by it.
func TestMetadataOverTheLimit(t *testing.T) {
	c := newCell(t, 1500)
	container := newNS(t)
	huge := map[string]any{"app_id": "a", "blob": strings.Repeat("x", datastore.MaxMetadataBytes)}
	conf := c.conf("1.0.0", c.bridgeDelegate(), map[string]any{"metadata": huge})
	_, err := c.exec(invocation{command: "ADD", containerID: "huge", netns: container, conf: conf})
	if ce := expectCode(t, err, 7); !strings.Contains(ce.Details, "64 KiB") {
		t.Errorf("error %s does not name the limit", ce)
	}
	if _, _, ok := containerLink(t, container); ok {
		t.Error("the delegate ran")
	}
	c.mustExec(invocation{command: "DEL", containerID: "huge", netns: container, conf: conf})
	c.expectNothingLeft(t, "netman-test", "after the refused ADD")
}

// DEL checks only what DEL needs: an mtu no ADD would accept does not stop it.
func TestDelIgnoresAddOnlySettings(t *testing.T) {
	c := newCell(t, 1500)
	container := newNS(t)
	c.addAndVerify("1.0.0", "mtu", container, c.bridgeDelegate(), 1500)
	bad := c.bridgeDelegate()
	bad["mtu"] = 500
	c.mustExec(invocation{command: "DEL", containerID: "mtu", netns: container,
		conf: c.conf("1.0.0", bad, map[string]any{"mtu": 100, "underlay_ip": "not-an-ip"})})
	if _, ok := c.recordOf("mtu"); ok {
		t.Error("record left")
	}
	c.expectNothingLeft(t, "netman-test", "after DEL")
}

// With the datastore unwritable, DEL still releases the interface and the IP, says the
// record is left, and a DEL after the operator fixed the datastore removes the record.
func TestDelWithAnUnwritableDatastore(t *testing.T) {
	c := newCell(t, 1500)
	container := newNS(t)
	c.addAndVerify("1.0.0", "ro", container, c.bridgeDelegate(), 1500)
	dir := filepath.Dir(c.datastore())
	// A read-only bind mount of the directory onto itself: root ignores mode bits.
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	mounted := true
	unmount := func() {
		if mounted {
			if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
				t.Fatal(err)
			}
			mounted = false
		}
	}
	t.Cleanup(unmount)
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	conf := c.conf("1.0.0", c.bridgeDelegate(), nil)
	_, err := c.exec(invocation{command: "DEL", containerID: "ro", netns: container, conf: conf})
	ce := expectCode(t, err, wrapper.ErrDatastore)
	if !strings.Contains(ce.Details, "left behind: the record of container ro") || !strings.Contains(ce.Details, "IP are released") {
		t.Errorf("error %s does not say what is left", ce)
	}
	c.expectNothingLeft(t, "netman-test", "after the DEL that could not write the datastore")
	if _, ok := c.recordOf("ro"); !ok {
		t.Fatal("the record is gone although the datastore was read-only")
	}
	unmount()
	c.mustExec(invocation{command: "DEL", containerID: "ro", netns: container, conf: conf})
	if _, ok := c.recordOf("ro"); ok {
		t.Error("the DEL after the fix left the record")
	}
}

// A symbolic link planted at the staging file makes ADD fail with a clear error and
// touches neither the link's target nor anything of the container.
func TestPlantedSymlinkFailsAdd(t *testing.T) {
	c := newCell(t, 1500)
	target := filepath.Join(c.dir, "precious")
	mustWrite(t, target, "precious")
	mustWrite(t, c.datastore(), "{}")
	if err := os.Symlink(target, c.datastore()+".tmp"); err != nil {
		t.Fatal(err)
	}
	container := newNS(t)
	_, err := c.exec(invocation{command: "ADD", containerID: "link", netns: container,
		conf: c.conf("1.0.0", c.bridgeDelegate(), map[string]any{"metadata": metadataFor("link")})})
	if ce := expectCode(t, err, wrapper.ErrDatastore); !strings.Contains(ce.Details, "symbolic link") {
		t.Errorf("error %s does not name the symbolic link", ce)
	}
	if b, _ := os.ReadFile(target); string(b) != "precious" {
		t.Errorf("the link's target now holds %q", b)
	}
	if _, _, ok := containerLink(t, container); ok {
		t.Error("eth0 left in the container")
	}
	c.expectNothingLeft(t, "netman-test", "after the refused ADD")
}

// listenInCell serves handler on 127.0.0.1 in the cell's namespace, where the wrapper
// runs, and returns the address.
func listenInCell(t *testing.T, c *cell, handler http.Handler) string {
	var ln net.Listener
	if err := c.host.Do(func(ns.NetNS) (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// After ADD and DEL the wrapper asks the agent for a cycle; an agent that is away or
// never answers does not fail the command (a hang would outlast the test's deadline).
func TestNudgesTheAgent(t *testing.T) {
	c := newCell(t, 1500)
	var nudges atomic.Int32
	agent := listenInCell(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/force-policy-poll-cycle" {
			nudges.Add(1)
		}
	}))
	hang := make(chan struct{})
	hung := listenInCell(t, c, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-hang }))
	t.Cleanup(func() { close(hang) })
	away := listenInCell(t, c, http.NotFoundHandler())

	container := newNS(t)
	conf := c.conf("1.0.0", c.bridgeDelegate(), map[string]any{"metadata": metadataFor("n"), "policy_agent_force_poll_address": agent})
	c.mustExec(invocation{command: "ADD", containerID: "n", netns: container, conf: conf})
	if n := nudges.Load(); n != 1 {
		t.Errorf("%d nudges after ADD, want 1", n)
	}
	c.mustExec(invocation{command: "DEL", containerID: "n", netns: container, conf: conf})
	if n := nudges.Load(); n != 2 {
		t.Errorf("%d nudges after ADD and DEL, want 2", n)
	}

	for i, addr := range []string{hung, away, "127.0.0.1:1"} {
		id := fmt.Sprintf("away-%d", i)
		conf := c.conf("1.0.0", c.bridgeDelegate(), map[string]any{"metadata": metadataFor(id), "policy_agent_force_poll_address": addr})
		start := time.Now()
		c.mustExec(invocation{command: "ADD", containerID: id, netns: container, conf: conf})
		t.Logf("ADD with the agent at %s took %v", addr, time.Since(start).Round(time.Millisecond))
		c.mustExec(invocation{command: "DEL", containerID: id, netns: container, conf: conf})
	}
	c.expectNothingLeft(t, "netman-test", "after the ADDs and DELs")
}
