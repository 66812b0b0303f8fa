// Package policyclienttest runs a stand-in for the policy server's internal API behind real
// mutual TLS, for tests and benchmarks of clients that need to control what the server
// answers, when it fails, and to count what they asked. End-to-end tests use the real
// policy server instead.
package policyclienttest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"netman/lib/models"
	"netman/lib/mutualtls"
	"netman/lib/mutualtls/mutualtlstest"
)

// Server answers GET /networking/v0/internal/policies and
// /networking/v1/internal/policies_last_updated from an in-memory list.
type Server struct {
	URL   string
	Files mutualtlstest.Files // CA, server and client certificates on disk

	mu       sync.Mutex
	policies []models.Policy
	version  int64
	down     bool
	noSignal bool

	PolicyRequests      atomic.Int64
	LastUpdatedRequests atomic.Int64
}

// NewServer starts a server with certificates written into a temp dir; it stops when the
// test ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	files, _ := mutualtlstest.WriteFiles(t, t.TempDir())
	cfg, err := mutualtls.ServerConfig(files.ServerCert, files.ServerKey, files.CACert)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Files: files, policies: []models.Policy{}, version: 1}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	hs.TLS = cfg
	hs.StartTLS()
	t.Cleanup(hs.Close)
	s.URL = hs.URL
	return s
}

// Set replaces the policies and bumps the version.
func (s *Server) Set(ps []models.Policy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policies = ps
	s.version++
}

// SetDown makes every request fail with 503 (true) or be served again (false).
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// WithoutChangeSignal makes policies_last_updated answer 404, as a server without it would.
func (s *Server) WithoutChangeSignal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noSignal = true
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	ps, version, down, noSignal := s.policies, s.version, s.down, s.noSignal
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if down {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":"database unavailable"}`))
		return
	}
	switch r.URL.Path {
	case "/networking/v1/internal/policies_last_updated":
		s.LastUpdatedRequests.Add(1)
		if noSignal {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(version)
	case "/networking/v0/internal/policies", "/networking/v1/internal/policies":
		s.PolicyRequests.Add(1)
		values, filtered := r.URL.Query()["id"]
		want := map[string]bool{}
		for _, v := range values {
			for _, id := range strings.Split(v, ",") {
				want[strings.TrimSpace(id)] = true
			}
		}
		var selected []models.Policy
		for _, p := range ps {
			if !filtered || want[p.Source.ID] || want[p.Destination.ID] {
				selected = append(selected, p)
			}
		}
		_ = json.NewEncoder(w).Encode(encode(selected, strings.HasPrefix(r.URL.Path, "/networking/v1/")))
	default:
		http.NotFound(w, r)
	}
}

// encode writes ps in the v0 shape (port, plus ports for a range) or the v1 shape
// (ports always, and total_policies).
func encode(ps []models.Policy, v1 bool) any {
	type ports struct {
		Start int `json:"start"`
		End   int `json:"end"`
	}
	type dst struct {
		ID       string `json:"id"`
		Port     int    `json:"port,omitempty"`
		Ports    *ports `json:"ports,omitempty"`
		Protocol string `json:"protocol"`
		Tag      string `json:"tag"`
	}
	type src struct {
		ID  string `json:"id"`
		Tag string `json:"tag"`
	}
	type policy struct {
		Destination dst `json:"destination"`
		Source      src `json:"source"`
	}
	out := []policy{}
	for _, p := range ps {
		d := dst{ID: p.Destination.ID, Protocol: p.Destination.Protocol, Tag: p.Destination.Tag}
		pr := &ports{Start: p.Destination.Ports.Start, End: p.Destination.Ports.End}
		if !v1 {
			d.Port = pr.Start
			if pr.End == pr.Start {
				pr = nil
			}
		}
		d.Ports = pr
		out = append(out, policy{Destination: d, Source: src{ID: p.Source.ID, Tag: p.Source.Tag}})
	}
	if v1 {
		return map[string]any{"total_policies": len(out), "policies": out}
	}
	return map[string]any{"policies": out}
}
