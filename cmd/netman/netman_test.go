package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"netman/internal/testsupport/pgtest"
	"netman/internal/testsupport/serverlog"
	"netman/lib/mutualtls/mutualtlstest"
	"netman/policy-server/auth/authtest"
)

// system is a policy-server binary on a fresh database and the netman binary to talk to it.
type system struct {
	netman      string
	api         string // external API URL
	internalURL string
	debugURL    string
	certs       mutualtlstest.Files
	keyFile     string // private key that signs tokens (the server has the public half)
	key         authtest.Key
	token       string
	logs        *serverlog.Log
}

// binDir holds policy-server and netman, built once for all tests of the package:
// building them per test would cost more than the tests on a shared 2-core machine.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "netman-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/policy-server", "./cmd/netman")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func start(t testing.TB, extra map[string]any) *system {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	bin := binDir
	certs, _ := mutualtlstest.WriteFiles(t, t.TempDir())
	key := authtest.NewKey(t, "")
	// Every port 0: the server's log says which ports it got.
	cfg := map[string]any{
		"listen_host":          "127.0.0.1",
		"listen_port":          0,
		"internal_listen_port": 0,
		"health_check_port":    0,
		"debug_server_port":    0,
		"ca_cert_file":         certs.CACert,
		"server_cert_file":     certs.ServerCert,
		"server_key_file":      certs.ServerKey,
		"database":             map[string]any{"type": "postgres", "connection_string": dsn},
		"uaa_key_file":         key.PublicKeyFile(t),
		"jwt_issuer":           authtest.Issuer,
		"log_level":            "info",
	}
	for k, v := range extra {
		cfg[k] = v
	}
	cfgFile := filepath.Join(t.TempDir(), "policy-server.json")
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s := &system{
		netman:  filepath.Join(bin, "netman"),
		certs:   certs,
		keyFile: key.PrivateKeyFile(t),
		key:     key,
		logs:    &serverlog.Log{},
	}
	cmd := exec.Command(filepath.Join(bin, "policy-server"), "-config-file", cfgFile)
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited, gone := make(chan error, 1), make(chan struct{})
	go func() { err := cmd.Wait(); close(gone); exited <- err }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("policy-server exited with %v after SIGTERM", err)
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("policy-server did not stop within 20s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("policy-server output:\n%s", s.logs.String())
		}
	})
	// The health server starts last, after the internal and external ones.
	health := "http://" + s.logs.Addr(t, "health", gone, 60*time.Second) + "/health"
	s.internalURL = "https://" + s.logs.Addr(t, "internal", gone, time.Second)
	s.debugURL = "http://" + s.logs.Addr(t, "debug", gone, time.Second)
	s.api = "http://" + s.logs.Addr(t, "external", gone, time.Second)
	if ca, ok := extra["external_server_cert_file"]; ok && ca != "" {
		s.api = "https://" + s.logs.Addr(t, "external", gone, time.Second)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(health)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("policy-server exited at start: %v\n%s", err, s.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("policy-server did not become healthy within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.token = strings.TrimSpace(s.mustRun(t, "dev-token", "--key", s.keyFile, "--issuer", authtest.Issuer))
	return s
}

// run runs netman with NETMAN_API set to the server and returns stdout, stderr, exit code.
func (s *system) run(t testing.TB, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.netman, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "NETMAN_API=" + s.api, "NETMAN_TOKEN=" + s.token}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("running netman: %v", err)
		}
		code = ee.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

func (s *system) mustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, code := s.run(t, nil, args...)
	if code != 0 {
		t.Fatalf("netman %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
	}
	return out
}

func (s *system) mustFail(t *testing.T, wantCode int, wantErr string, env []string, args ...string) {
	t.Helper()
	out, errOut, code := s.run(t, env, args...)
	if code != wantCode {
		t.Fatalf("netman %s: exit %d, want %d\nstdout %s\nstderr %s", strings.Join(args, " "), code, wantCode, out, errOut)
	}
	// stdout stays clean for pipes; the error is the first line of stderr, what
	// follows it is a hint or the command's usage.
	first, rest, _ := strings.Cut(errOut, "\n")
	if out != "" || !strings.HasPrefix(first, "netman: ") || !strings.Contains(first, wantErr) {
		t.Fatalf("netman %s: stdout %q, stderr %q, want a first line containing %q", strings.Join(args, " "), out, errOut, wantErr)
	}
	if code == 2 && !strings.HasPrefix(rest, "Usage: netman ") && !strings.HasPrefix(rest, "Run 'netman help") {
		t.Fatalf("netman %s: a usage error without the usage: %q", strings.Join(args, " "), errOut)
	}
}

// mustHint is mustFail for errors that carry a hint line.
func (s *system) mustHint(t *testing.T, wantErr, wantHint string, env []string, args ...string) {
	t.Helper()
	s.mustFail(t, 1, wantErr, env, args...)
	_, errOut, _ := s.run(t, env, args...)
	if _, hint, _ := strings.Cut(errOut, "\n"); !strings.HasPrefix(hint, "hint: ") || !strings.Contains(hint, wantHint) {
		t.Fatalf("netman %s: stderr %q, want a hint containing %q", strings.Join(args, " "), errOut, wantHint)
	}
}

func TestNetmanAgainstThePolicyServer(t *testing.T) {
	s := start(t, nil)

	if out := s.mustRun(t, "policies", "list"); out != "SOURCE   DESTINATION   PROTOCOL   PORTS\n0 policies\n" {
		t.Fatalf("empty list:\n%s", out)
	}
	if out := s.mustRun(t, "policies", "add", "app-a", "app-b", "--protocol", "tcp", "--port", "8080-8090"); out != "Added policy app-a -> app-b tcp/8080-8090\n" {
		t.Fatalf("add: %q", out)
	}
	s.mustRun(t, "policies", "add", "app-a", "app-b", "--protocol", "tcp", "--port", "8080-8090") // idempotent
	s.mustRun(t, "policies", "add", "--port", "53", "--protocol", "udp", "app-c", "app-a")        // flags first
	s.mustRun(t, "policies", "add", "app-c", "--destination-app", "app-b")                        // cf v6 spelling; cf defaults: tcp 8080

	want := "SOURCE   DESTINATION   PROTOCOL   PORTS\n" +
		"app-a    app-b         tcp        8080-8090\n" +
		"app-c    app-a         udp        53\n" +
		"app-c    app-b         tcp        8080\n" +
		"3 policies\n"
	if out := s.mustRun(t, "policies", "list"); out != want {
		t.Fatalf("list:\n%s\nwant:\n%s", out, want)
	}
	if out := s.mustRun(t, "policies", "list", "--id", "app-b", "--json"); !strings.Contains(out, `"total_policies": 2`) {
		t.Fatalf("list --id app-b --json:\n%s", out)
	}

	// What an agent sees: v0 shows the range as port = start plus ports.
	internal := []string{"internal", "policies", "--url", s.internalURL, "--ca", s.certs.CACert, "--cert", s.certs.ClientCert, "--key", s.certs.ClientKey}
	// The v0 route answers from the server's snapshot, which may trail a write by up
	// to a second (the policy cache's freshness promise).
	var v0 struct {
		Policies []map[string]map[string]any `json:"policies"`
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out := s.mustRun(t, append(internal, "--id", "app-b", "--json")...)
		if err := json.Unmarshal([]byte(out), &v0); err != nil {
			t.Fatalf("internal v0 --json: %v\n%s", err, out)
		}
		if len(v0.Policies) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("internal v0 --json still shows %d policies after 2s:\n%s", len(v0.Policies), out)
		}
	}
	d := v0.Policies[0]["destination"]
	if d["port"] != float64(8080) || fmt.Sprint(d["ports"]) != "map[end:8090 start:8080]" {
		t.Fatalf("v0 internal shows the range as %v", d)
	}
	if out := s.mustRun(t, append(internal, "--v1")...); !strings.Contains(out, "8080-8090") || !strings.Contains(out, "3 policies") {
		t.Fatalf("internal --v1:\n%s", out)
	}

	tags := s.mustRun(t, "tags")
	if !strings.HasPrefix(tags, "ID      TYPE   TAG\napp-a   app    ") || strings.Count(tags, "\n") != 4 {
		t.Fatalf("tags:\n%s", tags)
	}
	if out := s.mustRun(t, "whoami"); out != "user:   admin\nclient: netman-dev\nscopes: network.admin\n" {
		t.Fatalf("whoami:\n%s", out)
	}

	s.mustRun(t, "policies", "remove", "app-a", "app-b", "--protocol", "tcp", "--port", "8080-8090")
	s.mustRun(t, "policies", "remove", "app-a", "app-b", "--protocol", "tcp", "--port", "8080-8090") // idempotent
	if out := s.mustRun(t, "policies", "list"); !strings.HasSuffix(out, "2 policies\n") {
		t.Fatalf("after remove:\n%s", out)
	}

	// Failures: one line on stderr with the server's message, non-zero exit.
	s.mustFail(t, 1, `400 Bad Request: policies[0].destination.protocol "icmp" is not allowed`, nil, "policies", "add", "a", "b", "--protocol", "icmp")
	s.mustFail(t, 1, "outside 1-65535", nil, "policies", "add", "a", "b", "--port", "70000")
	s.mustFail(t, 1, "greater than", nil, "policies", "add", "a", "b", "--port", "9000-8000")
	s.mustFail(t, 1, "must not contain a comma", nil, "policies", "add", "a,b", "c")
	s.mustFail(t, 2, "--port \"http\"", nil, "policies", "add", "a", "b", "--port", "http")
	s.mustFail(t, 2, "needs SRC and DST", nil, "policies", "add", "a")
	s.mustFail(t, 2, "needs --protocol and --port", nil, "policies", "remove", "a", "b")
	s.mustFail(t, 2, "unknown command", nil, "frobnicate")
	s.mustFail(t, 2, "no token", []string{"NETMAN_TOKEN="}, "policies", "list")
	s.mustFail(t, 1, "401 Unauthorized: token is malformed", nil, "policies", "list", "--token", "junk")
	readOnly := strings.TrimSpace(s.mustRun(t, "dev-token", "--key", s.keyFile, "--issuer", authtest.Issuer, "--scope", "network.read"))
	s.mustFail(t, 1, "403 Forbidden: token lacks scope network.admin", []string{"NETMAN_TOKEN=" + readOnly}, "whoami")
	wrongIssuer := strings.TrimSpace(s.mustRun(t, "dev-token", "--key", s.keyFile, "--issuer", "https://elsewhere"))
	s.mustFail(t, 1, "401 Unauthorized", []string{"NETMAN_TOKEN=bearer " + wrongIssuer}, "tags")
	s.mustHint(t, "GET http://127.0.0.1:1/networking/v1/external/policies: dial tcp 127.0.0.1:1: connect: connection refused", "nothing listens there", nil, "policies", "list", "--api", "http://127.0.0.1:1")
	// The internal API's port instead of the external one, with either scheme.
	internalHost := strings.TrimPrefix(s.internalURL, "https://")
	s.mustHint(t, "GET http://"+internalHost+"/networking/v1/external/policies", "https://", nil, "policies", "list", "--api", "http://"+internalHost)
	s.mustHint(t, "GET https://"+internalHost+"/networking/v1/external/whoami", "needs a client certificate", nil, "whoami", "--api", s.internalURL, "--ca", s.certs.CACert)
	// An expired token: the server's reason, and how to get a new one.
	expired := authtest.Claims()
	expired.IssuedAt = jwt.NewNumericDate(time.Now().Add(-2 * time.Hour))
	expired.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour))
	s.mustHint(t, "401 Unauthorized: token has invalid claims: token is expired", "cf oauth-token", []string{"NETMAN_TOKEN=" + s.key.Token(t, expired)}, "tags")
	s.mustFail(t, 2, "internal policies needs --ca", nil, "internal", "policies", "--url", s.internalURL)

	// --help on every command, exit 0.
	for _, args := range [][]string{{"--help"}, {"policies", "--help"}, {"policies", "list", "--help"}, {"policies", "add", "--help"},
		{"policies", "remove", "--help"}, {"tags", "--help"}, {"whoami", "--help"}, {"internal", "--help"}, {"internal", "policies", "--help"}, {"dev-token", "--help"}} {
		out, errOut, code := s.run(t, nil, args...)
		if code != 0 || !strings.Contains(out, "Usage") || errOut != "" {
			t.Errorf("netman %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, out, errOut)
		}
	}
}

// The external API over HTTPS, with keys from a UAA's /token_keys (over TLS too).
func TestNetmanOverHTTPSWithUAAKeys(t *testing.T) {
	key := authtest.NewKey(t, "uaa-key-1")
	uaa := authtest.NewUAA(t, key)
	ext, _ := mutualtlstest.WriteFiles(t, t.TempDir())
	s := start(t, map[string]any{
		"uaa_key_file":              "",
		"uaa_url":                   uaa.URL,
		"uaa_ca_cert_file":          uaa.CAFile,
		"jwt_audience":              authtest.Audience,
		"external_server_cert_file": ext.ServerCert,
		"external_server_key_file":  ext.ServerKey,
	})
	if !strings.HasPrefix(s.api, "https://") {
		t.Fatalf("api %s", s.api)
	}
	s.token = key.AdminToken(t)
	if out := s.mustRun(t, "whoami", "--ca", ext.CACert); !strings.HasPrefix(out, "user:   admin\n") {
		t.Fatalf("whoami over HTTPS: %q", out)
	}
	if uaa.Fetches() != 1 {
		t.Fatalf("UAA was asked %d times for its keys, want once (at start)", uaa.Fetches())
	}
	s.mustRun(t, "policies", "add", "a", "b", "--ca", ext.CACert)
	s.mustFail(t, 1, "certificate", nil, "whoami")
	// The key file of the other test setup is not trusted here.
	minted := strings.TrimSpace(s.mustRun(t, "dev-token", "--key", s.keyFile, "--issuer", authtest.Issuer, "--audience", authtest.Audience, "--kid", "uaa-key-1"))
	s.mustFail(t, 1, "401 Unauthorized: token signature is invalid", []string{"NETMAN_TOKEN=" + minted}, "whoami", "--ca", ext.CACert)
	noAud := authtest.Claims()
	noAud.Audience = nil
	s.mustFail(t, 1, "401 Unauthorized", []string{"NETMAN_TOKEN=" + key.Token(t, noAud)}, "whoami", "--ca", ext.CACert)
}
