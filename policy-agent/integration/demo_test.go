package integration_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"netman/internal/testsupport/testenv"
	"netman/internal/testsupport/testproc"
)

// TestDemoInterruptedLeavesNothing runs scripts/demo (what `make demo` runs), refuses a
// second copy while it runs, and interrupts it the way Ctrl-C does (SIGINT to its whole
// process group) in the middle of the enforcement step: everything it created must be
// gone afterwards.
func TestDemoInterruptedLeavesNothing(t *testing.T) {
	cniPath := requireE2E(t)
	for _, c := range []string{"psql", "curl", "openssl", "flock"} {
		testenv.RequireCommand(t, c)
	}
	dir := t.TempDir()
	build(t, dir, "cmd/wrapper", "cmd/policy-server", "cmd/policy-agent", "cmd/netman")
	demo := filepath.Join(repoRoot(t), "scripts", "demo")
	// Without DATABASE_URL the demo starts a Postgres of its own, which must go too.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_URL=") {
			env = append(env, kv)
		}
	}
	env = append(env, "NETMAN_DEMO_BIN="+dir, "CNI_PATH="+cniPath)

	cmd := exec.Command(demo)
	cmd.Env = env
	run := testproc.Start(t, "demo", cmd)
	const marker = "agent running, no policy"
	run.WaitOutput(t, fmt.Sprintf("%q", marker), 3*time.Minute, func(out string) bool { return strings.Contains(out, marker) })

	second := exec.Command(demo)
	second.Env = env
	b, err := second.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(b), "another netman demo is running") {
		t.Errorf("a second demo while one runs: %v, %q; want exit 1 saying another one runs", err, b)
	}

	err = run.Interrupt(t, time.Minute)
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Errorf("interrupted demo: %v, want exit status 130", err)
	}
	text := run.Output()
	if !strings.Contains(text, "logs are in /tmp/netman-demo-logs.") {
		t.Error("the interrupted demo did not say where the logs are")
	}

	// What it created, by the names it printed.
	var dirs []string
	for _, re := range []string{`certificates in (/tmp/netman-demo\.\w+)/certs`, `throwaway Postgres on \S+ \((/tmp/netman-pg\.\w+)\)`} {
		m := regexp.MustCompile(re).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("demo output lacks %s", re)
		}
		dirs = append(dirs, m[1])
	}
	for _, d := range append(dirs, "/etc/netns/netman-demo-cell") {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there after the interrupt (%v)", d, err)
		}
	}
	netns, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(netns), "netman-demo") {
		t.Errorf("network namespaces left behind:\n%s", netns)
	}
	// Every process of the run named the work or the Postgres directory on its command line.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		line := strings.ReplaceAll(string(b), "\x00", " ")
		for _, d := range dirs {
			if strings.Contains(line, d) {
				t.Errorf("process still running after the interrupt: %s", line)
			}
		}
	}
}
