package httpserver_test

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tedsuo/ifrit"

	"netman/internal/testsupport/syncbuf"
	"netman/lib/httpserver"
	"netman/lib/mutualtls/mutualtlstest"
)

// Serve sets up HTTP/2 by writing Server.TLSConfig from its own goroutine. The runner
// must neither read that field afterwards nor let net/http write the caller's config,
// which the caller may be using at the same time (here: reading it while the server
// starts, as a second server or a client built from it would). Run with -race: the
// race detector fails the test where an assertion could not.
func TestRunnerLeavesTheCallersTLSConfigAlone(t *testing.T) {
	ca := mutualtlstest.NewAuthority(t, "test CA")
	cert := ca.IssueTLS(t, mutualtlstest.ServerLeaf())
	shared := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}

	for _, tc := range []struct {
		name string
		tls  *tls.Config
	}{{"plain", nil}, {"TLS", shared}} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{TLSConfig: tc.tls, ReadHeaderTimeout: 5 * time.Second,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) })}
			logs := &syncbuf.Buffer{}
			stop := make(chan struct{})
			var readers sync.WaitGroup
			readers.Add(1)
			go func() { // the caller keeps using its config while the server starts
				defer readers.Done()
				for {
					select {
					case <-stop:
						return
					default:
						_ = len(shared.NextProtos)
						_ = shared.PreferServerCipherSuites
					}
				}
			}()
			proc := ifrit.Invoke(&httpserver.Runner{Name: tc.name, Server: srv, Listener: ln, Drain: 5 * time.Second,
				Logger: slog.New(slog.NewJSONHandler(logs, nil))})
			defer proc.Signal(syscall.SIGTERM)

			scheme, client := "http", &http.Client{Timeout: 10 * time.Second}
			if tc.tls != nil {
				scheme = "https"
				client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, ForceAttemptHTTP2: true}
			}
			resp, err := client.Get(scheme + "://" + ln.Addr().String() + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			close(stop)
			readers.Wait()

			wantProto, wantTLS := "HTTP/1.1", `"tls":false`
			if tc.tls != nil {
				// HTTP/2 is offered over TLS, on the server's copy of the config.
				wantProto, wantTLS = "HTTP/2.0", `"tls":true`
			}
			if string(body) != wantProto {
				t.Errorf("served %q, want %s", body, wantProto)
			}
			if !strings.Contains(logs.String(), wantTLS) {
				t.Errorf("listening line does not say %s: %s", wantTLS, logs)
			}
			if shared.NextProtos != nil || shared.PreferServerCipherSuites {
				t.Errorf("the caller's config was written: NextProtos %q", shared.NextProtos)
			}
		})
	}
}

// Handshakes run beside the accept loop: a client that connects and never says hello
// neither holds up others nor the shutdown.
func TestStalledHandshakeBlocksNobody(t *testing.T) {
	ca := mutualtlstest.NewAuthority(t, "test CA")
	cert := ca.IssueTLS(t, mutualtlstest.ServerLeaf())
	pool := ca.Pool()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ReadHeaderTimeout: time.Minute,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	proc := ifrit.Invoke(&httpserver.Runner{Name: "tls", Server: srv, Listener: ln, Drain: 5 * time.Second, Logger: slog.New(slog.DiscardHandler)})

	stalled, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatalf("a request behind a stalled handshake: %v", err)
	}
	resp.Body.Close()
	client.CloseIdleConnections()
	proc.Signal(syscall.SIGTERM)
	select {
	case err := <-proc.Wait():
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled handshake held up the shutdown")
	}
	if n, err := stalled.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the stalled connection is still open (read %d bytes)", n)
	}
}
