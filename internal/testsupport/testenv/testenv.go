// Package testenv decides what a test does when the machine lacks something it needs.
//
// On a developer's machine a missing database, root or CNI plugin skips the test with the
// command that provides it. In CI (CI=true) the same gap fails the test: CI runs
// `make test`, which provides all of them, so a skip there would hide a broken setup.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// InCI reports whether the tests run in CI, where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable skips the test, or fails it in CI, saying what is missing.
func Unavailable(t testing.TB, what string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s (CI=true: this must not be skipped; run the suite with `make test`)", what)
	}
	t.Skipf("%s; run the suite with `make test` to include this test", what)
}

// RequireRoot stops the test unless it runs as root (network namespaces, iptables).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root")
	}
}

// RequireCommand stops the test unless the named program is on PATH.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, "needs the `"+name+"` command")
	}
	return p
}

// CNIPath returns the directory of the real containernetworking plugin binaries
// (CNI_PATH, as set by the Makefile), checking that the named plugins are there.
func CNIPath(t testing.TB, plugins ...string) string {
	t.Helper()
	dir := os.Getenv("CNI_PATH")
	if dir == "" {
		Unavailable(t, "CNI_PATH is not set (the Makefile sets it to the plugins `make deps` installs)")
	}
	for _, p := range plugins {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			Unavailable(t, "CNI plugin "+p+" is not in CNI_PATH="+dir)
		}
	}
	return dir
}
