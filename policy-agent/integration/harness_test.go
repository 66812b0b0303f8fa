package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"netman/internal/testsupport/pgtest"
	"netman/internal/testsupport/serverlog"
	"netman/internal/testsupport/testenv"
	"netman/lib/datastore"
	"netman/lib/mutualtls/mutualtlstest"
	"netman/lib/rules/rulestest"
	"netman/policy-server/auth/authtest"
)

// repoRoot is the module root, found from this file's place in it.
func repoRoot(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// build compiles the named packages (paths from the module root) into dir, in one go
// invocation as `make build` does, and returns the binaries' paths by their names.
func build(t testing.TB, dir string, pkgs ...string) map[string]string {
	t.Helper()
	args := []string{"build", "-o", dir + "/"}
	out := map[string]string{}
	for _, p := range pkgs {
		args = append(args, "./"+p)
		out[filepath.Base(p)] = filepath.Join(dir, filepath.Base(p))
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %v: %v\n%s", pkgs, err, b)
	}
	return out
}

func writeJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// process is a started binary whose output goes to a log file shown when the test fails.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	out  *serverlog.Log // the output again, to learn the ports it listens on
	done chan struct{}
}

func start(t testing.TB, in ns.NetNS, name, logFile string, argv ...string) *process {
	t.Helper()
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	out := &serverlog.Log{}
	w := io.MultiWriter(f, out)
	cmd.Stdout, cmd.Stderr = w, w
	startIt := func() error { return cmd.Start() }
	if in != nil {
		// The child inherits the namespace of the thread that forks it.
		err = in.Do(func(ns.NetNS) error { return startIt() })
	} else {
		err = startIt()
	}
	if err != nil {
		f.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logFile, out: out, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("---- %s log ----\n%s", name, tail(b, 60))
		}
	})
	return p
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop sends SIGTERM and waits (SIGKILL after 10 s).
func (p *process) stop(t testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("%s ignored SIGTERM for 10s", p.name)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitHTTP polls url (from namespace in, or this one when nil) until it answers 200.
func waitHTTP(t testing.TB, in ns.NetNS, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code := getStatus(in, url)
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer 200 in %v (last: %d)", url, timeout, code)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func getStatus(in ns.NetNS, url string) int {
	resp, err := httpIn(in).Get(url)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// httpIn is a client whose connections start in namespace in (this one when nil). The
// transport dials on goroutines of its own, so the dialer enters the namespace itself.
func httpIn(in ns.NetNS) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true}
	if in != nil {
		tr.DialContext = func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = in.Do(func(ns.NetNS) error {
				var d net.Dialer
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		}
	}
	return &http.Client{Timeout: 2 * time.Second, Transport: tr}
}

// getBody fetches url from inside namespace in.
func getBody(t testing.TB, in ns.NetNS, url string) string {
	t.Helper()
	resp, err := httpIn(in).Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return string(body)
}

// forward runs the demo's `netprobe forward`: it listens on addr inside namespace in and
// connects every connection to the same address in this namespace, so the cell reaches
// the policy server on the host's loopback the way a real cell reaches it over the
// network, with TLS end to end. It returns once the listener accepts.
func forward(t testing.TB, netprobe string, in ns.NetNS, addr, dir string) {
	t.Helper()
	start(t, nil, "netprobe forward", filepath.Join(dir, "forward.log"), netprobe, "forward",
		"-netns", in.Path(), "-listen", addr, "-to", addr)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := in.Do(func(ns.NetNS) error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("netprobe forward does not listen on %s in the cell: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// policyServer is the real policy server binary on a real Postgres database.
type policyServer struct {
	bin, config, log string
	external         string
	internalPort     int
	health           string
	metrics          string // the debug server's /metrics
	token            string
	netman           string // the netman CLI
	proc             *process
	certs            mutualtlstest.Files
}

func startPolicyServer(t testing.TB, bins map[string]string, dir string) *policyServer {
	t.Helper()
	certs, _ := mutualtlstest.WriteFiles(t, filepath.Join(dir))
	key := authtest.NewKey(t, "key-1")
	s := &policyServer{
		bin: bins["policy-server"], config: filepath.Join(dir, "policy-server.json"),
		log:   filepath.Join(dir, "policy-server.log"),
		token: key.AdminToken(t), netman: bins["netman"], certs: certs,
	}
	config := map[string]any{
		"listen_host": "127.0.0.1", "listen_port": 0, "internal_listen_port": 0,
		"health_check_port": 0, "debug_server_port": 0,
		"ca_cert_file": certs.CACert, "server_cert_file": certs.ServerCert, "server_key_file": certs.ServerKey,
		"database":     map[string]any{"type": "postgres", "connection_string": pgtest.NewDatabase(t)},
		"uaa_key_file": key.PublicKeyFile(t),
	}
	writeJSON(t, s.config, config)
	// Every port 0 at first: the server's log says which ports it got.
	s.proc = start(t, nil, "policy-server", s.log, s.bin, "-config-file", s.config)
	port := func(server string) int { return s.proc.out.Port(t, server, s.proc.done, 60*time.Second) }
	health := port("health") // the last to listen
	s.internalPort = port("internal")
	listen := port("external")
	s.external = "http://127.0.0.1:" + strconv.Itoa(listen)
	s.health = "http://127.0.0.1:" + strconv.Itoa(health) + "/health"
	// A restart binds the same ports again: the agent's configuration names the internal one.
	config["listen_port"], config["internal_listen_port"] = listen, s.internalPort
	debug := port("debug")
	s.metrics = "http://127.0.0.1:" + strconv.Itoa(debug) + "/metrics"
	config["health_check_port"], config["debug_server_port"] = health, debug
	writeJSON(t, s.config, config)
	waitHTTP(t, nil, s.health, 60*time.Second)
	return s
}

func (s *policyServer) start(t testing.TB) {
	t.Helper()
	s.proc = start(t, nil, "policy-server", s.log, s.bin, "-config-file", s.config)
	waitHTTP(t, nil, s.health, 60*time.Second)
}

// agentSettings is the agent's configuration for a cell whose datastore is store,
// polling srv; extra adds fields or replaces them.
func agentSettings(srv *policyServer, store, dir string, extra map[string]any) map[string]any {
	c := map[string]any{
		"policy_server_url":  "https://127.0.0.1:" + strconv.Itoa(srv.internalPort),
		"ca_cert_file":       srv.certs.CACert,
		"client_cert_file":   srv.certs.ClientCert,
		"client_key_file":    srv.certs.ClientKey,
		"datastore":          store,
		"iptables_lock_file": filepath.Join(dir, "iptables.lock"),
	}
	maps.Copy(c, extra)
	return c
}

// policy adds ("add") or removes ("remove") one policy with `netman policies`.
func (s *policyServer) policy(t testing.TB, verb, src, dst, proto string, port int) {
	t.Helper()
	cmd := exec.Command(s.netman, "policies", verb, src, dst, "--protocol", proto, "--port", strconv.Itoa(port), "--api", s.external)
	cmd.Env = append(os.Environ(), "NETMAN_TOKEN="+s.token)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("netman policies %s %s %s: %v\n%s", verb, src, dst, err, out)
	}
}

// addContainer runs the real wrapper (delegating to the real bridge plugin) in the cell to
// attach a new container namespace, as garden-external-networker would, and returns the
// namespace, the IP the datastore recorded, and a function that deletes the container
// through the wrapper (the test's cleanup does too: DEL is idempotent).
func addContainer(t testing.TB, wrapper, cniPath string, cell ns.NetNS, store, handle, group, dir string) (ns.NetNS, string, func()) {
	t.Helper()
	return addContainerWith(t, wrapper, cniPath, cell, store, handle, group, dir, nil)
}

// addContainerWith is addContainer with extra fields in the wrapper's network config.
func addContainerWith(t testing.TB, wrapper, cniPath string, cell ns.NetNS, store, handle, group, dir string, extra map[string]any) (ns.NetNS, string, func()) {
	t.Helper()
	cont := rulestest.NewNS(t)
	m := map[string]any{
		"cniVersion": "1.0.0", "name": "cni-wrapper", "type": "wrapper", "datastore": store,
		// The cell has no uplink to detect the MTU from.
		"mtu": 1500,
		"delegate": map[string]any{
			"type": "bridge", "bridge": "cni-netman0", "isGateway": true, "ipMasq": false,
			"ipam": map[string]any{"type": "host-local", "subnet": "10.255.7.0/24", "dataDir": filepath.Join(dir, "ipam")},
		},
		"metadata": map[string]any{
			"app_id": group, "policy_group_id": group, "space_id": "space-1", "org_id": "org-1",
		},
	}
	for k, v := range extra {
		m[k] = v
	}
	conf, _ := json.Marshal(m)
	run := func(command string) {
		cmd := exec.Command(wrapper)
		cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + handle, "CNI_NETNS=" + cont.Path(),
			"CNI_IFNAME=eth0", "CNI_PATH=" + cniPath, "PATH=" + os.Getenv("PATH")}
		cmd.Stdin = bytes.NewReader(conf)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cell.Do(func(ns.NetNS) error { return cmd.Run() }); err != nil {
			t.Fatalf("wrapper %s %s: %v\n%s", command, handle, err, out.String())
		}
	}
	run("ADD")
	t.Cleanup(func() { run("DEL") })
	records, err := datastore.Read(store)
	if err != nil {
		t.Fatal(err)
	}
	rec, ok := records[handle]
	if !ok {
		t.Fatalf("no datastore record for %s after ADD", handle)
	}
	ip, _, _ := strings.Cut(rec.IP, "/")
	return cont, ip, func() { run("DEL") }
}

// requireE2E stops the test unless everything the end-to-end test needs is here.
func requireE2E(t testing.TB) string {
	t.Helper()
	rulestest.RequireEnforcement(t)
	testenv.RequireCommand(t, "go")
	return testenv.CNIPath(t, "bridge", "host-local")
}
