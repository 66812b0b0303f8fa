// Package policyclienttest runs a stand-in for the policy server's internal API behind real
// mutual TLS, for tests and benchmarks of clients that need to control what the server
// answers, when it fails, and to count what they asked. End-to-end tests use the real
// policy server instead.
package policyclienttest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"netman/lib/apiwire"
	"netman/lib/models"
	"netman/lib/mutualtls"
	"netman/lib/mutualtls/mutualtlstest"
)

// Server answers GET /networking/v0/internal/policies and /networking/v1/internal/policies
// from an in-memory list. Like the policy
// server, the lists carry an ETag (here the version of the whole list), answer 304 to a
// current If-None-Match and hold a request with a wait parameter until Set; unlike it,
// any Set changes every answer's ETag.
type Server struct {
	URL   string
	Files mutualtlstest.Files // CA, server and client certificates on disk

	mu       sync.Mutex
	policies []models.Policy
	version  int64
	down     bool
	noETags  bool
	changed  chan struct{} // closed by Set

	PolicyRequests atomic.Int64 // answered with policies (200)
	NotModified    atomic.Int64 // answered 304
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
	s := &Server{Files: files, policies: []models.Policy{}, version: 1, changed: make(chan struct{})}
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
	close(s.changed)
	s.changed = make(chan struct{})
}

// WithoutETags makes the lists answer without ETags and ignore If-None-Match and wait,
// as a server without them would.
func (s *Server) WithoutETags() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noETags = true
}

// SetDown makes every request fail with 503 (true) or be served again (false).
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	ps, version, down, noETags, changed := s.policies, s.version, s.down, s.noETags, s.changed
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if down {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":"database unavailable"}`))
		return
	}
	switch r.URL.Path {
	case apiwire.InternalPoliciesV0Path, apiwire.InternalPoliciesV1Path:
		etag := `"` + strconv.FormatInt(version, 10) + `"`
		if !noETags && r.Header.Get("If-None-Match") == etag {
			if wait, err := strconv.ParseFloat(r.URL.Query().Get(apiwire.WaitParam), 64); err == nil && wait > 0 {
				t := time.NewTimer(time.Duration(wait * float64(time.Second)))
				select {
				case <-changed:
					t.Stop()
					s.serve(w, r) // answer from the new list
					return
				case <-t.C:
				case <-r.Context().Done():
					t.Stop()
				}
			}
			s.NotModified.Add(1)
			w.Header().Set("ETag", etag)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if !noETags {
			w.Header().Set("ETag", etag)
		}
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
		_ = json.NewEncoder(w).Encode(encode(selected, r.URL.Path == apiwire.InternalPoliciesV1Path))
	default:
		http.NotFound(w, r)
	}
}

// encode writes ps in the v0 shape (port, plus ports for a range) or the v1 shape
// (ports always, and total_policies).
func encode(ps []models.Policy, v1 bool) any {
	if v1 {
		out := apiwire.InternalPoliciesV1{TotalPolicies: len(ps), Policies: make([]apiwire.InternalPolicyV1, len(ps))}
		for i, p := range ps {
			out.Policies[i] = apiwire.InternalPolicyV1{
				Destination: apiwire.InternalDestinationV1{
					ID: p.Destination.ID, Protocol: p.Destination.Protocol, Tag: p.Destination.Tag,
					Ports: apiwire.Ports{Start: p.Destination.Ports.Start, End: p.Destination.Ports.End},
				},
				Source: apiwire.InternalSource{ID: p.Source.ID, Tag: p.Source.Tag},
			}
		}
		return out
	}
	out := apiwire.InternalPoliciesV0{Policies: make([]apiwire.InternalPolicyV0, len(ps))}
	for i, p := range ps {
		d := apiwire.InternalDestinationV0{
			ID: p.Destination.ID, Port: p.Destination.Ports.Start, Protocol: p.Destination.Protocol, Tag: p.Destination.Tag,
		}
		if p.Destination.Ports.End != p.Destination.Ports.Start {
			d.Ports = &apiwire.Ports{Start: p.Destination.Ports.Start, End: p.Destination.Ports.End}
		}
		out.Policies[i] = apiwire.InternalPolicyV0{Destination: d, Source: apiwire.InternalSource{ID: p.Source.ID, Tag: p.Source.Tag}}
	}
	return out
}
