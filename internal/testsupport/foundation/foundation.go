// Package foundation builds a simulated Cloud Foundry foundation on one machine, from the
// real parts, for the cross-cell tests, the benchmarks and the demo:
//
//	underlay      a network namespace with bridge br0 (MTU 1500, 10.250.0.0/24) and etcd
//	              on 10.250.0.1:2379, flannel's store
//	ps1..psN      one namespace per policy server replica (10.250.0.2, .3), all on one
//	              Postgres database, the internal API on :4003 (mutual TLS)
//	c1..cN        cells: a namespace each with eth0 on the underlay (10.250.0.11, .12 ...),
//	              running flanneld (vxlan backend, GBP on) and the policy agent, which
//	              finds the policy server by name (/etc/netns hosts: every replica)
//
// Containers are created through the real wrapper with the flannel delegate, as
// garden-external-networker would, so their MTU, address and datastore record come from
// the same code a Diego cell runs. Only two things are not what a foundation has: the
// policy servers reach Postgres and the host reaches the external API through byte
// forwarders between namespaces (see forwarder), because Postgres runs on the host.
//
// Every name the foundation creates (namespaces, /etc/netns entries, the database, the
// etcd prefix, its directory) starts with its Prefix. Close removes all of it; New first
// removes what a foundation killed too hard to clean up left behind (see sweep).
package foundation

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"netman/internal/testsupport/pgtest"
)

// NamePrefix starts every name a foundation creates.
const NamePrefix = "nmf"

// Addresses of the simulated network.
const (
	UnderlayCIDR  = "10.250.0.0/24"
	EtcdIP        = "10.250.0.1"
	OverlayCIDR   = "10.255.0.0/16"
	OverlaySubnet = 24
	VNI           = 1
	// OverlayInterface is the device flanneld's vxlan backend creates for VNI.
	OverlayInterface = "flannel.1"
	UnderlayMTU      = 1500
	// ServerName is the policy server's name in its certificate and in the cells' hosts.
	ServerName = "policy-server.service.cf.internal"
)

// Options say what to build.
type Options struct {
	Cells    int // at least 1
	Replicas int // policy server replicas (default 1)
	// NoAgent lists cells (1-based) that run no policy agent: a cell without netman.
	NoAgent []int
	// DatabaseURL is a Postgres URL whose user may create databases (DATABASE_URL).
	DatabaseURL string
	Root        string // the netman checkout (scripts/generate-certs)
	Bin         string // policy-server, policy-agent, wrapper, netman
	CNIPath     string // the CNI plugins (flannel, bridge, host-local, loopback)
	OverlayBin  string // flanneld and etcd
	// PollIntervalSeconds of the agents (default 1).
	PollIntervalSeconds int
	// Progress, when set, gets one line per step.
	Progress io.Writer
}

// Foundation is a running simulated foundation.
type Foundation struct {
	Prefix   string
	Dir      string
	Underlay string // the underlay's namespace
	Cells    []*Cell
	Servers  []*PolicyServer
	// Token is a network.admin token the external API accepts.
	Token string

	opts     Options
	etcd     *process
	adminURL string
	certs    string // directory: ca.crt, server.*, client.*

	leasing sync.Mutex // one flanneld at a time takes its first lease

	mu   sync.Mutex
	undo []func() error
}

// New builds a foundation. On error everything it made is removed again.
func New(ctx context.Context, opts Options) (_ *Foundation, err error) {
	if opts.Cells < 1 {
		return nil, errors.New("foundation: at least one cell")
	}
	if opts.Cells > 200 {
		return nil, errors.New("foundation: at most 200 cells (one underlay /24)")
	}
	if opts.Replicas < 1 {
		opts.Replicas = 1
	}
	if opts.Replicas > 8 {
		return nil, errors.New("foundation: at most 8 policy server replicas")
	}
	if opts.PollIntervalSeconds < 1 {
		opts.PollIntervalSeconds = 1
	}
	for _, p := range []struct{ what, path string }{
		{"policy-server", filepath.Join(opts.Bin, "policy-server")},
		{"policy-agent", filepath.Join(opts.Bin, "policy-agent")},
		{"wrapper", filepath.Join(opts.Bin, "wrapper")},
		{"netman", filepath.Join(opts.Bin, "netman")},
		{"flanneld", filepath.Join(opts.OverlayBin, "flanneld")},
		{"etcd", filepath.Join(opts.OverlayBin, "etcd")},
		{"flannel CNI plugin", filepath.Join(opts.CNIPath, "flannel")},
		{"generate-certs", filepath.Join(opts.Root, "scripts", "generate-certs")},
	} {
		if _, err := os.Stat(p.path); err != nil {
			return nil, fmt.Errorf("foundation: %s: %w", p.what, err)
		}
	}
	sweep()

	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	f := &Foundation{Prefix: NamePrefix + hex.EncodeToString(b[:]), opts: opts}
	f.Underlay = f.Prefix + "-u"
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("foundation %s: %w", f.Prefix, err), f.Close())
		}
	}()
	if f.Dir, err = os.MkdirTemp("", f.Prefix+"-"); err != nil {
		return nil, err
	}
	f.onClose(func() error { return os.RemoveAll(f.Dir) })
	if err := claim(f.Prefix); err != nil {
		return nil, err
	}
	f.onClose(func() error { return release(f.Prefix) })

	f.progress("foundation %s: underlay, etcd, %d policy server(s), %d cells (logs in %s)", f.Prefix, opts.Replicas, opts.Cells, f.Dir)
	if err := f.certificates(ctx); err != nil {
		return nil, err
	}
	if err := f.underlay(ctx); err != nil {
		return nil, err
	}
	if err := f.startEtcd(ctx); err != nil {
		return nil, err
	}
	if err := f.database(ctx); err != nil {
		return nil, err
	}
	for i := 1; i <= opts.Replicas; i++ {
		s, err := f.startPolicyServer(ctx, i)
		if err != nil {
			return nil, err
		}
		f.Servers = append(f.Servers, s)
	}
	// Cells come up in parallel: flanneld's lease and the agent's first cycle dominate.
	f.Cells = make([]*Cell, opts.Cells)
	errs := make([]error, opts.Cells)
	var wg sync.WaitGroup
	for i := range opts.Cells {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.Cells[i], errs[i] = f.newCell(ctx, i+1)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, c := range f.Cells {
		if c != nil && !contains(opts.NoAgent, c.Index) {
			if err := c.StartAgent(ctx); err != nil {
				return nil, err
			}
		}
	}
	f.progress("foundation %s is up", f.Prefix)
	return f, nil
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func (f *Foundation) progress(format string, args ...any) {
	if f.opts.Progress != nil {
		fmt.Fprintf(f.opts.Progress, format+"\n", args...)
	}
}

// onClose registers undo steps; Close runs them in reverse order.
func (f *Foundation) onClose(fn func() error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.undo = append(f.undo, fn)
}

// Close stops every program and removes everything the foundation created. It may be
// called more than once, and from a signal handler while New still runs.
func (f *Foundation) Close() error {
	f.mu.Lock()
	undo := f.undo
	f.undo = nil
	f.mu.Unlock()
	var errs []error
	for i := len(undo) - 1; i >= 0; i-- {
		if err := undo[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (f *Foundation) log(name string) string { return filepath.Join(f.Dir, name+".log") }

// certificates issues the CA, server and client certificates with the script operators
// use, and a key pair that signs external API tokens.
func (f *Foundation) certificates(ctx context.Context) error {
	f.certs = filepath.Join(f.Dir, "certs")
	out, err := exec.CommandContext(ctx, filepath.Join(f.opts.Root, "scripts", "generate-certs"), f.certs).CombinedOutput()
	if err != nil {
		return fmt.Errorf("generate-certs: %w: %s", err, out)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(f.Dir, "uaa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(f.Dir, "uaa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return err
	}
	tok, err := exec.CommandContext(ctx, filepath.Join(f.opts.Bin, "netman"), "dev-token", "--key", filepath.Join(f.Dir, "uaa.key"), "--scope", "network.admin", "--ttl", "12h").Output()
	if err != nil {
		return fmt.Errorf("netman dev-token: %w", err)
	}
	f.Token = strings.TrimSpace(string(tok))
	return nil
}

// addNS creates a named namespace with loopback up, removed on Close.
func (f *Foundation) addNS(ctx context.Context, name string) error {
	if err := ip(ctx, "netns", "add", name); err != nil {
		return err
	}
	f.onClose(func() error { return removeNS(name) })
	return ip(ctx, "-n", name, "link", "set", "lo", "up")
}

// removeNS kills what still runs in the namespace and deletes it with its /etc/netns entry.
func removeNS(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "pids", name).Output(); err == nil {
		for _, p := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(p); err == nil {
				if proc, err := os.FindProcess(pid); err == nil {
					_ = proc.Kill()
				}
			}
		}
	}
	_ = os.RemoveAll(filepath.Join("/etc/netns", name))
	if _, err := os.Stat(nsPath(name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return ip(ctx, "netns", "del", name)
}

// attach puts a new namespace on the underlay bridge with address addr/24 on its eth0.
func (f *Foundation) attach(ctx context.Context, name, port, addr string) error {
	steps := [][]string{
		{"-n", f.Underlay, "link", "add", port, "mtu", strconv.Itoa(UnderlayMTU), "type", "veth", "peer", "name", "eth0", "mtu", strconv.Itoa(UnderlayMTU), "netns", name},
		{"-n", f.Underlay, "link", "set", port, "master", "br0", "up"},
		{"-n", name, "addr", "add", addr + "/24", "dev", "eth0"},
		{"-n", name, "link", "set", "eth0", "up"},
		// The route the wrapper measures the underlay's MTU from, and flanneld its interface.
		{"-n", name, "route", "add", "default", "via", EtcdIP},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

func (f *Foundation) underlay(ctx context.Context) error {
	if err := f.addNS(ctx, f.Underlay); err != nil {
		return err
	}
	for _, s := range [][]string{
		{"-n", f.Underlay, "link", "add", "br0", "mtu", strconv.Itoa(UnderlayMTU), "type", "bridge"},
		{"-n", f.Underlay, "addr", "add", EtcdIP + "/24", "dev", "br0"},
		{"-n", f.Underlay, "link", "set", "br0", "up"},
	} {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// database creates the policy servers' database, dropped on Close. Its name is the
// prefix, like everything else the foundation creates.
func (f *Foundation) database(ctx context.Context) error {
	if f.opts.DatabaseURL == "" {
		return errors.New("foundation: no DatabaseURL")
	}
	dsn, drop, err := pgtest.Create(ctx, f.opts.DatabaseURL, f.Prefix)
	if err != nil {
		return err
	}
	f.onClose(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return drop(ctx)
	})
	f.adminURL = dsn
	return nil
}

// pgHostPort is where the host's Postgres listens.
func (f *Foundation) pgHostPort() (string, error) {
	u, err := url.Parse(f.adminURL)
	if err != nil {
		return "", err
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "5432"
	}
	if host == "" || strings.HasPrefix(host, "/") {
		return "", fmt.Errorf("foundation: DatabaseURL must name a TCP host, not %q", host)
	}
	return net.JoinHostPort(host, port), nil
}
