package datastore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// Options are the optional settings of a Store.
type Options struct {
	// Owner and Group, user and group names or numeric IDs, are given to the datastore,
	// version and lock files so that an agent running as that user can read them.
	// Empty leaves the files owned by the writer.
	Owner string
	Group string
}

// Store changes the datastore at one path. Every change is a locked read-modify-write,
// so any number of processes can use their own Store on the same path at once.
type Store struct {
	path     string
	uid, gid int // -1: leave as is
}

// New returns a Store for the datastore at path. It resolves the owner and group but
// touches no file: the first write creates them.
func New(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("datastore path is empty")
	}
	s := &Store{path: path, uid: -1, gid: -1}
	var err error
	if opts.Owner != "" {
		if s.uid, err = lookupID(opts.Owner, user.Lookup, func(u *user.User) string { return u.Uid }); err != nil {
			return nil, fmt.Errorf("datastore file owner %q: %w", opts.Owner, err)
		}
	}
	if opts.Group != "" {
		if s.gid, err = lookupID(opts.Group, user.LookupGroup, func(g *user.Group) string { return g.Gid }); err != nil {
			return nil, fmt.Errorf("datastore file group %q: %w", opts.Group, err)
		}
	}
	return s, nil
}

func lookupID[T any](name string, lookup func(string) (T, error), id func(T) string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil && n >= 0 {
		return n, nil
	}
	v, err := lookup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(id(v))
}

// Path is the datastore file this Store writes.
func (s *Store) Path() string { return s.path }

// MaxMetadataBytes is the largest metadata a record may hold, encoded as JSON. CF's
// metadata is a few hundred bytes; the limit only stops a runtime bug or an attacker
// from making every later read and write of the datastore slow and large.
const MaxMetadataBytes = 64 << 10

// ErrMetadataTooLarge is returned for metadata over MaxMetadataBytes.
var ErrMetadataTooLarge = fmt.Errorf("metadata is larger than %d bytes (64 KiB)", MaxMetadataBytes)

// EncodeMetadata renders metadata as a record holds it, refusing more than
// MaxMetadataBytes.
func EncodeMetadata(m map[string]any) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding metadata: %w", err)
	}
	if len(b) > MaxMetadataBytes {
		return nil, fmt.Errorf("%w: %d bytes", ErrMetadataTooLarge, len(b))
	}
	return b, nil
}

// Add records c, replacing an earlier record with the same handle, and drops every
// other record holding c's IP: the runtime hands out an address only once it was
// released, so such a record is stale, and keeping it would let a reader give the new
// container the old one's policies. Add returns the handles of the records it dropped.
func (s *Store) Add(ctx context.Context, c Container) ([]string, error) {
	if c.Handle == "" {
		return nil, errors.New("adding datastore record: empty handle")
	}
	var ip netip.Addr
	if c.IP != "" {
		var err error
		if ip, err = netip.ParseAddr(c.IP); err != nil {
			return nil, fmt.Errorf("adding datastore record: %w", err)
		}
	}
	meta, err := EncodeMetadata(c.Metadata)
	if err != nil {
		return nil, fmt.Errorf("adding datastore record %s: %w", c.Handle, err)
	}
	var dropped []string
	err = s.update(ctx, func(records map[string]rawContainer) bool {
		dropped = dropped[:0]
		if ip.IsValid() {
			for h, r := range records {
				if h == c.Handle || r.IP == "" {
					continue
				}
				// Decode has checked every IP.
				if other, _ := netip.ParseAddr(r.IP); other == ip {
					dropped = append(dropped, h)
					delete(records, h)
				}
			}
		}
		records[c.Handle] = rawContainer{Handle: c.Handle, IP: c.IP, Metadata: meta}
		return true
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(dropped)
	return dropped, nil
}

// Remove deletes the record of handle and reports whether there was one. Removing a
// record that is not there changes nothing and writes nothing.
func (s *Store) Remove(ctx context.Context, handle string) (bool, error) {
	var found bool
	err := s.update(ctx, func(records map[string]rawContainer) bool {
		_, found = records[handle]
		delete(records, handle)
		return found
	})
	return found, err
}

// Retain keeps only the records whose handle keep accepts and returns the handles it
// removed.
func (s *Store) Retain(ctx context.Context, keep func(handle string) bool) ([]string, error) {
	var removed []string
	err := s.update(ctx, func(records map[string]rawContainer) bool {
		for h := range records {
			if !keep(h) {
				removed = append(removed, h)
				delete(records, h)
			}
		}
		return len(removed) > 0
	})
	return removed, err
}

// Get returns the record of handle, read as Read does.
func (s *Store) Get(handle string) (Container, bool, error) {
	records, err := Read(s.path)
	if err != nil {
		return Container{}, false, err
	}
	c, ok := records[handle]
	return c, ok, nil
}

// rawContainer is a record whose metadata stays undecoded: the ADD and DEL hot path
// checks each record's handle and IP but has no reason to build every container's
// metadata map only to encode it again.
type rawContainer struct {
	Handle   string    `json:"handle"`
	IP       string    `json:"ip"`
	Metadata rawObject `json:"metadata"`
}

// rawObject holds a JSON object or null verbatim. It rejects every other value, as
// decoding into Container.Metadata does, so writers accept exactly the files Read does
// (including ones that repeat a key with different kinds of value).
type rawObject []byte

func (r *rawObject) UnmarshalJSON(b []byte) error {
	if b[0] != '{' && string(b) != "null" {
		return fmt.Errorf("metadata is not an object: %.20s", b)
	}
	*r = append((*r)[:0], b...)
	return nil
}

func (r rawObject) MarshalJSON() ([]byte, error) {
	if len(r) == 0 {
		return []byte("null"), nil
	}
	return r, nil
}

// update runs change on the current records while holding the datastore lock and
// writes the result when change reports a modification. It enforces the same format
// rules as Decode; a corrupt datastore leaves every file as it was.
func (s *Store) update(ctx context.Context, change func(map[string]rawContainer) bool) error {
	return s.locked(ctx, func() error {
		b, err := readRegular(s.path)
		records := map[string]rawContainer{}
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return fmt.Errorf("reading datastore: %w", err)
		default:
			if records, err = decodeRaw(b); err != nil {
				return fmt.Errorf("datastore %s: %w", s.path, err)
			}
		}
		if !change(records) {
			return nil
		}
		out, err := json.Marshal(records)
		if err != nil {
			return fmt.Errorf("encoding datastore: %w", err)
		}
		return s.write(out)
	})
}

func (s *Store) locked(ctx context.Context, f func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return f()
}

// write replaces the data file and bumps the version; the caller holds the lock.
//
// Each file is fsynced before its rename and the directory after both, so a power loss
// leaves the old or the new content of each, complete. The version file is synced too:
// after a crash a half-written version file would stop every reader until someone
// repaired it, which is worth far more than the ~0.3 ms it costs.
func (s *Store) write(content []byte) error {
	version, err := Version(s.path)
	if err != nil {
		return err
	}
	if err := s.replace(s.path, content); err != nil {
		return fmt.Errorf("writing datastore: %w", err)
	}
	// A bare decimal, no newline: silk's readers parse it with strconv.Atoi.
	if err := s.replace(s.path+VersionSuffix, strconv.AppendUint(nil, version+1, 10)); err != nil {
		return fmt.Errorf("writing datastore version: %w", err)
	}
	// One directory fsync makes both renames durable.
	return syncDir(filepath.Dir(s.path))
}

// lock takes the exclusive flock on the lock file, creating the file (and the
// directory) the first time. silk's wrapper, agent and datastore syncer lock the same
// file the same way. A process that dies holding it releases it with its descriptors.
func (s *Store) lock() (func(), error) {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
		return nil, fmt.Errorf("creating datastore directory: %w", err)
	}
	f, created, err := openOrCreate(s.path + LockSuffix)
	if err != nil {
		return nil, fmt.Errorf("opening datastore lock: %w", err)
	}
	if created {
		if err := s.chown(f); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := flock(f, unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking datastore: %w", err)
	}
	// Closing the descriptor releases the lock.
	return func() { f.Close() }, nil
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// replace atomically puts content at path. The staging file is created exclusively
// (never through a link) and chowned through its own descriptor, so the owner only
// ever changes on a file this writer made; only the lock holder writes it, so a fixed
// name is safe, and what a writer killed halfway left behind is removed by the next.
func (s *Store) replace(path string, content []byte) error {
	tmp := path + tmpSuffix
	f, err := createStaging(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		return err
	}
	if err := s.chown(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (s *Store) chown(f *os.File) error {
	if s.uid < 0 && s.gid < 0 {
		return nil
	}
	if err := f.Chown(s.uid, s.gid); err != nil {
		return fmt.Errorf("setting owner of %s: %w", f.Name(), err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing datastore directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing datastore directory: %w", err)
	}
	return nil
}
