package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"netman/internal/testsupport/testenv"
)

// allVersions are the CNI versions a runtime may send.
var allVersions = []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// buildWrapper builds the wrapper the way the BOSH package does (scripts/bosh-go-build:
// static, CGO_ENABLED=0, -trimpath, stripped), so the tests and the benchmark run the
// binary a cell runs. A cgo build would also pay the dynamic loader on every exec.
var buildWrapper = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "wrapper-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "wrapper")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "netman/cmd/wrapper")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v: %s", err, out)
	}
	return bin, nil
})

// cell is a throwaway network namespace standing in for a Diego cell, with an underlay
// interface of a chosen MTU carrying the default route, and a directory for the
// datastore and the plugins' state.
type cell struct {
	t       testing.TB
	host    ns.NetNS
	wrapper string
	cniPath string
	dir     string
}

func newCell(t testing.TB, underlayMTU int) *cell {
	t.Helper()
	testenv.RequireRoot(t)
	cniPath := testenv.CNIPath(t, "bridge", "host-local", "loopback", "flannel")
	bin, err := buildWrapper()
	if err != nil {
		t.Fatal(err)
	}
	host := newNS(t)
	err = host.Do(func(ns.NetNS) error {
		// A veth pair with both ends up (the dummy driver may be missing here).
		link := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "underlay0", MTU: underlayMTU}, PeerName: "underlay0p"}
		if err := netlink.LinkAdd(link); err != nil {
			return err
		}
		for _, name := range []string{"underlay0", "underlay0p", "lo"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		addr, _ := netlink.ParseAddr("10.10.0.5/24")
		if err := netlink.AddrAdd(link, addr); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP("10.10.0.1")})
	})
	if err != nil {
		t.Fatalf("setting up the cell namespace: %v", err)
	}
	return &cell{t: t, host: host, wrapper: bin, cniPath: cniPath, dir: t.TempDir()}
}

func newNS(t testing.TB) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Close()
		_ = testutils.UnmountNS(n)
	})
	return n
}

func (c *cell) datastore() string { return filepath.Join(c.dir, "datastore", "store.json") }
func (c *cell) ipamDir() string   { return filepath.Join(c.dir, "ipam") }

// bridgeDelegate is the local-only setup: bridge with host-local IPAM.
func (c *cell) bridgeDelegate() map[string]any {
	return map[string]any{
		"type": "bridge", "bridge": "cni-test0", "isGateway": true, "ipMasq": false,
		"ipam": map[string]any{"type": "host-local", "subnet": "10.255.0.0/16", "dataDir": c.ipamDir()},
	}
}

// flannelDelegate is the spec's flannel setup with a written subnet.env whose
// FLANNEL_MTU (1300) differs from what the wrapper computes, so the test sees whose
// MTU the container got.
func (c *cell) flannelDelegate() map[string]any {
	env := filepath.Join(c.dir, "subnet.env")
	content := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1300\nFLANNEL_IPMASQ=false\n"
	if err := os.WriteFile(env, []byte(content), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return map[string]any{
		"name": "cni-flannel", "type": "flannel", "subnetFile": env, "dataDir": filepath.Join(c.dir, "flannel"),
		"ipam":     map[string]any{"dataDir": c.ipamDir()},
		"delegate": map[string]any{"bridge": "cni-flannel0", "isDefaultGateway": true, "ipMasq": false},
	}
}

func metadataFor(id string) map[string]any {
	return map[string]any{"app_id": "app-" + id, "space_id": "space-1", "org_id": "org-1", "policy_group_id": "app-" + id, "extra": map[string]any{"n": 7}}
}

// conf renders a wrapper network config with the runtime's metadata.
func (c *cell) conf(version string, delegate map[string]any, extra map[string]any) []byte {
	m := map[string]any{
		"name": "netman-test", "type": "wrapper", "cniVersion": version,
		"datastore": c.datastore(), "delegate": delegate,
	}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

// invocation is one run of a plugin binary.
type invocation struct {
	command, containerID, ifName string
	netns                        ns.NetNS
	conf                         []byte
	plugin                       string // path; the wrapper when empty
}

// exec runs the plugin in the cell's namespace as a runtime would and returns its
// stdout; a failure wraps the *types.Error the plugin printed on stdout.
func (c *cell) exec(inv invocation) ([]byte, error) {
	r, err := c.start(inv)
	if err != nil {
		return nil, err
	}
	return r.wait()
}

// running is a started plugin process.
type running struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	command        string
}

// start starts the plugin in the cell's namespace: the child inherits the namespace of
// the thread that forks it.
func (c *cell) start(inv invocation) (*running, error) {
	plugin := inv.plugin
	if plugin == "" {
		plugin = c.wrapper
	}
	ifName := inv.ifName
	if ifName == "" {
		ifName = "eth0"
	}
	netnsPath := ""
	if inv.netns != nil {
		netnsPath = inv.netns.Path()
	}
	cmd := exec.Command(plugin)
	cmd.Env = []string{
		"CNI_COMMAND=" + inv.command, "CNI_CONTAINERID=" + inv.containerID, "CNI_NETNS=" + netnsPath,
		"CNI_IFNAME=" + ifName, "CNI_PATH=" + c.cniPath, "PATH=" + os.Getenv("PATH"),
	}
	cmd.Stdin = bytes.NewReader(inv.conf)
	r := &running{cmd: cmd, command: inv.command}
	cmd.Stdout, cmd.Stderr = &r.stdout, &r.stderr
	if err := c.host.Do(func(ns.NetNS) error { return cmd.Start() }); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *running) wait() ([]byte, error) {
	err := r.cmd.Wait()
	if err == nil {
		return r.stdout.Bytes(), nil
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return nil, err
	}
	e := &types.Error{}
	if jerr := json.Unmarshal(r.stdout.Bytes(), e); jerr != nil {
		return nil, fmt.Errorf("%s exited %v with stdout %q (not CNI error JSON: %v), stderr %q", r.command, err, r.stdout.String(), jerr, r.stderr.String())
	}
	return nil, fmt.Errorf("%s: CNI error code %d: %w; stderr %q", r.command, e.Code, e, r.stderr.String())
}

func (c *cell) mustExec(inv invocation) []byte {
	c.t.Helper()
	out, err := c.exec(inv)
	if err != nil {
		c.t.Fatalf("%s %s: %v", inv.command, inv.containerID, err)
	}
	return out
}

// expectCode fails unless err is a CNI error with the code.
func expectCode(t testing.TB, err error, code uint) *types.Error {
	t.Helper()
	var ce *types.Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want CNI error code %d", err, code)
	}
	if ce.Code != code || ce.Msg == "" {
		t.Fatalf("got %s, want code %d with a message", err, code)
	}
	return ce
}

// parseResult decodes a printed result of the given version and checks its cniVersion.
func parseResult(t testing.TB, version string, out []byte) *current.Result {
	t.Helper()
	var head struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(out, &head); err != nil {
		t.Fatalf("result %q: %v", out, err)
	}
	if head.CNIVersion != version {
		t.Fatalf("result is version %q, asked for %q: %s", head.CNIVersion, version, out)
	}
	r, err := create.Create(version, out)
	if err != nil {
		t.Fatalf("result %s: %v", out, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) == 0 {
		t.Fatalf("result without IPs: %s", out)
	}
	return res
}

// containerLink returns eth0's MTU and IPv4 addresses in the container, or ok=false
// when it has no eth0.
func containerLink(t testing.TB, netns ns.NetNS) (mtu int, addrs []string, ok bool) {
	t.Helper()
	err := netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				return nil
			}
			return err
		}
		ok = true
		mtu = l.Attrs().MTU
		as, err := netlink.AddrList(l, netlink.FAMILY_V4)
		for _, a := range as {
			addrs = append(addrs, a.IP.String())
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return mtu, addrs, ok
}

// hostVeths counts the veths on the cell (the host ends of container interfaces).
func (c *cell) hostVeths() int {
	n := 0
	err := c.host.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		for _, l := range links {
			if l.Type() == "veth" && !strings.HasPrefix(l.Attrs().Name, "underlay0") {
				n++
			}
		}
		return err
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return n
}

// reservedIPs lists the addresses host-local holds for the network.
func (c *cell) reservedIPs(network string) []string {
	entries, err := os.ReadDir(filepath.Join(c.ipamDir(), network))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		c.t.Fatal(err)
	}
	var ips []string
	for _, e := range entries {
		if net.ParseIP(e.Name()) != nil {
			ips = append(ips, e.Name())
		}
	}
	return ips
}

// expectNothingLeft fails the test when host-local still holds an address of network
// or a container's veth is still on the cell; when says after what.
func (c *cell) expectNothingLeft(t testing.TB, network, when string) {
	t.Helper()
	if ips := c.reservedIPs(network); len(ips) != 0 {
		t.Errorf("%s: host-local still holds %v", when, ips)
	}
	if !eventually(func() bool { return c.hostVeths() == 0 }) {
		t.Errorf("%s: %d host veths left", when, c.hostVeths())
	}
}

// eventually retries f for a short while (the kernel deletes a veth's peer
// asynchronously).
func eventually(f func() bool) bool {
	for range 50 {
		if f() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return f()
}
