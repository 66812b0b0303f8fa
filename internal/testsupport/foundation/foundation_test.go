package foundation_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"netman/internal/testsupport/foundation"
	"netman/internal/testsupport/testproc"
)

// leftovers lists what still carries prefix: namespaces, /etc/netns entries, temp
// directories, the claim file, processes naming its directory.
func leftovers(t *testing.T, prefix string) []string {
	t.Helper()
	var left []string
	netns, _ := os.ReadDir("/run/netns")
	for _, n := range netns {
		if strings.HasPrefix(n.Name(), prefix) {
			left = append(left, "netns "+n.Name())
		}
	}
	for _, pattern := range []string{"/etc/netns/" + prefix + "*", filepath.Join(os.TempDir(), prefix+"*"), "/run/netman-foundation/" + prefix} {
		m, _ := filepath.Glob(pattern)
		left = append(left, m...)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if line := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(line, "/"+prefix) {
			left = append(left, "process "+line)
		}
	}
	return left
}

var prefixRE = regexp.MustCompile(`foundation (nmf[0-9a-f]{6})`)

// TestNewRemovesEverythingOnFailure: a policy server that cannot start (a stand-in
// binary that exits at once: a failure the real one does not produce on demand) fails
// New after the underlay, etcd and the database exist; none of them may remain.
func TestNewRemovesEverythingOnFailure(t *testing.T) {
	opts := foundation.Require(t)
	opts.Bin = t.TempDir()
	if err := foundation.Build(opts.Bin); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(opts.Bin, "policy-server"), []byte("#!/bin/sh\necho refusing to start >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	opts.Cells = 1
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	f, err := foundation.New(ctx, opts)
	if err == nil {
		f.Close()
		t.Fatal("New succeeded with a policy server that exits")
	}
	if !strings.Contains(err.Error(), "refusing to start") {
		t.Errorf("the error does not carry the policy server's log: %v", err)
	}
	m := prefixRE.FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("the error does not name the foundation: %v", err)
	}
	if left := leftovers(t, m[1]); len(left) > 0 {
		t.Errorf("left behind after a failed New: %q", left)
	}
}

// TestInterruptRemovesEverything runs the demo's overlay tool and interrupts it (SIGINT to
// its process group, as Ctrl-C does) once its foundation is up: it must exit 130 and
// leave nothing of the foundation behind.
func TestInterruptRemovesEverything(t *testing.T) {
	opts := foundation.Require(t)
	bin := t.TempDir()
	if err := foundation.Build(bin); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", bin+"/", "./internal/tools/overlaydemo")
	build.Dir = foundation.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	demo := testproc.Start(t, "overlaydemo", exec.Command(filepath.Join(bin, "overlaydemo"), "-root", opts.Root, "-bin", bin, "-cni-path", opts.CNIPath, "-overlay-bin", opts.OverlayBin))
	var prefix string
	demo.WaitOutput(t, "foundation up", 3*time.Minute, func(out string) bool {
		if m := prefixRE.FindStringSubmatch(out); m != nil {
			prefix = m[1]
		}
		return prefix != "" && strings.Contains(out, "foundation "+prefix+" is up")
	})
	if len(leftovers(t, prefix)) == 0 {
		t.Fatal("the running foundation has nothing with its prefix: the check below would prove nothing")
	}
	err := demo.Interrupt(t, time.Minute)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Errorf("interrupted overlaydemo: %v, want exit status 130", err)
	}
	if left := leftovers(t, prefix); len(left) > 0 {
		t.Errorf("left behind after the interrupt: %q", left)
	}
}
