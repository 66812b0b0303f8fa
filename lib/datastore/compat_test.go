package datastore_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"netman/internal/testsupport/testenv"
	"netman/lib/datastore"
)

// The files are what silk's wrapper writes and what its vxlan-policy-agent and
// datastore syncer read: <path>_version holds a bare number strconv.Atoi accepts, every
// file is 0600, and records are the plain handle -> {handle, ip, metadata} map.
func TestFilesAreSilkCompatible(t *testing.T) {
	s, path := newStore(t)
	if _, err := s.Add(context.Background(), record("a", "10.255.0.2")); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path + "_version")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := strconv.Atoi(string(raw)); err != nil || n != 2 {
		t.Fatalf("_version = %q: Atoi gives %d, %v; want 2 (silk counts an unwritten store as 1)", raw, n, err)
	}
	for _, p := range []string{path, path + "_version", path + "_lock"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
}

// silk's agent creates the data, _version and _lock files empty when it starts, before
// any container exists. That is an empty datastore, not a corrupt one.
func TestEmptyFilesCreatedByAnAgent(t *testing.T) {
	s, path := newStore(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "_version", path + "_lock"} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	records, v, err := datastore.Snapshot(path)
	if err != nil || len(records) != 0 || v != datastore.Unwritten {
		t.Fatalf("Snapshot = %v, %d, %v; want no records at version %d", records, v, err, datastore.Unwritten)
	}
	if _, err := s.Add(context.Background(), record("a", "10.255.0.2")); err != nil {
		t.Fatalf("Add after an agent created the files: %v", err)
	}
	if v, err := datastore.Version(path); err != nil || v != datastore.Unwritten+1 {
		t.Fatalf("Version = %d, %v; want %d", v, err, datastore.Unwritten+1)
	}
	// Files earlier netman versions wrote end the number with a newline.
	if err := os.WriteFile(path+"_version", []byte("7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := datastore.Version(path); err != nil || v != 7 {
		t.Fatalf("Version of %q = %d, %v; want 7", "7\n", v, err)
	}
}

// holdSilkLock takes the exclusive flock on <path>_lock as silk's syncer does.
func holdSilkLock(t *testing.T, path string) (release func()) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path+"_lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	return func() { f.Close() }
}

// blockedFor is how long an operation that must wait for a lock is watched before the
// test concludes it waits. A lock that is ignored shows within microseconds.
const blockedFor = 150 * time.Millisecond

// A writer waits for the flock silk's writers hold while they rewrite the file in place,
// so neither loses the other's record.
func TestWriterWaitsForSilkWriters(t *testing.T) {
	s, path := newStore(t)
	if _, err := s.Add(context.Background(), record("a", "10.255.0.2")); err != nil {
		t.Fatal(err)
	}
	release := holdSilkLock(t, path)
	done := make(chan error, 1)
	go func() {
		_, err := s.Add(context.Background(), record("b", "10.255.0.3"))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Add returned (%v) while silk's lock was held", err)
	case <-time.After(blockedFor):
	}
	// silk's syncer: truncate and rewrite in place, bump the version, unlock.
	silk := `{"a":{"handle":"a","ip":"10.255.0.2","metadata":{"app_id":"app-a"}},"s":{"handle":"s","ip":"10.255.0.9","metadata":null}}` + "\n"
	if err := os.WriteFile(path, []byte(silk), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+"_version", []byte("3"), 0o600); err != nil {
		t.Fatal(err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	records, v, err := datastore.Snapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"a", "b", "s"} {
		if _, ok := records[h]; !ok {
			t.Errorf("record %s lost; have %v", h, records)
		}
	}
	if v != 4 {
		t.Errorf("version %d, want 4 (silk's 3, then this write)", v)
	}
}

// A reader waits while a silk writer holds the lock with the file half rewritten.
func TestReaderWaitsForSilkWriters(t *testing.T) {
	_, path := newStore(t)
	release := holdSilkLock(t, path)
	if err := os.WriteFile(path, []byte(`{"a":{"handle":"a","ip":"10.2`), 0o600); err != nil {
		t.Fatal(err)
	}
	type result struct {
		records map[string]datastore.Container
		err     error
	}
	done := make(chan result, 1)
	go func() {
		r, _, err := datastore.Snapshot(path)
		done <- result{r, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("Snapshot returned (%v, %v) while a writer held the lock", r.records, r.err)
	case <-time.After(blockedFor):
	}
	if err := os.WriteFile(path, []byte(`{"a":{"handle":"a","ip":"10.255.0.2","metadata":{}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	release()
	r := <-done
	if r.err != nil || r.records["a"].IP != "10.255.0.2" {
		t.Fatalf("Snapshot = %v, %v", r.records, r.err)
	}
}

func TestAddDropsOtherRecordsWithTheSameIP(t *testing.T) {
	ctx := context.Background()
	s, path := newStore(t)
	for _, c := range []datastore.Container{record("old", "10.255.0.7"), record("other", "10.255.0.8")} {
		if _, err := s.Add(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	dropped, err := s.Add(ctx, record("new", "10.255.0.7"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dropped) != 1 || dropped[0] != "old" {
		t.Fatalf("dropped %v, want [old]", dropped)
	}
	records, _ := datastore.Read(path)
	if _, ok := records["old"]; ok || records["new"].IP != "10.255.0.7" || records["other"].IP != "10.255.0.8" {
		t.Fatalf("records %v", records)
	}
	// Re-adding the same handle drops nothing.
	if dropped, err := s.Add(ctx, record("new", "10.255.0.7")); err != nil || len(dropped) != 0 {
		t.Fatalf("re-add: dropped %v, %v", dropped, err)
	}
}

func TestMetadataSizeLimit(t *testing.T) {
	ctx := context.Background()
	s, path := newStore(t)
	// {"k":"..."} is 8 bytes around the value.
	fits := map[string]any{"k": strings.Repeat("x", datastore.MaxMetadataBytes-8)}
	if _, err := s.Add(ctx, datastore.Container{Handle: "fits", IP: "10.0.0.1", Metadata: fits}); err != nil {
		t.Fatalf("metadata of exactly %d bytes: %v", datastore.MaxMetadataBytes, err)
	}
	over := map[string]any{"k": strings.Repeat("x", datastore.MaxMetadataBytes-7)}
	_, err := s.Add(ctx, datastore.Container{Handle: "over", IP: "10.0.0.2", Metadata: over})
	if !errors.Is(err, datastore.ErrMetadataTooLarge) || !strings.Contains(err.Error(), "64 KiB") {
		t.Fatalf("Add with %d bytes of metadata: %v, want ErrMetadataTooLarge", datastore.MaxMetadataBytes+1, err)
	}
	if records, _ := datastore.Read(path); len(records) != 1 {
		t.Fatalf("records %d, want only the one that fits", len(records))
	}
}

// Operations on one handle wait for each other; other handles do not wait.
func TestLockHandle(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	unlock, err := s.LockHandle(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	other := make(chan error, 1)
	go func() {
		u, err := s.LockHandle(ctx, "two")
		if err == nil {
			u()
		}
		other <- err
	}()
	select {
	case err := <-other:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("another handle waited for the lock of the first")
	}
	same := make(chan error, 1)
	go func() {
		// Another Store, as another wrapper process would have.
		s2, _ := datastore.New(s.Path(), datastore.Options{})
		u, err := s2.LockHandle(ctx, "one")
		if err == nil {
			u()
		}
		same <- err
	}()
	select {
	case err := <-same:
		t.Fatalf("the same handle was locked twice (%v)", err)
	case <-time.After(blockedFor):
	}
	unlock()
	if err := <-same; err != nil {
		t.Fatal(err)
	}
}

// The writer runs as root. A symbolic link planted at any datastore path is a clear
// error, and the file it points to is neither read, written, renamed nor chowned.
func TestPlantedSymlinksAreRefused(t *testing.T) {
	for _, suffix := range []string{"", ".tmp", "_version", "_version.tmp", "_lock", "_handle_locks"} {
		t.Run("at <datastore>"+suffix, func(t *testing.T) {
			ctx := context.Background()
			s, path := newStore(t)
			if _, err := s.Add(ctx, record("a", "10.0.0.1")); err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(t.TempDir(), "precious")
			if err := os.WriteFile(target, []byte("precious"), 0o640); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Stat(target)
			link := path + suffix
			os.Remove(link)
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			var err error
			if suffix == "_handle_locks" {
				_, err = s.LockHandle(ctx, "b")
			} else {
				_, err = s.Add(ctx, record("b", "10.0.0.2"))
			}
			if !errors.Is(err, datastore.ErrNotRegular) || !strings.Contains(err.Error(), link) || !strings.Contains(err.Error(), "symbolic link") {
				t.Fatalf("got %v, want an error naming %s as a symbolic link", err, link)
			}
			after, _ := os.Stat(target)
			content, _ := os.ReadFile(target)
			if string(content) != "precious" || after.Mode() != before.Mode() || !after.ModTime().Equal(before.ModTime()) ||
				after.Sys().(*syscall.Stat_t).Uid != before.Sys().(*syscall.Stat_t).Uid {
				t.Fatalf("the link's target was changed: %q %v", content, after.Mode())
			}
			if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Fatalf("the link was replaced or removed (%v)", err)
			}
		})
	}
}

// A hard link planted at a staging or lock path (root can make one to any file) is never
// chowned or written through: a stale staging name is unlinked and made anew, and an
// existing lock file is only locked.
func TestPlantedHardLinksAreNotChowned(t *testing.T) {
	testenv.RequireRoot(t) // chown; the symlink cases above run for everyone
	for _, suffix := range []string{".tmp", "_version.tmp", "_lock"} {
		t.Run("at <datastore>"+suffix, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			path := filepath.Join(dir, "store.json")
			s, err := datastore.New(path, datastore.Options{Owner: "65534", Group: "65534"})
			if err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(dir, "precious")
			if err := os.WriteFile(target, []byte("precious"), 0o640); err != nil {
				t.Fatal(err)
			}
			if err := os.Link(target, path+suffix); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Add(ctx, record("a", "10.0.0.1")); err != nil {
				t.Fatal(err)
			}
			fi, _ := os.Stat(target)
			content, _ := os.ReadFile(target)
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 || string(content) != "precious" {
				t.Fatalf("target now %d:%d %q", st.Uid, st.Gid, content)
			}
			if records, err := datastore.Read(path); err != nil || len(records) != 1 {
				t.Fatalf("Read = %v, %v", records, err)
			}
		})
	}
}

// A lock file from before datastore_file_owner was set stays root's; an agent running as
// the configured owner still reads the datastore.
func TestReaderWithoutAccessToTheLock(t *testing.T) {
	testenv.RequireRoot(t)
	dir, err := os.MkdirTemp("", "datastore-reader-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "store.json")
	if err := os.WriteFile(path+"_lock", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := datastore.New(path, datastore.Options{Owner: "65534", Group: "65534"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(context.Background(), record("a", "10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	// The test binary, copied where user 65534 may run it.
	bin := filepath.Join(dir, "reader")
	exe, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), readerEnv+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Fatalf("reader as 65534: %v: %s", err, out)
	}
}
