package httpserver_test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tedsuo/ifrit"

	"netman/lib/httpserver"
	"netman/lib/mutualtls/mutualtlstest"
)

// The answers net/http writes itself, before any handler runs, are JSON errors like
// every other error of the server.
// Over TLS too (HTTP/1.1; HTTP/2 has its own framing).
func TestRequestsNetHTTPRefusesGetJSONErrors(t *testing.T) {
	ca := mutualtlstest.NewAuthority(t, "test CA")
	cert := ca.IssueTLS(t, mutualtlstest.ServerLeaf())
	pool := ca.Pool()
	t.Run("plain", func(t *testing.T) { testNetHTTPErrors(t, nil, net.Dial) })
	t.Run("TLS", func(t *testing.T) {
		testNetHTTPErrors(t, &tls.Config{Certificates: []tls.Certificate{cert}}, func(network, addr string) (net.Conn, error) {
			return tls.Dial(network, addr, &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}})
		})
	})
}

func testNetHTTPErrors(t *testing.T, serverTLS *tls.Config, dial func(network, addr string) (net.Conn, error)) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{MaxHeaderBytes: 1 << 10, ReadHeaderTimeout: 5 * time.Second, TLSConfig: serverTLS,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "handled") })}
	proc := ifrit.Invoke(&httpserver.Runner{Name: "test", Server: srv, Listener: ln, Drain: 5 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	defer proc.Signal(syscall.SIGTERM)

	cases := []struct {
		name, request string
		status        int
		want          string
	}{
		{"headers too large", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 8<<10) + "\r\n\r\n", 431, "Request Header Fields Too Large"},
		{"no Host header", "GET / HTTP/1.1\r\n\r\n", 400, "missing required Host header"},
		{"malformed request line", "GET\r\n\r\n", 400, "Bad Request"},
		{"malformed header", "GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400, "Bad Request"},
		{"unknown transfer encoding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: zip\r\n\r\n", 501, "Unsupported transfer encoding"},
		{"after a good request on the same connection", "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n", 400, "missing required Host header"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, tc.request); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Count(tc.request, "GET") == 2 { // the good one first
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "handled" {
					t.Fatalf("first response %q", b)
				}
				if resp, err = http.ReadResponse(br, nil); err != nil {
					t.Fatal(err)
				}
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("%d %q %q, want %d with a JSON error", resp.StatusCode, resp.Header.Get("Content-Type"), b, tc.status)
			}
			var e struct{ Error string }
			if err := json.Unmarshal(b, &e); err != nil || !strings.Contains(e.Error, tc.want) {
				t.Fatalf("body %q, want a JSON error containing %q", b, tc.want)
			}
		})
	}
}
