// Package serverlog reads the addresses a netman server binary listens on from its JSON
// log ("listening" lines naming the server and its address), so tests start binaries
// with every port 0: the kernel picks the ports as the server binds them, and no test
// picks a free port and releases it for another process to take first.
package serverlog

import (
	"bytes"
	"encoding/json"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Log is the output of one process: give it as the command's Stdout and Stderr. It is
// safe for the process to write while a test reads it. The zero value is ready.
type Log struct {
	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
	addrs   map[string]string
	changed chan struct{} // closed when addrs grows
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.scan(l.partial[:i])
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

func (l *Log) scan(line []byte) {
	var e struct {
		Msg    string `json:"msg"`
		Server string `json:"server"`
		Addr   string `json:"addr"`
	}
	if json.Unmarshal(line, &e) != nil || e.Msg != "listening" || e.Server == "" {
		return
	}
	if l.addrs == nil {
		l.addrs = map[string]string{}
	}
	l.addrs[e.Server] = e.Addr
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
}

// String returns everything written so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

// Addr waits until the process logs that server listens and returns its host:port. It
// fails the test when exited is closed (nil: never) or timeout passes first.
func (l *Log) Addr(t testing.TB, server string, exited <-chan struct{}, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		addr, ok := l.addrs[server]
		if l.changed == nil {
			l.changed = make(chan struct{})
		}
		changed := l.changed
		l.mu.Unlock()
		if ok {
			return addr
		}
		select {
		case <-changed:
		case <-exited:
			t.Fatalf("the process exited before its %s server listened:\n%s", server, l.String())
		case <-deadline:
			t.Fatalf("the %s server did not listen within %v:\n%s", server, timeout, l.String())
		}
	}
}

// Port is the port of Addr.
func (l *Log) Port(t testing.TB, server string, exited <-chan struct{}, timeout time.Duration) int {
	t.Helper()
	addr := l.Addr(t, server, exited, timeout)
	_, port, err := net.SplitHostPort(addr)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil {
		t.Fatalf("the %s server logged address %q", server, addr)
	}
	return n
}
