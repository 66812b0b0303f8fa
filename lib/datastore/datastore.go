// Package datastore keeps the per-cell record of containers (handle -> {handle, ip,
// metadata}) that the wrapper CNI plugin writes and policy agents read.
//
// Files, all in the datastore's directory:
//
//	<path>          the JSON object mapping container handle to Container
//	<path>.version  a decimal counter, bumped on every write; readers compare it to skip
//	                unchanged data
//	<path>.lock     the flock that serializes writers; created once, never removed, so
//	                every writer always locks the same inode
//	<path>.tmp, <path>.version.tmp
//	                staging files for atomic replacement; only the lock holder writes them
//
// Writers take the lock for the whole read-modify-write, write the new content to the
// staging file, fsync it and rename it over the old one, then do the same for the
// version file and finally fsync the directory. Readers take no lock: a rename is atomic,
// so they see either the previous or the next complete file, never a partial one.
//
// The data file is renamed into place before the version is bumped. A reader that reads
// the version and then the data therefore holds data at least as new as that version,
// and never caches a version whose data it has not seen.
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

// Suffixes of the files kept next to the datastore.
const (
	VersionSuffix = ".version"
	LockSuffix    = ".lock"
	tmpSuffix     = ".tmp"
)

// Read returns every record in the datastore at path. A missing datastore is empty (no
// container has been created on this cell yet); an undecodable one is an ErrCorrupt error.
func Read(path string) (map[string]Container, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]Container{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading datastore: %w", err)
	}
	records, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("datastore %s: %w", path, err)
	}
	return records, nil
}

// Version returns the datastore's write counter: 0 while nothing was ever written, and a
// larger number after every write. It reads one small file.
func Version(path string) (uint64, error) {
	b, err := os.ReadFile(path + VersionSuffix)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading datastore version: %w", err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: version file %s: %q", ErrCorrupt, path+VersionSuffix, b)
	}
	return v, nil
}

// Snapshot returns the version and the records that are at least as new as it. Agents
// remember the version and call Snapshot again only when Version reports a different one.
func Snapshot(path string) (map[string]Container, uint64, error) {
	v, err := Version(path)
	if err != nil {
		return nil, 0, err
	}
	records, err := Read(path)
	if err != nil {
		return nil, 0, err
	}
	return records, v, nil
}

// Decode parses datastore content. It accepts exactly one JSON object whose values are
// records filed under their own handle with an IP address (or none); anything else is
// ErrCorrupt. Numbers in metadata are kept as json.Number so they survive a rewrite
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
