package datastore

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// LockHandle serializes whole operations on one container handle across processes: the
// runtime may run a DEL while the ADD of the same container is still in its delegate,
// and the two must not interleave (the ADD would record an IP the DEL already released).
// Operations on other handles do not wait.
//
// The locks are open-file-description byte-range locks (F_OFD_SETLKW), one byte per
// handle, at an offset hashed from the handle, in the single file <path>_handle_locks.
// That needs no file per container, so nothing is left behind or removed while another
// process waits on it; a collision of two handles' hashes (2^-62) would only make them
// wait for each other. A process that dies releases its locks with its descriptors.
//
// Waiting is not bounded by ctx: the lock holder is another ADD or DEL, which the
// runtime bounds. The caller must call the returned function to release the lock.
func (s *Store) LockHandle(ctx context.Context, handle string) (func(), error) {
	if handle == "" {
		return nil, errors.New("locking container: empty handle")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
		return nil, fmt.Errorf("creating datastore directory: %w", err)
	}
	path := s.path + HandleLockSuffix
	f, _, err := openOrCreate(path)
	if err != nil {
		return nil, fmt.Errorf("opening container lock: %w", err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: handleOffset(handle), Len: 1}
	for {
		err = unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLKW, &lk)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking container %s: %w", handle, err)
	}
	// Closing the descriptor releases the lock.
	return func() { f.Close() }, nil
}

// handleOffset maps a handle to a byte offset below 2^62, far from overflowing off_t.
func handleOffset(handle string) int64 {
	h := fnv.New64a()
	h.Write([]byte(handle))
	return int64(h.Sum64() >> 2)
}
