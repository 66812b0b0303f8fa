package ratelog_test

import (
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"netman/internal/testsupport/syncbuf"
	"netman/lib/ratelog"
)

// A storm of real failed handshakes against a real TLS server: the log gets the burst
// and then nothing more within the interval, every line is structured and names the
// listener, and every failure is counted.
func TestHandshakeStormGivesBoundedLines(t *testing.T) {
	var logs syncbuf.Buffer
	var failures, suppressed atomic.Int64
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = ratelog.ServerErrorLog(logger, "internal", &ratelog.Limiter{Burst: 5, Every: time.Hour}, func(s bool) {
		failures.Add(1)
		if s {
			suppressed.Add(1)
		}
	})
	srv.StartTLS()
	defer srv.Close()
	const storm = 100
	for range storm {
		// The client does not trust the server's certificate: the handshake fails on
		// both sides.
		c, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{ServerName: "example.com"})
		if err == nil {
			c.Close()
			t.Fatal("handshake succeeded")
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for failures.Load() < storm && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if failures.Load() != storm || suppressed.Load() != storm-5 {
		t.Fatalf("%d failures reported (%d suppressed), want %d (%d)", failures.Load(), suppressed.Load(), storm, storm-5)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d log lines for %d failed handshakes, want 5:\n%s", len(lines), storm, logs.String())
	}
	for _, l := range lines {
		var e struct {
			Level, Msg, Server, Remote, Error string
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		if _, _, err := net.SplitHostPort(e.Remote); e.Level != "WARN" || e.Msg != "TLS handshake failed" || e.Server != "internal" || err != nil || e.Error == "" {
			t.Errorf("line %s", l)
		}
	}
}
