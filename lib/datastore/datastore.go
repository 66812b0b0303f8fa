// Package datastore keeps the per-cell record of containers (handle -> {handle, ip,
// metadata}) that the wrapper CNI plugin writes and policy agents read. The format and
// the file names are silk's (cf-networking's container metadata store), so agents
// written for silk read it, and silk's datastore syncer can share it.
//
// Files, all in the datastore's directory, all mode 0600 (owner and group configurable):
//
//	<path>          the JSON object mapping container handle to Container; empty means no
//	                records (silk's agent creates it empty when it starts)
//	<path>_version  a bare decimal counter without a newline, bumped on every write;
//	                readers compare it to skip unchanged data. Missing or empty means no
//	                write yet, which counts as 1 as silk's readers count it
//	<path>_lock     the flock that serializes writers (exclusive) and, here, readers
//	                (shared); created once, never removed, so everyone locks the same inode
//	<path>.tmp, <path>_version.tmp
//	                staging files for atomic replacement; only the lock holder writes them
//	<path>_handle_locks
//	                byte-range locks, one per container handle, that serialize the ADD and
//	                DEL of one container (Store.LockHandle)
//
// Writers take the lock for the whole read-modify-write, write the new content to the
// staging file, fsync it and rename it over the old one, then do the same for the
// version file and finally fsync the directory. silk's writers rewrite the file in place
// instead, which is why readers take the lock shared: they see either the previous or the
// next complete file, never a partial one.
//
// The data file is renamed into place before the version is bumped. A reader that reads
// the version and then the data therefore holds data at least as new as that version,
// and never caches a version whose data it has not seen.
//
// Every file is opened without following a symbolic link, staging files are created
// exclusively, and only files the writer created are chowned (through their descriptor):
// the writer runs as root in a directory others may have prepared.
package datastore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Container is one record: a container handle, its overlay IP and the metadata the
// runtime passed when it was created (app, space, org, policy group and any other keys).
type Container struct {
	Handle   string         `json:"handle"`
	IP       string         `json:"ip"`
	Metadata map[string]any `json:"metadata"`
}

// ErrCorrupt marks a datastore or version file whose content cannot be decoded. Such a
// file is reported, never treated as empty: doing so would drop every record on the next
// write.
var ErrCorrupt = errors.New("datastore file is corrupt")

// Suffixes of the files kept next to the datastore (silk's names).
const (
	VersionSuffix    = "_version"
	LockSuffix       = "_lock"
	HandleLockSuffix = "_handle_locks"
	tmpSuffix        = ".tmp"
)

// Unwritten is the version of a datastore nothing was written to yet.
const Unwritten = 1

// Read returns every record in the datastore at path. A missing or empty datastore has
// no records (no container has been created on this cell yet); an undecodable one is an
// ErrCorrupt error.
func Read(path string) (map[string]Container, error) {
	records, _, err := read(path, false)
	return records, err
}

// Version returns the datastore's write counter: Unwritten while nothing was ever
// written, and a larger number after every write. It reads one small file and takes no
// lock; a version file silk's writer is rewriting in place reads as empty for a moment,
// which only makes the reader look once more.
func Version(path string) (uint64, error) {
	b, err := readRegular(path + VersionSuffix)
	if errors.Is(err, os.ErrNotExist) {
		return Unwritten, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading datastore version: %w", err)
	}
	if len(b) == 0 {
		return Unwritten, nil
	}
	// Earlier netman versions ended the number with a newline; silk's readers refuse
	// that, readers here accept it.
	v, err := strconv.ParseUint(strings.TrimSuffix(string(b), "\n"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: version file %s: %q", ErrCorrupt, path+VersionSuffix, b)
	}
	return v, nil
}

// Snapshot returns the version and the records that are at least as new as it. Agents
// remember the version and call Snapshot again only when Version reports a different one.
func Snapshot(path string) (map[string]Container, uint64, error) {
	return read(path, true)
}

// read reads the records (and the version) under the shared lock, so that a writer
// rewriting the file in place is never seen halfway. Without a lock file nobody has
// written under the lock yet and there is nothing to wait for.
func read(path string, withVersion bool) (map[string]Container, uint64, error) {
	lock, err := openRegular(path+LockSuffix, os.O_RDONLY, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case errors.Is(err, os.ErrPermission):
		// A lock file made before datastore_file_owner was set stays root's (the writer
		// chowns only files it creates). Reading without the lock is still safe: netman's
		// writes are renames, and a file silk's writer is rewriting in place is a strict
		// prefix of a JSON object, which never decodes.
	case err != nil:
		return nil, 0, fmt.Errorf("opening datastore lock: %w", err)
	default:
		defer lock.Close()
		if err := flock(lock, unix.LOCK_SH); err != nil {
			return nil, 0, fmt.Errorf("locking datastore: %w", err)
		}
	}
	var v uint64
	if withVersion {
		if v, err = Version(path); err != nil {
			return nil, 0, err
		}
	}
	b, err := readRegular(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]Container{}, v, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading datastore: %w", err)
	}
	records, err := Decode(b)
	if err != nil {
		return nil, 0, fmt.Errorf("datastore %s: %w", path, err)
	}
	return records, v, nil
}

// Decode parses datastore content. It accepts exactly one JSON object whose values are
// records filed under their own handle with an IP address (or none), or nothing at all
// (no records); anything else is ErrCorrupt. Numbers in metadata are kept as json.Number so they survive a rewrite
// digit for digit.
func Decode(b []byte) (map[string]Container, error) {
	return decode(b, func(c Container) (string, string) { return c.Handle, c.IP })
}

func decodeRaw(b []byte) (map[string]rawContainer, error) {
	return decode(b, func(c rawContainer) (string, string) { return c.Handle, c.IP })
}

// decode parses the record map and checks each record's handle and IP, which fields
// reads out of the record type.
func decode[T any](b []byte, fields func(T) (handle, ip string)) (map[string]T, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return map[string]T{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var records map[string]T
	if err := dec.Decode(&records); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrCorrupt)
	}
	if records == nil {
		return nil, fmt.Errorf("%w: not a JSON object", ErrCorrupt)
	}
	for key, c := range records {
		handle, ip := fields(c)
		if err := checkRecord(key, handle, ip); err != nil {
			return nil, err
		}
	}
	return records, nil
}

func checkRecord(key, handle, ip string) error {
	if key == "" {
		return fmt.Errorf("%w: record with an empty handle", ErrCorrupt)
	}
	if handle != key {
		return fmt.Errorf("%w: record %q has handle %q", ErrCorrupt, key, handle)
	}
	if ip != "" {
		if _, err := netip.ParseAddr(ip); err != nil {
			return fmt.Errorf("%w: record %q: ip %q: %v", ErrCorrupt, key, ip, err)
		}
	}
	return nil
}

// Encode renders records in the datastore format.
func Encode(records map[string]Container) ([]byte, error) {
	if records == nil {
		records = map[string]Container{}
	}
	b, err := json.Marshal(records)
	if err != nil {
		return nil, fmt.Errorf("encoding datastore: %w", err)
	}
	return b, nil
}
