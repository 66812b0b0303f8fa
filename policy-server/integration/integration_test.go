// Package integration runs the built policy-server binary against a real Postgres, with
// certificates from scripts/generate-certs, and talks to it over real mutual TLS.
package integration_test

import (
	"context"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"netman/internal/testsupport/freeport"
	"netman/internal/testsupport/pgtest"
	"netman/internal/testsupport/serverlog"
	"netman/internal/testsupport/testenv"
	"netman/lib/apiwire"
	"netman/lib/models"
	"netman/lib/mutualtls"
	"netman/policy-server/api/apitest"
	"netman/policy-server/auth/authtest"
	"netman/policy-server/store"
)

const serverName = "policy-server.service.cf.internal"

var binary, loadBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "policy-server-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "policy-server")
	loadBinary = filepath.Join(dir, "policy-load")
	build := exec.Command("go", "build", "-o", dir+"/", "netman/cmd/policy-server", "netman/cmd/policy-load")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building policy-server and policy-load: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func repoRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("finding the module root: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// certs runs scripts/generate-certs into a fresh directory.
func certs(t testing.TB) string {
	t.Helper()
	testenv.RequireCommand(t, "openssl")
	dir := filepath.Join(t.TempDir(), "certs")
	cmd := exec.Command(filepath.Join(repoRoot(t), "scripts", "generate-certs"), dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generate-certs: %v\n%s", err, out)
	}
	return dir
}

type ports struct{ internal, health, debug int }

func writeConfig(t testing.TB, certDir, dsn string, p ports, extra map[string]any) string {
	t.Helper()
	c := map[string]any{
		"listen_host":          "127.0.0.1",
		"listen_port":          0, // no external API here: no uaa settings
		"internal_listen_port": p.internal,
		"health_check_port":    p.health,
		"debug_server_port":    p.debug,
		"ca_cert_file":         filepath.Join(certDir, "ca.crt"),
		"server_cert_file":     filepath.Join(certDir, "server.crt"),
		"server_key_file":      filepath.Join(certDir, "server.key"),
		"database":             map[string]any{"type": "postgres", "connection_string": dsn},
		"log_level":            "debug",
	}
	for k, v := range extra {
		c[k] = v
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "policy-server.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type server struct {
	cmd    *exec.Cmd
	out    *serverlog.Log
	done   chan error
	ports  ports
	client *http.Client
	certs  string
}

// start runs the binary with every port 0, learns its ports from its log and waits
// until /health answers 200.
func start(t *testing.T, certDir, dsn string) *server {
	t.Helper()
	return startWith(t, certDir, dsn, nil)
}

// startWith is start with extra configuration fields.
func startWith(t *testing.T, certDir, dsn string, extra map[string]any) *server {
	t.Helper()
	cfg := writeConfig(t, certDir, dsn, ports{}, extra)
	s := &server{out: &serverlog.Log{}, done: make(chan error, 1), certs: certDir}
	s.cmd = exec.Command(binary, "-config-file", cfg)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { err := s.cmd.Wait(); close(exited); s.done <- err }()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(15 * time.Second):
				s.cmd.Process.Kill()
			}
		}
		if t.Failed() {
			t.Logf("policy-server output:\n%s", s.out)
		}
	})
	tlsConfig, err := mutualtls.ClientConfig(filepath.Join(certDir, "client.crt"), filepath.Join(certDir, "client.key"), filepath.Join(certDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig.ServerName = serverName
	s.client = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig}, Timeout: 30 * time.Second}
	t.Cleanup(s.client.CloseIdleConnections)

	// Health listens last, once the others do.
	p := ports{health: s.out.Port(t, "health", exited, 60*time.Second)}
	p.internal = s.out.Port(t, "internal", exited, time.Second)
	p.debug = s.out.Port(t, "debug", exited, time.Second)
	s.ports = p
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/health", p.health))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case err := <-s.done:
			t.Fatalf("policy-server exited during start: %v\n%s", err, s.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy-server not healthy after 30s\n%s", s.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *server) url(query string) string {
	return fmt.Sprintf("https://127.0.0.1:%d%s%s", s.ports.internal, apiwire.InternalPoliciesV0Path, query)
}

func (s *server) policies(t *testing.T, query string) apiwire.InternalPoliciesV0 {
	t.Helper()
	resp, err := s.client.Get(s.url(query))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body apiwire.InternalPoliciesV0
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body
}

// stop sends SIGTERM and returns the exit error.
func (s *server) stop(t *testing.T) error {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("policy-server did not exit 20s after SIGTERM")
		return nil
	}
}

func TestGenerateCerts(t *testing.T) {
	dir := certs(t)
	read := func(name string) *x509.Certificate {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(b)
		if block == nil {
			t.Fatalf("%s holds no PEM", name)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, key := range []string{"ca.key", "server.key", "client.key"} {
		fi, err := os.Stat(filepath.Join(dir, key))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", key, fi.Mode().Perm())
		}
	}
	ca, srv, cli := read("ca.crt"), read("server.crt"), read("client.crt")
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if srv.Subject.CommonName != serverName {
		t.Errorf("server CN %q", srv.Subject.CommonName)
	}
	wantDNS := []string{"*." + serverName, serverName, "localhost"}
	if !slices.Equal(srv.DNSNames, wantDNS) || len(srv.IPAddresses) != 1 || !srv.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("server SANs %v %v", srv.DNSNames, srv.IPAddresses)
	}
	if _, ok := srv.PublicKey.(interface{ Size() int }); !ok || srv.PublicKeyAlgorithm != x509.RSA {
		t.Errorf("server key is %v, want RSA", srv.PublicKeyAlgorithm)
	}
	for _, name := range []string{serverName, "x." + serverName, "localhost", "127.0.0.1"} {
		if _, err := srv.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	if cli.Subject.CommonName != "policy-agent" {
		t.Errorf("client CN %q", cli.Subject.CommonName)
	}
	if _, err := cli.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate for client auth: %v", err)
	}
	if _, err := mutualtls.ServerConfig(filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.crt")); err != nil {
		t.Errorf("server files do not load: %v", err)
	}
	if out, err := exec.Command(filepath.Join(repoRoot(t), "scripts", "generate-certs")).CombinedOutput(); err == nil || !strings.Contains(string(out), "usage") {
		t.Errorf("without OUT_DIR: %v %s", err, out)
	}
}

// The spec's own curl command works against the server, resolving the spec's host name.
func TestSpecCurlCommand(t *testing.T) {
	curl := testenv.RequireCommand(t, "curl")
	st, _, dsn := apitest.NewStore(t)
	apitest.Create(t, st, apitest.Policy("4a2d3627-0b8c-42d1-9563-22696eedc05d", "eb95ff20-cba8-4edc-8f4a-cf80d0669faf", "tcp", 8080, 8080))
	dir := certs(t)
	s := start(t, dir, dsn)

	hostPort := fmt.Sprintf("%s:%d", serverName, s.ports.internal)
	cmd := exec.Command(curl, "-s", "--fail-with-body",
		"--resolve", hostPort+":127.0.0.1",
		"--cacert", "certs/ca.crt",
		"--cert", "certs/client.crt",
		"--key", "certs/client.key",
		"https://"+hostPort+apiwire.InternalPoliciesV0Path)
	cmd.Dir = filepath.Dir(dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	var body apiwire.InternalPoliciesV0
	if err := json.Unmarshal(out, &body); err != nil || len(body.Policies) != 1 {
		t.Fatalf("curl got %s (%v)", out, err)
	}
	p := body.Policies[0]
	if p.Source.ID != "4a2d3627-0b8c-42d1-9563-22696eedc05d" || p.Destination.Port != 8080 || p.Destination.Protocol != "tcp" || p.Source.Tag == "" || p.Destination.Tag == "" {
		t.Fatalf("policy %+v", p)
	}

	// The same command without a client certificate, or with TLS 1.3 only, is refused.
	for _, args := range [][]string{
		{"--cacert", "certs/ca.crt"},
		{"--cacert", "certs/ca.crt", "--cert", "certs/client.crt", "--key", "certs/client.key", "--tlsv1.3"},
		{"--cacert", "certs/ca.crt", "--cert", "certs/client.crt", "--key", "certs/client.key", "--tls-max", "1.1"},
		{"--cacert", "certs/ca.crt", "--cert", "certs/client.crt", "--key", "certs/client.key", "--ciphers", "ECDHE-RSA-AES256-GCM-SHA384", "--tls-max", "1.2"},
	} {
		args = append([]string{"-s", "--resolve", hostPort + ":127.0.0.1"}, args...)
		cmd := exec.Command(curl, append(args, "https://"+hostPort+apiwire.InternalPoliciesV0Path)...)
		cmd.Dir = filepath.Dir(dir)
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("curl %v succeeded: %s", args, out)
		}
	}
}

// A change committed through one replica's store is served by another replica, a
// separate process with its own pool, within a second.
func TestTwoReplicasServeChangesWithinASecond(t *testing.T) {
	st, db, dsn := apitest.NewStore(t)
	dir := certs(t)
	a, b := start(t, dir, dsn), start(t, dir, dsn)
	ctx := apitest.Ctx(t)

	waitFor := func(what string, want int) time.Duration {
		t.Helper()
		begin := time.Now()
		for {
			na := len(a.policies(t, "?id=src-app").Policies)
			nb := len(b.policies(t, "?id=src-app").Policies)
			if na == want && nb == want {
				return time.Since(begin)
			}
			if time.Since(begin) > 5*time.Second {
				t.Fatalf("%s: replicas serve %d and %d policies after 5s, want %d", what, na, nb, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for i := range 5 {
		p := apitest.Policy("src-app", fmt.Sprintf("dst-app-%d", i), "tcp", 8080, 8080)
		begin := time.Now()
		if err := st.Create(ctx, []models.Policy{p}); err != nil {
			t.Fatal(err)
		}
		committed := time.Since(begin)
		took := waitFor("create", i+1) + committed
		if took > time.Second {
			t.Errorf("create %d: both replicas served it after %s, want within 1s", i, took)
		}
		t.Logf("create %d served by both replicas after %s", i, took)
	}
	begin := time.Now()
	if err := st.Delete(ctx, []models.Policy{apitest.Policy("src-app", "dst-app-0", "tcp", 8080, 8080)}); err != nil {
		t.Fatal(err)
	}
	waitFor("delete", 4)
	if took := time.Since(begin); took > time.Second {
		t.Errorf("delete served after %s, want within 1s", took)
	}

	// Without the change feed (its LISTEN connections cut), the version checks still
	// keep both replicas within a second.
	var cut int
	if err := db.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%'`).Scan(&cut); err != nil {
		t.Fatal(err)
	}
	if cut < 2 {
		t.Fatalf("cut %d LISTEN connections, want one per replica", cut)
	}
	begin = time.Now()
	apitest.Create(t, st, apitest.Policy("src-app", "dst-app-9", "tcp", 8080, 8080))
	waitFor("create without the feed", 5)
	if took := time.Since(begin); took > time.Second {
		t.Errorf("create without the change feed served after %s, want within 1s", took)
	}
}

// SIGTERM lets a response that is being written finish, then exits 0.
func TestSIGTERMDrainsInFlightRequests(t *testing.T) {
	_, db, dsn := apitest.NewStore(t)
	ctx := apitest.Ctx(t)
	// Enough policies that the full list (several MB) cannot sit in socket buffers.
	if _, err := seed(ctx, db, 30000); err != nil {
		t.Fatal(err)
	}
	s := start(t, certs(t), dsn)

	resp, err := s.client.Get(s.url(""))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, 1024)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(500 * time.Millisecond) // the server is now draining this response
	select {
	case err := <-s.done:
		t.Fatalf("exited before the in-flight response was read: %v", err)
	default:
	}
	// New connections are refused while draining.
	if _, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.ports.internal), time.Second); err == nil {
		t.Error("a new connection was accepted after SIGTERM")
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the rest of the in-flight response: %v", err)
	}
	var body apiwire.InternalPoliciesV0
	if err := json.Unmarshal(append(first, rest...), &body); err != nil || len(body.Policies) != 30000 {
		t.Fatalf("in-flight response: %d policies, %v", len(body.Policies), err)
	}
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v, want 0\n%s", err, s.out)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after the drain")
	}
	if !strings.Contains(s.out.String(), "policy-server stopped") {
		t.Errorf("no stop log line:\n%s", s.out)
	}
}

// Up to the configured maximum of ids fit in one request over mutual TLS, whether the
// agent speaks HTTP/1.1 (request line) or HTTP/2 (:path header).
func TestManyIDsInOneRequest(t *testing.T) {
	st, _, dsn := apitest.NewStore(t)
	apitest.Create(t, st, apitest.Policy("app-0", "app-1", "tcp", 8080, 8080), apitest.Policy("app-4999", "app-7", "udp", 53, 53))
	s := start(t, certs(t), dsn)
	ids := func(n int) string {
		l := make([]string, n)
		for i := range l {
			l[i] = fmt.Sprintf("%08d-0000-4000-8000-%012d", i, i)
		}
		l[0], l[n-1] = "app-0", "app-4999"
		return strings.Join(l, ",")
	}
	h2 := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   s.client.Transport.(*http.Transport).TLSClientConfig.Clone(),
		ForceAttemptHTTP2: true,
	}}
	t.Cleanup(h2.CloseIdleConnections)
	for _, c := range []struct {
		name   string
		client *http.Client
		proto  int
	}{{"HTTP/1.1", s.client, 1}, {"HTTP/2", h2, 2}} {
		t.Run(c.name, func(t *testing.T) {
			get := func(n int) (int, []byte) {
				t.Helper()
				resp, err := c.client.Get(s.url("?id=" + ids(n)))
				if err != nil {
					t.Fatalf("%d ids: %v", n, err)
				}
				defer resp.Body.Close()
				if resp.ProtoMajor != c.proto {
					t.Fatalf("spoke %s, want HTTP/%d", resp.Proto, c.proto)
				}
				b, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				return resp.StatusCode, b
			}
			for _, n := range []int{5000, 10000} {
				status, body := get(n)
				var got apiwire.InternalPoliciesV0
				if err := json.Unmarshal(body, &got); status != http.StatusOK || err != nil || len(got.Policies) != 2 {
					t.Fatalf("%d ids: status %d, %d policies, %v", n, status, len(got.Policies), err)
				}
			}
			status, body := get(10001)
			var e apiwire.Error
			if err := json.Unmarshal(body, &e); err != nil || status != http.StatusBadRequest || !strings.Contains(e.Error, "too many ids") {
				t.Fatalf("10,001 ids: status %d, body %s", status, body)
			}
		})
	}
}

func TestHealthAndMetrics(t *testing.T) {
	st, _, dsn := apitest.NewStore(t)
	apitest.Create(t, st, apitest.Policy("a", "b", "tcp", 8080, 8080), apitest.Policy("a", "c", "tcp", 8080, 8080))
	s := start(t, certs(t), dsn)
	s.policies(t, "?id=a")

	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", s.ports.debug))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"netman_server_policies 2",
		"netman_server_tags 3",
		`netman_server_http_requests_total{route="policies_v0",server="internal",status="200"}`,
		`netman_server_http_request_duration_seconds_bucket{route="policies_v0",server="internal"`,
		`netman_server_http_requests_total{route="health",server="health",status="200"}`,
		`go_sql_open_connections{db_name="policy_server"}`,
		"netman_server_cache_version",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, port := range []int{s.ports.health, s.ports.debug} {
		if _, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", externalIP(t), port), time.Second); err == nil {
			t.Errorf("port %d answers on a non-loopback address", port)
		}
	}
}

// externalIP is an address of this machine other than loopback, or skips.
func externalIP(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return "127.0.0.2" // loopback network, but not the address the servers bind
}

func TestMigrateOnly(t *testing.T) {
	dsn := newDatabase(t)
	cfg := writeConfig(t, certs(t), dsn, ports{}, nil)
	out, err := exec.Command(binary, "-config-file", cfg, "-migrate-only").CombinedOutput()
	if err != nil {
		t.Fatalf("-migrate-only: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "migrations applied") {
		t.Errorf("output: %s", out)
	}
	var version int64
	if err := openDB(t, dsn).QueryRow(`SELECT version FROM store_meta`).Scan(&version); err != nil {
		t.Fatalf("schema missing after -migrate-only: %v", err)
	}
	// Twice is fine.
	if out, err := exec.Command(binary, "-config-file", cfg, "-migrate-only").CombinedOutput(); err != nil {
		t.Fatalf("second -migrate-only: %v\n%s", err, out)
	}
}

func TestValidateConfig(t *testing.T) {
	dir := certs(t)
	other := certs(t)
	p := ports{4003, 4004, 22222}
	dsn := "postgres://netman:hunter2secret@127.0.0.1:1/netman?sslmode=disable"
	uaaKey := authtest.NewKey(t, "key-1").PublicKeyFile(t)
	notPEM := filepath.Join(t.TempDir(), "uaa.pem")
	if err := os.WriteFile(notPEM, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		extra map[string]any
		field string // "" means valid
	}{
		{"valid", nil, ""},
		{"valid with the external API", map[string]any{"uaa_key_file": uaaKey}, ""},
		{"unknown field", map[string]any{"listen_prot": 1}, "listen_prot"},
		{"bad tag length", map[string]any{"tag_length": 9}, "tag_length"},
		{"bad log level", map[string]any{"log_level": "loud"}, "log_level"},
		{"missing CA file", map[string]any{"ca_cert_file": filepath.Join(dir, "nope.crt")}, "ca_cert_file"},
		{"key of another certificate", map[string]any{"server_key_file": filepath.Join(other, "server.key")}, "server_key_file"},
		{"database type", map[string]any{"database": map[string]any{"type": "mysql", "connection_string": dsn}}, "database.type"},
		{"sslmode the driver refuses", map[string]any{"database": map[string]any{"type": "postgres",
			"connection_string": "postgres://netman:hunter2secret@127.0.0.1:1/netman?sslmode=bogus"}}, `"sslmode": "bogus"`},
		{"missing UAA key file", map[string]any{"uaa_key_file": filepath.Join(dir, "nope.pem")}, "uaa_key_file"},
		{"UAA key file that is no key", map[string]any{"uaa_key_file": notPEM}, "uaa_key_file"},
		{"external certificate with another certificate's key", map[string]any{"uaa_key_file": uaaKey,
			"external_server_cert_file": filepath.Join(dir, "server.crt"), "external_server_key_file": filepath.Join(other, "server.key")}, "external_server_key_file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeConfig(t, dir, dsn, p, tc.extra)
			out, err := exec.Command(binary, "-config-file", cfg, "-validate-config").CombinedOutput()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("valid config refused: %v\n%s", err, out)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted: %s", out)
			}
			if !strings.Contains(string(out), tc.field) {
				t.Fatalf("message does not name %s: %s", tc.field, out)
			}
			if strings.Contains(string(out), "hunter2secret") {
				t.Fatalf("message shows the database password: %s", out)
			}
			// Starting for real refuses the same file the same way.
			out, err = exec.Command(binary, "-config-file", cfg).CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.field) {
				t.Fatalf("start with a bad config: %v %s", err, out)
			}
		})
	}
	if out, err := exec.Command(binary).CombinedOutput(); err == nil || !strings.Contains(string(out), "-config-file") {
		t.Errorf("without -config-file: %v %s", err, out)
	}
}

// Neither the database password nor key material reaches the logs, whether the
// database is unreachable or the server runs and serves at debug level.
func TestLogsHoldNoSecrets(t *testing.T) {
	dir := certs(t)
	const password = "hunter2secret"
	keyPEM, err := os.ReadFile(filepath.Join(dir, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	keyLine := strings.Split(string(keyPEM), "\n")[1]
	check := func(out string) {
		t.Helper()
		for _, secret := range []string{password, keyLine, "PRIVATE KEY"} {
			if strings.Contains(out, secret) {
				t.Fatalf("output contains %q:\n%s", secret, out)
			}
		}
	}

	deadDSN := fmt.Sprintf("postgres://netman:%s@127.0.0.1:%d/netman?sslmode=disable", password, freeport.One(t))
	cfg := writeConfig(t, dir, deadDSN, ports{}, nil)
	out, err := exec.Command(binary, "-config-file", cfg).CombinedOutput()
	if err == nil {
		t.Fatalf("started without a database: %s", out)
	}
	if !strings.Contains(string(out), "migrating the database") {
		t.Errorf("the failure is not explained: %s", out)
	}
	check(string(out))

	// The throwaway server trusts local connections, so a password in the URL is
	// accepted and ignored: the server runs with it in its configuration.
	dsn := withPassword(t, newDatabase(t), password)
	s := start(t, dir, dsn)
	s.policies(t, "")
	s.policies(t, "?id=x")
	http.Get(fmt.Sprintf("http://127.0.0.1:%d/health", s.ports.health))
	if err := s.stop(t); err != nil {
		t.Fatalf("exit: %v", err)
	}
	check(s.out.String())
	if !strings.Contains(s.out.String(), `"request_id"`) {
		t.Errorf("request logs lack request ids:\n%s", s.out)
	}
}

func newDatabase(t *testing.T) string { return pgtest.NewDatabase(t) }

func openDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func seed(ctx context.Context, db *sql.DB, n int) ([]string, error) {
	return store.Seed(ctx, db, n, rand.New(rand.NewPCG(7, 8)))
}

func withPassword(t *testing.T, dsn, password string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), password)
	return u.String()
}

// The load tool seeds, waits for the server to serve what it seeded, and reports
// every figure for every scenario.
func TestLoadTool(t *testing.T) {
	_, _, dsn := apitest.NewStore(t)
	dir := certs(t)
	s := start(t, dir, dsn)
	cmd := exec.Command(loadBinary, "-database-url", dsn, "-policies", "300",
		"-url", fmt.Sprintf("https://127.0.0.1:%d", s.ports.internal),
		"-ca-cert", filepath.Join(dir, "ca.crt"), "-client-cert", filepath.Join(dir, "client.crt"), "-client-key", filepath.Join(dir, "client.key"),
		"-server-pid", fmt.Sprint(s.cmd.Process.Pid), "-ids", "3", "-concurrency", "1,4",
		"-duration", "300ms", "-full-duration", "300ms", "-json")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("policy-load: %v\n%s", err, out)
	}
	type result struct {
		Scenario     string  `json:"scenario"`
		Concurrency  int     `json:"concurrency"`
		Requests     int     `json:"requests"`
		Errors       int     `json:"errors"`
		RequestsPerS float64 `json:"requests_per_second"`
		P50          float64 `json:"p50_ms"`
		Bytes        float64 `json:"bytes_per_response"`
		PeakRSS      float64 `json:"server_peak_rss_mib"`
	}
	var got []result
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		got = append(got, r)
	}
	if len(got) != 3 || got[0].Concurrency != 1 || got[1].Concurrency != 4 || got[2].Scenario != "full list" {
		t.Fatalf("scenarios: %+v", got)
	}
	for _, r := range got {
		if r.Requests == 0 || r.Errors != 0 || r.RequestsPerS <= 0 || r.P50 <= 0 || r.Bytes <= 0 || r.PeakRSS <= 0 {
			t.Errorf("incomplete figures: %+v", r)
		}
	}
	// 300 policies at roughly 170 bytes each.
	if full := got[2].Bytes; full < 300*100 {
		t.Errorf("full list of 300 policies is only %.0f bytes", full)
	}

	for _, args := range [][]string{
		{"-concurrency", "0"},
		{"-ca-cert", ""},
		{"-url", "http://127.0.0.1:1"},
	} {
		base := []string{"-database-url", dsn, "-ca-cert", "x", "-client-cert", "x", "-client-key", "x"}
		out, err := exec.Command(loadBinary, append(base, args...)...).CombinedOutput()
		if err == nil {
			t.Errorf("policy-load %v succeeded: %s", args, out)
		}
	}
	if out, err := exec.Command(loadBinary, "-help").CombinedOutput(); err != nil || !strings.Contains(string(out), "-concurrency") {
		t.Errorf("-help: %v %s", err, out)
	}
}
