package datastore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"netman/lib/datastore"
)

// BenchmarkAdd measures one ADD's datastore work on a cell that already runs 249
// containers: lock, read, decode, encode, write, fsync, rename, version bump.
func BenchmarkAdd(b *testing.B) {
	ctx := context.Background()
	s := busyStore(b)
	b.ResetTimer()
	for i := range b.N {
		h := fmt.Sprintf("bench-%d", i)
		if _, err := s.Add(ctx, record(h, "10.255.1.1")); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Remove(ctx, h); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRead is an agent's poll of a 250-record datastore that changed.
func BenchmarkRead(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "store.json")
	s, _ := datastore.New(path, datastore.Options{})
	for i := range 250 {
		if _, err := s.Add(ctx, record(fmt.Sprintf("c-%03d", i), fmt.Sprintf("10.255.0.%d", i+2))); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		if _, err := datastore.Read(path); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAddHandleLock is what the per-container lock adds to an ADD's datastore work
// on a cell running 249 containers: the same Add and Remove, without and with
// LockHandle around them, and LockHandle alone (the fsyncs make the first two noisy on a
// shared disk; the third is the lock's own cost). Run them side by side:
//
//	go test -run '^$' -bench AddHandleLock -count 5 ./lib/datastore/
func BenchmarkAddHandleLock(b *testing.B) {
	for _, locked := range []bool{false, true} {
		name := "without-handle-lock"
		if locked {
			name = "with-handle-lock"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			s := busyStore(b)
			b.ResetTimer()
			for i := range b.N {
				h := fmt.Sprintf("bench-%d", i)
				unlock := func() {}
				if locked {
					var err error
					if unlock, err = s.LockHandle(ctx, h); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := s.Add(ctx, record(h, "10.255.1.1")); err != nil {
					b.Fatal(err)
				}
				if _, err := s.Remove(ctx, h); err != nil {
					b.Fatal(err)
				}
				unlock()
			}
		})
	}
}

func BenchmarkHandleLockAlone(b *testing.B) {
	ctx := context.Background()
	s, err := datastore.New(filepath.Join(b.TempDir(), "store.json"), datastore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range b.N {
		unlock, err := s.LockHandle(ctx, fmt.Sprintf("bench-%d", i))
		if err != nil {
			b.Fatal(err)
		}
		unlock()
	}
}

// busyStore is a datastore holding 249 containers, as on a full cell.
func busyStore(b *testing.B) *datastore.Store {
	s, err := datastore.New(filepath.Join(b.TempDir(), "store.json"), datastore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 249 {
		if _, err := s.Add(b.Context(), record(fmt.Sprintf("other-%03d", i), fmt.Sprintf("10.255.0.%d", i+2))); err != nil {
			b.Fatal(err)
		}
	}
	return s
}
