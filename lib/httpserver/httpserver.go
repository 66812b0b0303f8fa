// Package httpserver runs an http.Server as an ifrit member: the one runner of the
// policy server's and the agent's HTTP servers and of the tests that start them.
package httpserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"
)

// Runner serves Server on Listener until signalled. On a signal it stops accepting
// connections and lets in-flight requests finish (up to Drain); requests still running
// then are cut off.
type Runner struct {
	// Name says which server this is in the "listening" log line ("internal", "health").
	Name   string
	Server *http.Server
	// Listener is where Server serves; Run closes it. When nil, Run listens on
	// Server.Addr as it starts, so a member's port stays closed until the members
	// before it are ready (a health port opens only once what it reports on runs).
	// Tests pass a listener bound to port 0, so no port is picked and released first.
	Listener net.Listener
	Drain    time.Duration
	Logger   *slog.Logger
	// HandshakeFailed, when set, is told of each failed TLS handshake (the client's
	// address and the error) instead of a warning per failure in Logger, so the caller
	// can bound the lines and count them (ratelog.HandshakeLogger).
	HandshakeFailed func(remote, reason string)
}

// Run implements ifrit.Runner. Server.TLSConfig set means HTTPS.
func (r *Runner) Run(signals <-chan os.Signal, ready chan<- struct{}) error {
	ln := r.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", r.Server.Addr); err != nil {
			return fmt.Errorf("listening on %s: %w", r.Server.Addr, err)
		}
	}
	addr := ln.Addr().String()
	// Read before Serve starts: Serve sets up HTTP/2 in its goroutine by writing
	// Server.TLSConfig (a new one for a plain server; NextProtos and
	// PreferServerCipherSuites of a given one). So the server gets its own copy of the
	// caller's config, which may be shared with other servers or clients, the
	// handshakes another, and nothing here reads the field once serving began.
	useTLS := r.Server.TLSConfig != nil
	if useTLS {
		hs := r.Server.TLSConfig.Clone()
		if len(hs.NextProtos) == 0 {
			hs.NextProtos = []string{"h2", "http/1.1"}
		}
		r.Server.TLSConfig = hs.Clone()
		failed := r.HandshakeFailed
		if failed == nil {
			logger := r.Logger.With("server", r.Name)
			// Warn, as net/http logs it: an agent with a wrong certificate shows up here.
			failed = func(remote, reason string) { logger.Warn("TLS handshake error", "remote", remote, "error", reason) }
		}
		ln = newTLSListener(ln, hs, handshakeTimeout(r.Server), failed)
		withTLSState(r.Server)
	} else {
		ln = jsonErrorListener{ln}
	}
	errs := make(chan error, 1)
	go func() { errs <- r.Server.Serve(ln) }()
	// Tests that start a binary with port 0 learn its ports from this line.
	r.Logger.Info("listening", "server", r.Name, "addr", addr, "tls", useTLS)
	close(ready)
	select {
	case err := <-errs:
		return fmt.Errorf("serving %s: %w", addr, err)
	case <-signals:
		ctx, cancel := context.WithTimeout(context.Background(), r.Drain)
		defer cancel()
		if err := r.Server.Shutdown(ctx); err != nil {
			r.Server.Close()
			return fmt.Errorf("draining %s: %w", addr, err)
		}
		return nil
	}
}

// handshakeTimeout bounds a TLS handshake as net/http bounds it: by the time allowed
// to read the request headers.
func handshakeTimeout(s *http.Server) time.Duration {
	switch {
	case s.ReadHeaderTimeout > 0:
		return s.ReadHeaderTimeout
	case s.ReadTimeout > 0:
		return s.ReadTimeout
	}
	return 10 * time.Second
}
