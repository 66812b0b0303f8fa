package foundation

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"netman/lib/datastore"
)

// Cell is one simulated Diego cell.
type Cell struct {
	Index      int
	NS         string
	UnderlayIP string
	Dir        string
	Datastore  string
	SubnetFile string

	f        *Foundation
	mu       sync.Mutex
	flanneld *process
	agent    *process
}

func (f *Foundation) newCell(ctx context.Context, i int) (*Cell, error) {
	c := &Cell{
		Index: i, NS: fmt.Sprintf("%s-c%d", f.Prefix, i), UnderlayIP: fmt.Sprintf("10.250.0.%d", 10+i),
		Dir: filepath.Join(f.Dir, fmt.Sprintf("c%d", i)), f: f,
	}
	c.Datastore = filepath.Join(c.Dir, "store.json")
	c.SubnetFile = filepath.Join(c.Dir, "subnet.env")
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, err
	}
	if err := f.addNS(ctx, c.NS); err != nil {
		return nil, err
	}
	if err := f.attach(ctx, c.NS, fmt.Sprintf("c%d", i), c.UnderlayIP); err != nil {
		return nil, err
	}
	// A cell routes between its containers and the overlay. The REJECTs the tests
	// provoke must all be answered: ICMP errors are not rate limited here.
	if _, err := inNS(ctx, c.NS, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0"); err != nil {
		return nil, err
	}
	// The agent finds every policy server replica by the name in their certificate.
	hosts := "127.0.0.1 localhost\n"
	for _, s := range f.Servers {
		hosts += s.IP + " " + ServerName + "\n"
	}
	if err := os.MkdirAll(filepath.Join("/etc/netns", c.NS), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join("/etc/netns", c.NS, "hosts"), []byte(hosts), 0o644); err != nil {
		return nil, err
	}
	// flanneld v0.26 gives up when another cell takes the subnet it picked in the same
	// instant ("subnet already exists"); real cells start apart, these one at a time.
	f.leasing.Lock()
	defer f.leasing.Unlock()
	if err := c.StartFlanneld(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// StartFlanneld runs flanneld on the cell and waits until it wrote the subnet file.
func (c *Cell) StartFlanneld(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flanneld != nil && !c.flanneld.exited() {
		return errors.New("flanneld is running")
	}
	_ = os.Remove(c.SubnetFile)
	p, err := startIn(c.NS, "flanneld", c.f.log(c.NS+"-flanneld"), filepath.Join(c.f.opts.OverlayBin, "flanneld"),
		"--etcd-endpoints", etcdURL, "--etcd-prefix", c.f.EtcdPrefix(),
		"--iface", "eth0", "--public-ip", c.UnderlayIP, "--subnet-file", c.SubnetFile, "--ip-masq=false")
	if err != nil {
		return err
	}
	c.flanneld = p
	c.f.onClose(p.stop)
	return p.waitReady(ctx, time.Minute, func(ctx context.Context) error {
		if _, err := c.Lease(); err != nil {
			return err
		}
		_, err := inNS(ctx, c.NS, "ip", "link", "show", OverlayInterface, "up")
		return err
	})
}

// StopFlanneld stops flanneld (SIGTERM); its device, routes and lease stay, as on a
// cell whose flanneld restarts.
func (c *Cell) StopFlanneld() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flanneld == nil {
		return nil
	}
	return c.flanneld.stop()
}

// Lease is what flanneld wrote to the subnet file the flannel CNI plugin reads.
type Lease struct {
	Network, Subnet string
	MTU             int
}

// Lease reads the cell's subnet file.
func (c *Cell) Lease() (Lease, error) {
	b, err := os.ReadFile(c.SubnetFile)
	if err != nil {
		return Lease{}, err
	}
	var l Lease
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "FLANNEL_NETWORK":
			l.Network = v
		case "FLANNEL_SUBNET":
			l.Subnet = v
		case "FLANNEL_MTU":
			l.MTU, _ = strconv.Atoi(v)
		}
	}
	if l.Subnet == "" || l.MTU == 0 {
		return Lease{}, fmt.Errorf("subnet file %s is incomplete", c.SubnetFile)
	}
	return l, nil
}

// StartAgent runs the policy agent on the cell and waits until its first cycle succeeded.
func (c *Cell) StartAgent(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agent != nil && !c.agent.exited() {
		return errors.New("the agent is running")
	}
	cfg := filepath.Join(c.Dir, "policy-agent.json")
	b, _ := json.MarshalIndent(map[string]any{
		"policy_server_url":     fmt.Sprintf("https://%s:%d", ServerName, InternalPort),
		"ca_cert_file":          filepath.Join(c.f.certs, "ca.crt"),
		"client_cert_file":      filepath.Join(c.f.certs, "client.crt"),
		"client_key_file":       filepath.Join(c.f.certs, "client.key"),
		"datastore":             c.Datastore,
		"poll_interval_seconds": c.f.opts.PollIntervalSeconds,
		"iptables_lock_file":    filepath.Join(c.Dir, "iptables.lock"),
		"overlay_interface":     OverlayInterface,
		"vxlan_gbp":             true,
	}, "", "  ")
	if err := os.WriteFile(cfg, b, 0o600); err != nil {
		return err
	}
	p, err := startIn(c.NS, "policy-agent", c.f.log(c.NS+"-agent"), filepath.Join(c.f.opts.Bin, "policy-agent"), "-config-file", cfg)
	if err != nil {
		return err
	}
	c.agent = p
	c.f.onClose(p.stop)
	return p.waitReady(ctx, time.Minute, func(ctx context.Context) error {
		out, err := inNS(ctx, c.NS, "iptables", "-w", "-S", "FORWARD")
		if err != nil {
			return err
		}
		if !strings.Contains(string(out), "-j netman-forward") {
			return errors.New("no netman-forward jump yet")
		}
		return nil
	})
}

// StopAgent stops the cell's agent; its rules stay.
func (c *Cell) StopAgent() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agent == nil {
		return nil
	}
	return c.agent.stop()
}

// AgentLog is the end of the agent's log.
func (c *Cell) AgentLog() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agent == nil {
		return ""
	}
	return c.agent.Tail(40)
}

// Exec runs a command in the cell's namespace.
func (c *Cell) Exec(ctx context.Context, argv ...string) ([]byte, error) {
	return inNS(ctx, c.NS, argv...)
}

// Container is a container created on a cell through the wrapper.
type Container struct {
	Name   string
	NS     string
	IP     string
	MTU    int
	App    string
	Cell   *Cell
	conf   []byte
	delete sync.Once
}

// AddContainer creates a container of app on the cell the way garden-external-networker
// does: a namespace, then the wrapper's ADD with the flannel delegate and the app's
// metadata. The wrapper computes the MTU from the underlay; flannel's bridge gives the
// address from the cell's lease.
func (c *Cell) AddContainer(ctx context.Context, name, app string) (*Container, error) {
	ct := &Container{Name: name, NS: c.NS + "-" + name, App: app, Cell: c}
	if err := c.f.addNS(ctx, ct.NS); err != nil {
		return nil, err
	}
	ct.conf, _ = json.Marshal(map[string]any{
		"cniVersion": "0.4.0", "name": "cni-wrapper", "type": "wrapper", "datastore": c.Datastore,
		"delegate": map[string]any{
			"name": "cni-flannel", "type": "flannel", "subnetFile": c.SubnetFile,
			"dataDir":  filepath.Join(c.Dir, "flannel"),
			"ipam":     map[string]any{"dataDir": filepath.Join(c.Dir, "ipam")},
			"delegate": map[string]any{"bridge": "cni-flannel0", "isDefaultGateway": true, "ipMasq": false},
		},
		"metadata": map[string]any{"app_id": app, "policy_group_id": app, "space_id": "space-1", "org_id": "org-1"},
	})
	if _, err := ct.cni(ctx, "ADD"); err != nil {
		return nil, err
	}
	c.f.onClose(func() error { return ct.Delete(context.Background()) })
	records, err := datastore.Read(c.Datastore)
	if err != nil {
		return nil, err
	}
	rec, ok := records[name]
	if !ok {
		return nil, fmt.Errorf("no datastore record for %s after ADD", name)
	}
	ct.IP, _, _ = strings.Cut(rec.IP, "/")
	out, err := inNS(ctx, ct.NS, "cat", "/sys/class/net/eth0/mtu")
	if err != nil {
		return nil, err
	}
	ct.MTU, _ = strconv.Atoi(strings.TrimSpace(string(out)))
	return ct, nil
}

func (ct *Container) cni(ctx context.Context, command string) ([]byte, error) {
	c := ct.Cell
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", c.NS, filepath.Join(c.f.opts.Bin, "wrapper"))
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + ct.Name, "CNI_NETNS=" + nsPath(ct.NS),
		"CNI_IFNAME=eth0", "CNI_PATH=" + c.f.opts.CNIPath, "PATH=" + os.Getenv("PATH")}
	cmd.Stdin = bytes.NewReader(ct.conf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("wrapper %s %s on %s: %w: %s", command, ct.Name, c.NS, err, out)
	}
	return out, nil
}

// Delete runs the wrapper's DEL (once) and removes the container's namespace.
func (ct *Container) Delete(ctx context.Context) error {
	var err error
	ct.delete.Do(func() {
		_, err = ct.cni(ctx, "DEL")
		err = errors.Join(err, removeNS(ct.NS))
	})
	return err
}

// Exec runs a command in the container.
func (ct *Container) Exec(ctx context.Context, argv ...string) ([]byte, error) {
	return inNS(ctx, ct.NS, argv...)
}
