package foundation

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"netman/internal/testsupport/testenv"
	"netman/lib/rules/rulestest"
)

// RepoRoot is the netman checkout this package is in.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// OverlayBin is where `make deps` puts flanneld and etcd (OVERLAY_BIN, as the Makefile
// sets it, or the checkout's .cache/overlay/bin).
func OverlayBin() string {
	if d := os.Getenv("OVERLAY_BIN"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(), ".cache", "overlay", "bin")
}

// Require stops the test unless the machine can build a foundation (root, iproute2,
// iptables, Postgres, the CNI plugins, flanneld and etcd), and returns Options with
// everything but the binaries, the cells and the replicas filled in.
func Require(t testing.TB) Options {
	t.Helper()
	rulestest.RequireEnforcement(t)
	for _, c := range []string{"ip", "go", "ping", "sysctl", "openssl"} {
		testenv.RequireCommand(t, c)
	}
	if os.Getenv("DATABASE_URL") == "" {
		testenv.Unavailable(t, "needs Postgres: DATABASE_URL is not set")
	}
	for _, b := range []string{"flanneld", "etcd"} {
		if _, err := os.Stat(filepath.Join(OverlayBin(), b)); err != nil {
			testenv.Unavailable(t, b+" is not in "+OverlayBin()+" (`make deps` builds it)")
		}
	}
	return Options{
		DatabaseURL: os.Getenv("DATABASE_URL"), Root: RepoRoot(), OverlayBin: OverlayBin(),
		CNIPath: testenv.CNIPath(t, "flannel", "bridge", "host-local", "loopback"),
	}
}

// Build compiles the binaries a foundation runs into dir, in one go invocation.
func Build(dir string) error {
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/wrapper", "./cmd/policy-agent", "./cmd/policy-server", "./cmd/netman")
	cmd.Dir = RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building netman's binaries: %w\n%s", err, out)
	}
	return nil
}
