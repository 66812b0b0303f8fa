package cli

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"netman/internal/testsupport/testenv"
	"netman/lib/mutualtls"
	"netman/lib/mutualtls/mutualtlstest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// run runs the command as cmd/netman does and returns what it printed and its status.
func run(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Run(context.Background(), args, Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }})
	return out.String(), errOut.String(), code
}

// servers are real listeners on loopback standing for the usual mistakes: a
// mutual-TLS server like the internal API, a plain HTTP one like the external API
// without a certificate, and a port nothing listens on.
type servers struct {
	mtls, plain, closed string
	certs               mutualtlstest.Files
}

func newServers(t *testing.T) servers {
	certs, _ := mutualtlstest.WriteFiles(t, t.TempDir())
	cfg, err := mutualtls.ServerConfig(certs.ServerCert, certs.ServerKey, certs.CACert)
	if err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"policies":[]}`) })
	mtls := httptest.NewUnstartedServer(ok)
	mtls.TLS = cfg
	mtls.StartTLS()
	t.Cleanup(mtls.Close)
	plain := httptest.NewServer(ok)
	t.Cleanup(plain.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	return servers{mtls: mtls.Listener.Addr().String(), plain: plain.Listener.Addr().String(), closed: closed, certs: certs}
}

// TestGolden pins what users see for mistakes: stdout stays empty (so `| jq` never
// gets help text), the error and the usage or hint go to stderr, and the exit status
// says which kind of failure it was.
func TestGolden(t *testing.T) {
	s := newServers(t)
	env := map[string]string{"NETMAN_TOKEN": "a-token"}
	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"unknown-flag", []string{"policies", "list", "--bogus", "--json"}, env},
		{"misspelt-flag", []string{"policies", "add", "a", "b", "--protcol", "udp"}, env},
		{"flag-value", []string{"policies", "list", "--timeout", "soon"}, env},
		{"one-argument", []string{"policies", "add", "app-a"}, env},
		{"extra-argument", []string{"whoami", "me"}, env},
		{"bare-netman", nil, env},
		{"bare-group", []string{"policies"}, env},
		{"unknown-subcommand", []string{"policies", "lsit"}, env},
		{"unknown-command", []string{"polices", "list"}, env},
		{"help-unknown-topic", []string{"help", "tgas"}, env},
		{"completion-unknown-shell", []string{"completion", "fish"}, env},
		{"no-token", []string{"tags"}, nil},
		{"connection-refused", []string{"policies", "list", "--api", "http://" + s.closed}, env},
		{"https-to-plain-http", []string{"tags", "--api", "https://" + s.plain}, env},
		{"external-command-at-internal-port", []string{"whoami", "--api", "https://" + s.mtls, "--ca", s.certs.CACert}, env},
		{"unknown-ca", []string{"tags", "--api", "https://" + s.mtls}, env},
		{"internal-at-external-port", []string{"internal", "policies", "--url", "https://" + s.plain, "--ca", s.certs.CACert, "--cert", s.certs.ClientCert, "--key", s.certs.ClientKey}, env},
	} {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := run(t, c.env, c.args...)
			if stdout != "" {
				t.Errorf("stdout is not empty:\n%s", stdout)
			}
			got := fmt.Sprintf("$ netman %s\nexit %d\n%s", strings.Join(c.args, " "), code, stderr)
			for name, addr := range map[string]string{"MTLS_ADDR": s.mtls, "PLAIN_ADDR": s.plain, "CLOSED_ADDR": s.closed, "CERTS": filepath.Dir(s.certs.CACert)} {
				got = strings.ReplaceAll(got, addr, name)
			}
			golden := filepath.Join("testdata", c.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("got:\n%s\nwant (%s):\n%s", got, golden, want)
			}
		})
	}
}

// http:// to a TLS port: the server answers 400 or resets the connection, depending
// on timing; either way the user is told the URL and to use https or the other port.
func TestPlainHTTPToTLSPort(t *testing.T) {
	s := newServers(t)
	stdout, stderr, code := run(t, map[string]string{"NETMAN_TOKEN": "t"}, "policies", "list", "--api", "http://"+s.mtls)
	if code != 1 || stdout != "" {
		t.Fatalf("exit %d, stdout %q", code, stdout)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "GET http://"+s.mtls+"/networking/v1/external/policies") ||
		!strings.HasPrefix(lines[1], "hint: ") || !strings.Contains(lines[1], "https://") {
		t.Fatalf("stderr:\n%s", stderr)
	}
}

func TestHelpGoesToStdout(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"help", "policies"}, {"help", "policies", "add"}, {"policies", "--help"},
		{"policies", "list", "--help"}, {"internal", "policies", "-h"}, {"dev-token", "--help"}, {"help", "completion"}} {
		stdout, stderr, code := run(t, nil, args...)
		if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "Usage: netman") {
			t.Errorf("netman %s: exit %d, stderr %q, stdout %q", strings.Join(args, " "), code, stderr, stdout)
		}
		// One spelling of flags: the help lists them as they are typed.
		if strings.Contains(stdout, "\n  -") && !strings.Contains(stdout, "\n  --") {
			t.Errorf("netman %s lists flags with one dash:\n%s", strings.Join(args, " "), stdout)
		}
	}
	stdout, _, _ := run(t, nil, "help", "policies", "add")
	for _, want := range []string{"--protocol PROTOCOL", "--port PORT", "--api URL", "(default 8080)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("help policies add lacks %q:\n%s", want, stdout)
		}
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		stdout, stderr, code := run(t, nil, args...)
		if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "netman ") || !strings.Contains(stdout, "(go1.") {
			t.Errorf("netman %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, stdout, stderr)
		}
	}
}

func TestSuggest(t *testing.T) {
	words := []string{"policies", "tags", "whoami", "internal", "dev-token", "completion", "version", "help"}
	for _, c := range []struct{ word, want string }{
		{"polices", "policies"}, {"tgas", "tags"}, {"whoamii", "whoami"}, {"ver", "version"},
		{"x", ""}, {"frobnicate", ""}, {"in", "internal"}, {"tag", "tags"},
	} {
		if got := suggest(c.word, words); got != c.want {
			t.Errorf("suggest(%q) = %q, want %q", c.word, got, c.want)
		}
	}
}

// The completion scripts run in real shells: bash and zsh complete commands, subcommands
// and flags from what netman answers.
func TestCompletionScripts(t *testing.T) {
	bash := testenv.RequireCommand(t, "bash")
	bin := filepath.Join(t.TempDir(), "netman")
	build := exec.Command("go", "build", "-o", bin, "../cmd/netman")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	script, _, code := run(t, nil, "completion", "bash")
	if code != 0 {
		t.Fatal("completion bash failed")
	}
	for _, c := range []struct {
		words []string
		want  string
	}{
		{[]string{"netman", "pol"}, "policies"},
		{[]string{"netman", "policies", ""}, "list add remove"},
		{[]string{"netman", "policies", "add", "a", "b", "--p"}, "--port --protocol"},
		{[]string{"netman", "completion", ""}, "bash zsh"},
		{[]string{"netman", "help", "t"}, "tags"},
		{[]string{"netman", "--api", "http://x", "wh"}, "whoami"},
	} {
		prog := fmt.Sprintf("%s\nCOMP_WORDS=(%s); COMP_CWORD=%d; _netman_complete; echo \"${COMPREPLY[*]}\"",
			script, shellWords(bin, c.words), len(c.words)-1)
		runCompletion(t, c.words, c.want, bash, "--norc", "-c", prog)
	}
	zshScript, _, code := run(t, nil, "completion", "zsh")
	if code != 0 || !strings.HasPrefix(zshScript, "#compdef netman\n") {
		t.Fatalf("completion zsh:\n%s", zshScript)
	}
	// zsh's completion builtins work only inside its line editor: stand-ins print what
	// the script hands them, so the script's own code runs in a real zsh.
	zsh := testenv.RequireCommand(t, "zsh")
	for _, c := range []struct {
		words []string
		want  string
	}{
		{[]string{"netman", "pol"}, "policies"},
		{[]string{"netman", "policies", "add", "a", "b", "--p"}, "--port --protocol"},
		{[]string{"netman", "completion", ""}, "bash zsh"},
		{[]string{"netman", "dev-token", "--key", ""}, "FILES"},
	} {
		prog := fmt.Sprintf("compdef() { :; }\ncompadd() { shift; print -r -- \"$*\"; }\n_files() { print FILES; }\n%s\nwords=(%s); CURRENT=%d; _netman_complete",
			zshScript, shellWords(bin, c.words), len(c.words))
		runCompletion(t, c.words, c.want, zsh, "-f", "-c", prog)
	}
}

// shellWords quotes words for a shell array, the program's path first.
func shellWords(bin string, words []string) string {
	q := []string{fmt.Sprintf("%q", bin)}
	for _, w := range words[1:] {
		q = append(q, fmt.Sprintf("%q", w))
	}
	return strings.Join(q, " ")
}

// runCompletion runs a shell on a completion program and wants want printed.
func runCompletion(t *testing.T, words []string, want string, shell string, args ...string) {
	t.Helper()
	out, err := exec.Command(shell, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", shell, err, out)
	}
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("%s completing %q: %q, want %q", shell, words, got, want)
	}
}
