package datastore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// fileMode is the mode of every file the datastore creates: the records name apps,
// spaces and orgs, so only the owner (and root) may read them, as with silk's files.
const fileMode = 0o600

// ErrNotRegular marks a datastore, sidecar or staging path that holds a symbolic link
// or anything else but a regular file. The writer runs as root; it refuses such a path
// rather than follow it, so nothing outside the datastore is ever read, written or
// chowned through a planted link.
var ErrNotRegular = errors.New("not a regular file")

func notRegular(path, what string) error {
	return fmt.Errorf("%w: %s is %s; refusing to follow or replace it (remove it if nobody meant to put it there)", ErrNotRegular, path, what)
}

// openRegular opens path without following a symbolic link in its last component and
// checks that it is a regular file. O_NONBLOCK keeps a FIFO planted at the path from
// blocking the open; it changes nothing for a regular file.
func openRegular(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, perm)
	if errors.Is(err, syscall.ELOOP) {
		return nil, notRegular(path, "a symbolic link")
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, notRegular(path, "a "+fi.Mode().Type().String()+" file")
	}
	return f, nil
}

// readRegular reads the regular file at path, never through a symbolic link.
func readRegular(path string) ([]byte, error) {
	f, err := openRegular(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// openOrCreate opens the regular file at path read-write, creating it when missing, and
// reports whether this call created it: only a file the caller created may be chowned,
// so a hard link planted at the path can never pass its target to another owner.
func openOrCreate(path string) (*os.File, bool, error) {
	for range 3 {
		// The file exists on every call but a cell's first, so open it first.
		f, err := openRegular(path, os.O_RDWR, 0)
		if err == nil {
			return f, false, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, false, err
		}
		f, err = openRegular(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, fileMode)
		if err == nil {
			return f, true, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, false, err
		}
		// Created by another process between the two opens; open that one.
	}
	return nil, false, fmt.Errorf("opening %s: it keeps appearing and disappearing", path)
}

// createStaging creates the staging file at path exclusively. A regular file already
// there is what a writer killed before its rename left behind (the caller holds the
// datastore lock, so no live writer owns it): it is removed, which only unlinks that
// name. Anything else at the path is refused.
func createStaging(path string) (*os.File, error) {
	f, err := openRegular(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if !errors.Is(err, os.ErrExist) {
		return f, err
	}
	fi, lerr := os.Lstat(path)
	if lerr != nil {
		return nil, lerr
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return nil, notRegular(path, "a symbolic link")
	}
	if !fi.Mode().IsRegular() {
		return nil, notRegular(path, "a "+fi.Mode().Type().String()+" file")
	}
	if err := os.Remove(path); err != nil {
		return nil, fmt.Errorf("removing a stale staging file: %w", err)
	}
	return openRegular(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
}
