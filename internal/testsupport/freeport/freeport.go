// Package freeport finds loopback TCP ports that nothing listens on, for tests that need
// a port where no server answers (a database that is down). Tests that start a server
// bind port 0 instead (lib/httpserver, internal/testsupport/serverlog): a port picked
// here and released may be taken by another process before the server binds it.
package freeport

import (
	"net"
	"testing"
)

// Take returns n distinct free ports on 127.0.0.1. All n listeners are open at once
// while choosing, so the ports differ from each other; another process may still take
// one before the caller binds it, which is why tests give each server its own set.
func Take(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	listeners := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// One returns a single free port on 127.0.0.1.
func One(t testing.TB) int {
	t.Helper()
	return Take(t, 1)[0]
}
