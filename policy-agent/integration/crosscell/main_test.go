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
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"netman/internal/testsupport/foundation"
)

// The shared foundation: cells 1-3 run netman, cell 4 runs flanneld but no agent (a
// cell without netman).
const (
	cells       = 4
	noAgentCell = 4
)

var shared struct {
	// ctx ends on an interrupt, so a foundation still being built gives up and removes
	// what it made instead of finishing first.
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once
	f      *foundation.Foundation
	err    error
	skip   string
	mu     sync.Mutex
	bin    string
}

func TestMain(m *testing.M) {
	// An interrupt (Ctrl-C, go test's timeout) still removes the foundation.
	shared.ctx, shared.cancel = context.WithCancel(context.Background())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		shared.cancel()
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

// sharedFoundation builds the foundation on first use.
func sharedFoundation(t *testing.T) *foundation.Foundation {
	t.Helper()
	opts := foundation.Require(t)
	shared.once.Do(func() {
		shared.mu.Lock()
		defer shared.mu.Unlock()
		bin, err := os.MkdirTemp("", "netman-crosscell-bin-")
		if err != nil {
			shared.err = err
			return
		}
		shared.bin = bin
		if shared.err = foundation.Build(bin); shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(shared.ctx, 3*time.Minute)
		defer cancel()
		opts.Cells, opts.Replicas, opts.NoAgent = cells, 2, []int{noAgentCell}
		opts.Bin, opts.Progress = bin, os.Stderr
		shared.f, shared.err = foundation.New(ctx, opts)
	})
	if shared.err != nil {
		t.Fatalf("building the simulated foundation: %v", shared.err)
	}
	return shared.f
}
