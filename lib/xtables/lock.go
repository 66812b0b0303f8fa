// Package xtables is how netman's iptables writers (the wrapper, the policy agent) change
// a cell's rules: Lock takes the flock they share with the container networker around a
// change, so none of them sees or overwrites another's half-made change (iptables' own
// xtables lock, -w, is taken as well by each command; this one spans a writer's whole
// read-modify-write), and Restore applies one iptables-restore --noflush transaction.
package xtables

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
)

// DefaultLockFile is garden-external-networker's iptables_lock_file on a cell: the lock
// the wrapper and the policy agent take unless configured otherwise.
const DefaultLockFile = "/var/vcap/data/garden-cni/iptables.lock"

// Lock takes an exclusive flock on path, waiting until ctx ends, and returns the function
// that releases it. The file is created when missing and never removed: other holders may
// have it open. A symbolic link at path is refused: a root process must not create or
// lock a file someone else pointed it at.
func Lock(ctx context.Context, path string) (func(), error) {
	if path == "" {
		return nil, errors.New("iptables lock file: no path given")
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening iptables lock file: %w", err)
	}
	// A blocking flock, not a polling loop: 250 container creations waiting at once
	// must not spin the cell's CPUs.
	got := make(chan error, 1)
	go func() {
		for {
			err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
			if !errors.Is(err, syscall.EINTR) {
				got <- err
				return
			}
		}
	}()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		return func() { f.Close() }, nil
	case <-ctx.Done():
		// The waiting flock cannot be interrupted; whoever gets it releases it at once.
		go func() {
			<-got
			f.Close()
		}()
		return nil, fmt.Errorf("waiting for iptables lock %s: %w", path, ctx.Err())
	}
}
