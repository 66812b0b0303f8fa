// Package crosscell_test proves enforcement across cells on a simulated foundation
// (internal/testsupport/foundation): real flanneld with the vxlan backend and GBP, real
// etcd, the real wrapper with the flannel delegate, the policy agent on every cell, and
// policy servers on Postgres reached over mutual TLS. The tests of this binary share one
// foundation (building one takes seconds and several processes per cell); each test uses
// apps of its own, so they do not see each other's policies.
package crosscell_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"netman/internal/testsupport/foundation"
	"netman/internal/testsupport/testenv"
	"netman/lib/rules/rulestest"
)

// The shared foundation: cells 1-3 run netman, cell 4 runs flanneld but no agent (a
// cell without netman).
const (
	cells       = 4
	noAgentCell = 4
)

var shared struct {
	once sync.Once
	f    *foundation.Foundation
	err  error
	skip string
	mu   sync.Mutex
	bin  string
}

func TestMain(m *testing.M) {
	// An interrupt (Ctrl-C, go test's timeout) still removes the foundation.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		closeShared()
		os.Exit(130)
	}()
	code := m.Run()
	closeShared()
	os.Exit(code)
}

func closeShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.f != nil {
		if err := shared.f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "removing the foundation:", err)
		}
		shared.f = nil
	}
	if shared.bin != "" {
		os.RemoveAll(shared.bin)
	}
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// overlayBin is where `make deps` put flanneld and etcd.
func overlayBin() string {
	if d := os.Getenv("OVERLAY_BIN"); d != "" {
		return d
	}
	return filepath.Join(repoRoot(), ".cache", "overlay", "bin")
}

// requireFoundation stops the test unless the machine can build a foundation.
func requireFoundation(t testing.TB) string {
	t.Helper()
	rulestest.RequireEnforcement(t)
	for _, c := range []string{"ip", "go", "ping", "sysctl"} {
		testenv.RequireCommand(t, c)
	}
	if os.Getenv("DATABASE_URL") == "" {
		testenv.Unavailable(t, "needs Postgres: DATABASE_URL is not set")
	}
	for _, b := range []string{"flanneld", "etcd"} {
		if _, err := os.Stat(filepath.Join(overlayBin(), b)); err != nil {
			testenv.Unavailable(t, b+" is not in "+overlayBin()+" (`make deps` builds it)")
		}
	}
	return testenv.CNIPath(t, "flannel", "bridge", "host-local", "loopback")
}

// sharedFoundation builds the foundation on first use.
func sharedFoundation(t *testing.T) *foundation.Foundation {
	t.Helper()
	cniPath := requireFoundation(t)
	shared.once.Do(func() {
		shared.mu.Lock()
		defer shared.mu.Unlock()
		bin, err := os.MkdirTemp("", "netman-crosscell-bin-")
		if err != nil {
			shared.err = err
			return
		}
		shared.bin = bin
		cmd := exec.Command("go", "build", "-o", bin+"/", "./cmd/wrapper", "./cmd/policy-agent", "./cmd/policy-server", "./cmd/netman")
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			shared.err = fmt.Errorf("building: %v\n%s", err, out)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		shared.f, shared.err = foundation.New(ctx, foundation.Options{
			Cells: cells, Replicas: 2, NoAgent: []int{noAgentCell},
			DatabaseURL: os.Getenv("DATABASE_URL"), Root: repoRoot(), Bin: bin,
			CNIPath: cniPath, OverlayBin: overlayBin(), Progress: os.Stderr,
		})
	})
	if shared.err != nil {
		t.Fatalf("building the simulated foundation: %v", shared.err)
	}
	return shared.f
}
