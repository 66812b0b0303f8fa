package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	"netman/internal/testsupport/testenv"
	"netman/lib/datastore"
	"netman/wrapper"
)

// recordOf reads the container's datastore record the way an agent does.
func (c *cell) recordOf(id string) (datastore.Container, bool) {
	c.t.Helper()
	records, err := datastore.Read(c.datastore())
	if err != nil {
		c.t.Fatalf("reading datastore: %v", err)
	}
	r, ok := records[id]
	return r, ok
}

func sameJSON(t testing.TB, got, want any) bool {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	var gv, wv any
	_ = json.Unmarshal(g, &gv)
	_ = json.Unmarshal(w, &wv)
	return reflect.DeepEqual(gv, wv)
}

// addAndVerify runs ADD and checks what the user sees: the result in the asked-for
// version, eth0 with that IP and the expected MTU, and the record with the metadata.
func (c *cell) addAndVerify(version, id string, container ns.NetNS, delegate map[string]any, wantMTU int) (string, []byte) {
	t := c.t
	t.Helper()
	out := c.mustExec(invocation{command: "ADD", containerID: id, netns: container,
		conf: c.conf(version, delegate, map[string]any{"metadata": metadataFor(id)})})
	res := parseResult(t, version, out)
	ip := res.IPs[0].Address.IP.String()

	mtu, addrs, ok := containerLink(t, container)
	if !ok {
		t.Fatalf("%s: container has no eth0", id)
	}
	if mtu != wantMTU {
		t.Errorf("%s (cni %s): eth0 mtu %d, want %d", id, version, mtu, wantMTU)
	}
	if !slices.Contains(addrs, ip) {
		t.Errorf("%s: eth0 has %v, result says %s", id, addrs, ip)
	}
	rec, ok := c.recordOf(id)
	if !ok {
		t.Fatalf("%s: no datastore record", id)
	}
	if rec.Handle != id || rec.IP != ip || !sameJSON(t, rec.Metadata, metadataFor(id)) {
		t.Errorf("%s: record %+v, want ip %s and metadata %v", id, rec, ip, metadataFor(id))
	}
	return ip, out
}

// delAndVerify runs DEL twice (the second must succeed too) and checks that nothing of
// the container is left: record, eth0, host veth, IP reservation.
func (c *cell) delAndVerify(version, id string, container ns.NetNS, delegate map[string]any, network string) {
	t := c.t
	t.Helper()
	for range 2 {
		c.mustExec(invocation{command: "DEL", containerID: id, netns: container, conf: c.conf(version, delegate, nil)})
	}
	if _, ok := c.recordOf(id); ok {
		t.Errorf("%s: record left after DEL", id)
	}
	if _, _, ok := containerLink(t, container); ok {
		t.Errorf("%s: eth0 left after DEL", id)
	}
	c.expectNothingLeft(t, network, id+" after DEL")
}

func TestBridgeEveryVersionAndMTU(t *testing.T) {
	for _, hostMTU := range []int{1500, 9000, 1460} {
		t.Run(fmt.Sprintf("host mtu %d", hostMTU), func(t *testing.T) {
			c := newCell(t, hostMTU)
			for _, version := range allVersions {
				id := fmt.Sprintf("bridge-%d-%s", hostMTU, version)
				container := newNS(t)
				_, out := c.addAndVerify(version, id, container, c.bridgeDelegate(), hostMTU)
				if testutils.SpecVersionHasCHECK(version) {
					var prev any
					_ = json.Unmarshal(out, &prev)
					c.mustExec(invocation{command: "CHECK", containerID: id, netns: container,
						conf: c.conf(version, c.bridgeDelegate(), map[string]any{"prevResult": prev})})
				}
				c.delAndVerify(version, id, container, c.bridgeDelegate(), "netman-test")
			}
		})
	}
}

func TestFlannel(t *testing.T) {
	for i, version := range []string{"0.2.0", "0.3.0", "0.3.1", "0.4.0"} {
		hostMTU := []int{1500, 9000, 1460, 1500}[i]
		t.Run(version, func(t *testing.T) {
			c := newCell(t, hostMTU)
			id := "flannel-" + version
			container := newNS(t)
			// VXLAN overhead: 50 bytes less than the underlay, not subnet.env's 1300.
			ip, _ := c.addAndVerify(version, id, container, c.flannelDelegate(), hostMTU-50)
			_, subnet, _ := net.ParseCIDR("10.244.3.0/24")
			if !subnet.Contains(net.ParseIP(ip)) {
				t.Errorf("flannel gave %s, outside its subnet %s", ip, subnet)
			}
			c.delAndVerify(version, id, container, c.flannelDelegate(), "netman-test")
			if entries, _ := os.ReadDir(filepath.Join(c.dir, "flannel")); len(entries) != 0 {
				t.Errorf("flannel kept state for %d containers after DEL", len(entries))
			}
		})
	}
}

// flannel v0.9.1 speaks CNI 0.4.0 at most. A 1.x runtime still gets its container: the
// wrapper calls flannel in 0.4.0 and converts the result to the runtime's version.
func TestFlannelWithANewerRuntime(t *testing.T) {
	for _, version := range []string{"1.0.0", "1.1.0"} {
		t.Run(version, func(t *testing.T) {
			c := newCell(t, 1500)
			id := "flannel-" + version
			container := newNS(t)
			_, out := c.addAndVerify(version, id, container, c.flannelDelegate(), 1450)
			var res struct {
				CNIVersion string `json:"cniVersion"`
			}
			if err := json.Unmarshal(out, &res); err != nil || res.CNIVersion != version {
				t.Errorf("result in version %q (%v), want %s: %s", res.CNIVersion, err, version, out)
			}
			var prev map[string]any
			_ = json.Unmarshal(out, &prev)
			c.mustExec(invocation{command: "CHECK", containerID: id, netns: container,
				conf: c.conf(version, c.flannelDelegate(), map[string]any{"prevResult": prev})})
			c.delAndVerify(version, id, container, c.flannelDelegate(), "netman-test")
		})
	}
}

func TestContainersPingEachOther(t *testing.T) {
	testenv.RequireCommand(t, "ping")
	c := newCell(t, 1500)
	a, b := newNS(t), newNS(t)
	ipA, _ := c.addAndVerify("1.1.0", "ping-a", a, c.bridgeDelegate(), 1500)
	ipB, _ := c.addAndVerify("1.1.0", "ping-b", b, c.bridgeDelegate(), 1500)
	for _, p := range []struct {
		from     ns.NetNS
		src, dst string
	}{{a, ipA, ipB}, {b, ipB, ipA}} {
		err := p.from.Do(func(ns.NetNS) error { return testutils.Ping(p.src, p.dst, 5) })
		if err != nil {
			t.Errorf("ping %s -> %s: %v", p.src, p.dst, err)
		}
	}
	c.mustExec(invocation{command: "DEL", containerID: "ping-a", netns: a, conf: c.conf("1.1.0", c.bridgeDelegate(), nil)})
	c.mustExec(invocation{command: "DEL", containerID: "ping-b", netns: b, conf: c.conf("1.1.0", c.bridgeDelegate(), nil)})
}

// A runtime may remove a container's network namespace before DEL, or repeat DEL
// without one after a restart: DEL still exits 0, drops the record and releases the IP.
func TestDelAfterTheNamespaceIsGone(t *testing.T) {
	c := newCell(t, 1500)
	container := newNS(t)
	c.addAndVerify("1.0.0", "ns-gone", container, c.bridgeDelegate(), 1500)
	if err := container.Close(); err != nil {
		t.Fatal(err)
	}
	if err := testutils.UnmountNS(container); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(container.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("namespace %s still there: %v", container.Path(), err)
	}
	conf := c.conf("1.0.0", c.bridgeDelegate(), nil)
	// The namespace's path, now gone, then no namespace at all.
	c.mustExec(invocation{command: "DEL", containerID: "ns-gone", netns: container, conf: conf})
	c.mustExec(invocation{command: "DEL", containerID: "ns-gone", conf: conf})
	if _, ok := c.recordOf("ns-gone"); ok {
		t.Error("record left after DEL")
	}
	c.expectNothingLeft(t, "netman-test", "after DEL")
}

// When the record cannot be written, ADD fails and the delegate's work is undone: no
// eth0, no host veth, no reserved IP.
func TestAddRollsBackWhenRecordingFails(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, path string)
		code   uint
	}{
		{"corrupt datastore", func(t *testing.T, path string) {
			mustWrite(t, path, `{"half-written":{"handle":"half-wr`)
		}, wrapper.ErrDatastoreCorrupt},
		{"datastore under a regular file", func(t *testing.T, path string) {
			mustWrite(t, filepath.Dir(path), "not a directory")
		}, wrapper.ErrDatastore},
		{"read-only datastore directory", func(t *testing.T, path string) {
			dir := filepath.Dir(path)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			// Root ignores permission bits; a read-only mount stops it.
			if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_RDONLY, "size=1m"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
		}, wrapper.ErrDatastore},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCell(t, 1500)
			tc.break_(t, c.datastore())
			before, _ := os.ReadFile(c.datastore())
			container := newNS(t)
			_, err := c.exec(invocation{command: "ADD", containerID: "doomed", netns: container,
				conf: c.conf("1.0.0", c.bridgeDelegate(), map[string]any{"metadata": metadataFor("doomed")})})
			expectCode(t, err, tc.code)
			if _, _, ok := containerLink(t, container); ok {
				t.Error("eth0 left in the container")
			}
			c.expectNothingLeft(t, "netman-test", "after the failed ADD")
			if after, _ := os.ReadFile(c.datastore()); string(after) != string(before) {
				t.Errorf("datastore changed from %q to %q", before, after)
			}
		})
	}
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestErrorsAreCNIErrorJSON(t *testing.T) {
	c := newCell(t, 1500)
	bridge := c.bridgeDelegate()
	badIPAM := c.bridgeDelegate()
	badIPAM["ipam"] = map[string]any{"type": "host-local", "subnet": "not-a-subnet", "dataDir": c.ipamDir()}
	dirStore := filepath.Join(c.dir, "a-directory")
	if err := os.MkdirAll(dirStore, 0o755); err != nil {
		t.Fatal(err)
	}
	withStore := func(conf []byte, path string) []byte {
		var m map[string]any
		_ = json.Unmarshal(conf, &m)
		m["datastore"] = path
		b, _ := json.Marshal(m)
		return b
	}
	for _, tc := range []struct {
		name    string
		conf    []byte
		code    uint
		msgPart string
	}{
		{"bad json", []byte(`{"name":"x",`), 6, ""},
		{"missing datastore", []byte(`{"name":"x","type":"wrapper","cniVersion":"1.0.0","delegate":{"type":"bridge"}}`), 7, ""},
		{"missing delegate", []byte(`{"name":"x","type":"wrapper","cniVersion":"1.0.0","datastore":"/tmp/x"}`), 7, ""},
		{"unknown version", c.conf("9.9.9", bridge, nil), 1, ""},
		{"mtu too small", c.conf("1.0.0", bridge, map[string]any{"mtu": 500}), 7, ""},
		{"detected mtu too small", c.conf("1.0.0", bridge, map[string]any{"encapsulation_overhead": 1000}), wrapper.ErrMTU, ""},
		{"no such delegate", c.conf("1.0.0", map[string]any{"type": "no-such-plugin"}, nil), wrapper.ErrDelegate, "no-such-plugin"},
		{"delegate failure keeps its message", c.conf("1.0.0", badIPAM, nil), 0, "not-a-subnet"},
		{"unreadable datastore", withStore(c.conf("1.0.0", bridge, nil), dirStore), wrapper.ErrDatastore, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.exec(invocation{command: "ADD", containerID: "e1", netns: newNS(t), conf: tc.conf})
			var ce *types.Error
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want CNI error JSON", err)
			}
			if (tc.code != 0 && ce.Code != tc.code) || ce.Code == 0 || ce.Msg == "" {
				t.Fatalf("got %s, want code %d", err, tc.code)
			}
			if tc.msgPart != "" && !strings.Contains(ce.Msg+ce.Details, tc.msgPart) {
				t.Fatalf("got %s, want %q in it", err, tc.msgPart)
			}
		})
	}
	c.expectNothingLeft(t, "netman-test", "after the failed ADDs")

	// Missing CNI_CONTAINERID.
	_, err := c.exec(invocation{command: "ADD", netns: newNS(t), conf: c.conf("1.0.0", bridge, nil)})
	expectCode(t, err, 4)
}

func TestCheck(t *testing.T) {
	c := newCell(t, 1500)
	container := newNS(t)
	_, out := c.addAndVerify("1.0.0", "chk", container, c.bridgeDelegate(), 1500)
	var prev map[string]any
	_ = json.Unmarshal(out, &prev)

	_, err := c.exec(invocation{command: "CHECK", containerID: "not-added", netns: container,
		conf: c.conf("1.0.0", c.bridgeDelegate(), map[string]any{"prevResult": prev})})
	expectCode(t, err, wrapper.ErrNoRecord)

	moved := map[string]any{"cniVersion": "1.0.0", "ips": []any{map[string]any{"address": "10.255.99.99/16"}}}
	_, err = c.exec(invocation{command: "CHECK", containerID: "chk", netns: container,
		conf: c.conf("1.0.0", c.bridgeDelegate(), map[string]any{"prevResult": moved})})
	expectCode(t, err, wrapper.ErrNoRecord)

	c.mustExec(invocation{command: "CHECK", containerID: "chk", netns: container,
		conf: c.conf("1.0.0", c.bridgeDelegate(), map[string]any{"prevResult": prev})})

	// The spec requires prevResult for CHECK; without it there is nothing to check.
	_, err = c.exec(invocation{command: "CHECK", containerID: "chk", netns: container,
		conf: c.conf("1.0.0", c.bridgeDelegate(), nil)})
	if ce := expectCode(t, err, 7); !strings.Contains(ce.Msg, "prevResult") {
		t.Errorf("CHECK without prevResult: %s", ce)
	}
	c.delAndVerify("1.0.0", "chk", container, c.bridgeDelegate(), "netman-test")
}

// GC drops the records of containers the runtime no longer has and passes GC on to a
// delegate that speaks CNI 1.1 (host-local here, which then releases their IPs).
func TestGCAndStatus(t *testing.T) {
	c := newCell(t, 1500)
	hostLocal := map[string]any{"type": "host-local",
		"ipam": map[string]any{"type": "host-local", "subnet": "10.254.0.0/24", "dataDir": c.ipamDir()}}
	ips := map[string]string{}
	for _, id := range []string{"live", "gone"} {
		out := c.mustExec(invocation{command: "ADD", containerID: id, netns: newNS(t),
			conf: c.conf("1.1.0", hostLocal, map[string]any{"metadata": metadataFor(id)})})
		ips[id] = parseResult(t, "1.1.0", out).IPs[0].Address.IP.String()
	}
	valid := []map[string]string{{"containerID": "live", "ifname": "eth0"}}
	c.mustExec(invocation{command: "GC", conf: c.conf("1.1.0", hostLocal, map[string]any{"cni.dev/valid-attachments": valid})})
	if _, ok := c.recordOf("gone"); ok {
		t.Error("GC kept the record of a container the runtime no longer has")
	}
	if _, ok := c.recordOf("live"); !ok {
		t.Error("GC dropped a live container's record")
	}
	if got := c.reservedIPs("netman-test"); !reflect.DeepEqual(got, []string{ips["live"]}) {
		t.Errorf("after GC host-local holds %v, want only %s", got, ips["live"])
	}

	_, err := c.exec(invocation{command: "GC", conf: c.conf("1.1.0", hostLocal, nil)})
	expectCode(t, err, 7)

	c.mustExec(invocation{command: "STATUS", conf: c.conf("1.1.0", c.bridgeDelegate(), nil)})

	// flannel speaks up to 0.4.0: the wrapper collects its own records and does not
	// pass GC or STATUS on.
	stale := datastore.Container{Handle: "stale", IP: "10.244.3.9"}
	store, _ := datastore.New(c.datastore(), datastore.Options{})
	if _, err := store.Add(t.Context(), stale); err != nil {
		t.Fatal(err)
	}
	c.mustExec(invocation{command: "GC", conf: c.conf("1.1.0", c.flannelDelegate(), map[string]any{"cni.dev/valid-attachments": valid})})
	if _, ok := c.recordOf("stale"); ok {
		t.Error("GC with a flannel delegate kept a stale record")
	}
	c.mustExec(invocation{command: "STATUS", conf: c.conf("1.1.0", c.flannelDelegate(), nil)})

	// An unreadable version file fails every ADD's write as well.
	version := c.datastore() + datastore.VersionSuffix
	mustWrite(t, version, "x7")
	_, err = c.exec(invocation{command: "STATUS", conf: c.conf("1.1.0", c.bridgeDelegate(), nil)})
	expectCode(t, err, 50)
	mustWrite(t, version, "7\n")
	c.mustExec(invocation{command: "STATUS", conf: c.conf("1.1.0", c.bridgeDelegate(), nil)})

	mustWrite(t, c.datastore(), "{not json")
	_, err = c.exec(invocation{command: "STATUS", conf: c.conf("1.1.0", c.bridgeDelegate(), nil)})
	expectCode(t, err, 50)
	_, err = c.exec(invocation{command: "GC", conf: c.conf("1.1.0", hostLocal, map[string]any{"cni.dev/valid-attachments": valid})})
	expectCode(t, err, wrapper.ErrDatastoreCorrupt)
}

// garden-external-networker's network.properties stand in for metadata when the
// runtime sends none, and datastore_file_owner/group own every datastore file.
func TestNetworkPropertiesAndFileOwner(t *testing.T) {
	c := newCell(t, 1500)
	container := newNS(t)
	props := map[string]any{"app_id": "from-properties", "space_id": "s", "ports": "8080,9090"}
	extra := map[string]any{"network": map[string]any{"properties": props},
		"datastore_file_owner": "65534", "datastore_file_group": "65533"}
	c.mustExec(invocation{command: "ADD", containerID: "props", netns: container, conf: c.conf("1.1.0", c.bridgeDelegate(), extra)})
	rec, ok := c.recordOf("props")
	if !ok || !sameJSON(t, rec.Metadata, props) {
		t.Errorf("record %+v, want metadata %v", rec, props)
	}
	for _, p := range []string{c.datastore(), c.datastore() + "_version", c.datastore() + "_lock"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65533 {
			t.Errorf("%s owned by %d:%d, want 65534:65533", p, st.Uid, st.Gid)
		}
	}
	c.mustExec(invocation{command: "DEL", containerID: "props", netns: container, conf: c.conf("1.1.0", c.bridgeDelegate(), extra)})

	_, err := c.exec(invocation{command: "ADD", containerID: "props2", netns: newNS(t),
		conf: c.conf("1.1.0", c.bridgeDelegate(), map[string]any{"datastore_file_owner": "no-such-user-on-this-cell"})})
	expectCode(t, err, 7)
}
