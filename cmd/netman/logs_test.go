package main_test

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// logLines returns the server's JSON log lines whose msg is msg.
func (s *system) logLines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(s.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// The real server under a storm of failed TLS handshakes on its internal listener
// writes a bounded number of structured lines naming the listener, and counts every
// failure in its metrics; external requests get an access line naming the token's
// subject.
func TestServerLogsAreBoundedAndNameTheCaller(t *testing.T) {
	s := start(t, nil)
	internal := strings.TrimPrefix(s.internalURL, "https://")
	const storm = 200
	for range storm {
		// No client certificate: the server refuses the handshake.
		c, err := tls.Dial("tcp", internal, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
		if err == nil {
			_, _ = c.Read(make([]byte, 1))
			c.Close()
		}
	}
	metrics := func() string {
		resp, err := http.Get(s.debugURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	counted := regexp.MustCompile(`netman_server_tls_handshake_errors_total\{server="internal"\} (\d+)`)
	var n int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if m := counted.FindStringSubmatch(metrics()); m != nil {
			n, _ = strconv.Atoi(m[1])
		}
		if n >= storm || time.Now().After(deadline) {
			break
		}
	}
	if n != storm {
		t.Errorf("netman_server_tls_handshake_errors_total{server=\"internal\"} = %d, want %d", n, storm)
	}
	lines := s.logLines(t, "TLS handshake failed")
	t.Logf("%d failed handshakes: %d log lines, %d counted in the metric", storm, len(lines), n)
	// The burst of 5, plus at most one per 10 s of the storm.
	if len(lines) < 1 || len(lines) > 7 {
		t.Errorf("%d log lines for %d failed handshakes, want at most 7", len(lines), storm)
	}
	for _, l := range lines {
		if l["server"] != "internal" || l["level"] != "WARN" || l["remote"] == nil || l["error"] == "" {
			t.Errorf("handshake line %v", l)
		}
	}
	if strings.Contains(s.logs.String(), "http: TLS handshake error") {
		t.Error("an unstructured handshake line is still logged")
	}

	// An agent's poll: the line names the agent by its certificate.
	s.mustRun(t, "internal", "policies", "--url", s.internalURL, "--ca", s.certs.CACert, "--cert", s.certs.ClientCert, "--key", s.certs.ClientKey)
	var polled bool
	for _, l := range s.logLines(t, "request") {
		if l["server"] == "internal" && l["route"] == "policies_v0" {
			polled = true
			if l["client_cn"] != "policy-agent" || l["status"] != float64(200) || l["level"] != "INFO" {
				t.Errorf("internal access line %v", l)
			}
		}
	}
	if !polled {
		t.Errorf("no access line for an internal poll:\n%s", s.logs.String())
	}

	s.mustRun(t, "whoami")
	var found bool
	for _, l := range s.logLines(t, "request") {
		if l["server"] == "external" && l["route"] == "external_v1_whoami" {
			found = true
			if l["token_subject"] != "admin" || l["user_name"] != "admin" || l["client_id"] != "netman-dev" || l["duration_ms"] == nil || l["level"] != "INFO" {
				t.Errorf("external access line %v", l)
			}
		}
	}
	if !found {
		t.Errorf("no access line for netman whoami:\n%s", s.logs.String())
	}
}
