package boshrelease

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"netman/internal/testsupport/testenv"
	"netman/lib/rules/rulestest"
)

// TestNetmanCNIJobOnACell puts the release's two halves of the CNI setup together the way
// a cell does: the netman-cni package (compiled by its packaging script) as cni_plugin_dir
// and the configuration the netman-cni job renders as the network, run through libcni as
// garden-external-networker runs them, with the CF metadata added. Everything happens in
// throwaway network namespaces: a "cell" with a 9000-byte underlay, and two containers.
func TestNetmanCNIJobOnACell(t *testing.T) {
	testenv.RequireRoot(t)
	if testing.Short() {
		t.Skip("compiles the netman-cni package (-short)")
	}
	pluginDir := filepath.Join(packageInstall(t, "netman-cni"), "bin")
	state := t.TempDir()
	datastore := filepath.Join(state, "container-metadata", "store.json")
	if err := os.MkdirAll(filepath.Dir(datastore), 0o755); err != nil {
		t.Fatal(err)
	}
	job := mustRender(t, "netman-cni", props(map[string]any{
		"delegate":             "bridge",
		"datastore":            datastore,
		"bridge.subnet":        "10.255.7.0/24",
		"bridge.ipam_data_dir": filepath.Join(state, "ipam"),
		"cni_version":          "1.0.0",
		"datastore_file_group": "0",
		"iptables_lock_file":   filepath.Join(state, "iptables.lock"),
	}), nil)
	conf, err := os.ReadFile(filepath.Join(job, "config", "cni", "30-cni-wrapper-plugin.conf"))
	if err != nil {
		t.Fatal(err)
	}

	cell := rulestest.NewNS(t)
	err = cell.Do(func(ns.NetNS) error {
		// A veth pair stands in for the cell's NIC (dummy links are not available everywhere).
		underlay := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "underlay0", MTU: 9000}, PeerName: "underlay0p"}
		if err := netlink.LinkAdd(underlay); err != nil {
			return err
		}
		for _, name := range []string{"underlay0", "underlay0p"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		addr, _ := netlink.ParseAddr("10.10.0.2/24")
		if err := netlink.AddrAdd(underlay, addr); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: underlay.Attrs().Index, Gw: net.ParseIP("10.10.0.1")})
	})
	if err != nil {
		t.Fatalf("setting up the cell's underlay: %v", err)
	}

	cni := libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, filepath.Join(state, "cni-cache"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	type container struct {
		id, app string
		netns   ns.NetNS
		ip      string
	}
	containers := []*container{{id: "container-a", app: "app-a"}, {id: "container-b", app: "app-b"}}
	for _, c := range containers {
		c.netns = rulestest.NewNS(t)
		network := withMetadata(t, conf, c.app)
		rt := &libcni.RuntimeConf{ContainerID: c.id, NetNS: c.netns.Path(), IfName: "eth0"}
		var result *current.Result
		err := cell.Do(func(ns.NetNS) error {
			r, err := cni.AddNetwork(ctx, network, rt)
			if err != nil {
				return err
			}
			result, err = current.NewResultFromResult(r)
			return err
		})
		if err != nil {
			t.Fatalf("ADD %s: %v", c.id, err)
		}
		if len(result.IPs) == 0 {
			t.Fatalf("ADD %s: no IP in %+v", c.id, result)
		}
		c.ip = result.IPs[0].Address.IP.String()
		t.Cleanup(func() {
			_ = cell.Do(func(ns.NetNS) error { return cni.DelNetwork(context.Background(), network, rt) })
		})

		var mtu int
		_ = c.netns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName("eth0")
			if err == nil {
				mtu = l.Attrs().MTU
			}
			return err
		})
		if mtu != 9000 {
			t.Errorf("%s: eth0 MTU %d, want the underlay's 9000 (bridge adds no overhead)", c.id, mtu)
		}
	}

	records := readDatastore(t, datastore)
	for _, c := range containers {
		r, ok := records[c.id]
		if !ok {
			t.Fatalf("no datastore record for %s: %v", c.id, records)
		}
		if r.IP != c.ip || r.Metadata["policy_group_id"] != c.app {
			t.Errorf("record of %s: %+v (want ip %s, policy_group_id %s)", c.id, r, c.ip, c.app)
		}
	}

	// Same cell, same bridge: the local-only promise.
	err = containers[0].netns.Do(func(ns.NetNS) error { return testutils.Ping(containers[0].ip, containers[1].ip, 5) })
	if err != nil {
		t.Errorf("container a cannot reach container b: %v", err)
	}

	for _, c := range containers {
		network := withMetadata(t, conf, c.app)
		rt := &libcni.RuntimeConf{ContainerID: c.id, NetNS: c.netns.Path(), IfName: "eth0"}
		if err := cell.Do(func(ns.NetNS) error { return cni.DelNetwork(ctx, network, rt) }); err != nil {
			t.Errorf("DEL %s: %v", c.id, err)
		}
	}
	if left := readDatastore(t, datastore); len(left) != 0 {
		t.Errorf("records left after DEL: %v", left)
	}
}

// withMetadata adds what garden-external-networker adds to the static configuration.
func withMetadata(t testing.TB, conf []byte, app string) *libcni.PluginConfig {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		t.Fatal(err)
	}
	m["metadata"] = map[string]any{
		"app_id": app, "policy_group_id": app,
		"space_id": "space-1", "org_id": "org-1",
	}
	b, _ := json.Marshal(m)
	network, err := libcni.ConfFromBytes(b)
	if err != nil {
		t.Fatalf("libcni refuses the rendered configuration: %v", err)
	}
	return network
}

type datastoreRecord struct {
	Handle   string         `json:"handle"`
	IP       string         `json:"ip"`
	Metadata map[string]any `json:"metadata"`
}

func readDatastore(t testing.TB, path string) map[string]datastoreRecord {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var records map[string]datastoreRecord
	if err := json.Unmarshal(data, &records); err != nil {
		t.Fatalf("datastore %s: %v\n%s", path, err, data)
	}
	return records
}
