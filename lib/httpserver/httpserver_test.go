package httpserver_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tedsuo/ifrit"

	"netman/lib/httpserver"
)

// A signal stops new connections at once but lets a request in progress finish.
func TestRunnerDrainsOnSignal(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "done")
	})}
	srv.ReadHeaderTimeout = time.Second
	proc := ifrit.Invoke(&httpserver.Runner{Server: srv, Listener: ln, Drain: 10 * time.Second, Logger: slog.New(slog.DiscardHandler)})

	type reply struct {
		body string
		err  error
	}
	replies := make(chan reply, 1)
	go func() {
		resp, err := http.Get("http://" + addr)
		if err != nil {
			replies <- reply{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		replies <- reply{string(b), err}
	}()
	<-entered
	proc.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections 5s after the signal")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-proc.Wait():
		t.Fatalf("stopped with a request in flight: %v", err)
	default:
	}
	close(release)
	if r := <-replies; r.err != nil || r.body != "done" {
		t.Fatalf("in-flight request: %q, %v", r.body, r.err)
	}
	select {
	case err := <-proc.Wait():
		if err != nil {
			t.Fatalf("Run after draining: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("did not stop after draining")
	}
}

func TestRunnerReportsListenErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := &http.Server{Addr: ln.Addr().String(), Handler: http.NotFoundHandler()}
	proc := ifrit.Background(&httpserver.Runner{Server: srv, Drain: time.Second, Logger: slog.New(slog.DiscardHandler)})
	select {
	case err := <-proc.Wait():
		if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) {
			t.Fatalf("error %v does not name the address", err)
		}
	case <-time.After(5 * time.Second):
		proc.Signal(os.Interrupt)
		t.Fatal("started on a port in use")
	}
}
