package policyclient_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"netman/lib/models"
	"netman/lib/mutualtls"
	"netman/lib/mutualtls/mutualtlstest"
	"netman/lib/policyclient"
	"netman/lib/policyclient/policyclienttest"
)

func client(t *testing.T, url string, f mutualtlstest.Files, timeout time.Duration) *policyclient.Client {
	t.Helper()
	cfg, err := mutualtls.ClientConfig(f.ClientCert, f.ClientKey, f.CACert)
	if err != nil {
		t.Fatal(err)
	}
	c, err := policyclient.New(url, cfg, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// twoPolicies are a single-port tcp policy and a udp port-range policy.
func twoPolicies() (ab, cd models.Policy) {
	ab = models.Policy{
		Source:      models.Source{ID: "app-a", Tag: "0001"},
		Destination: models.Destination{ID: "app-b", Tag: "0002", Protocol: "tcp", Ports: models.Ports{Start: 8080, End: 8080}},
	}
	cd = models.Policy{
		Source:      models.Source{ID: "app-c", Tag: "0003"},
		Destination: models.Destination{ID: "app-d", Tag: "0004", Protocol: "udp", Ports: models.Ports{Start: 9000, End: 9010}},
	}
	return ab, cd
}

// Poll selects by id, reads a port range as a range and asks nothing for no ids.
func TestPollSelectsByID(t *testing.T) {
	srv := policyclienttest.NewServer(t)
	c := client(t, srv.URL, srv.Files, 2*time.Second)
	ab, cd := twoPolicies()
	srv.Set([]models.Policy{ab, cd})

	tests := []struct {
		ids  []string
		want []models.Policy
	}{
		{nil, []models.Policy{}},
		{[]string{"app-b"}, []models.Policy{ab}},
		{[]string{"app-a", "app-d"}, []models.Policy{ab, cd}}, // the range comes back as a range
		{[]string{"nobody"}, []models.Policy{}},
	}
	for _, tt := range tests {
		a, err := c.Poll(t.Context(), tt.ids, "", 0)
		if err != nil {
			t.Fatalf("Poll(%v): %v", tt.ids, err)
		}
		if got := a.Policies; !slices.Equal(got, tt.want) {
			t.Errorf("Poll(%v) = %+v, want %+v", tt.ids, got, tt.want)
		}
	}
	if n := srv.PolicyRequests.Load(); n != 3 {
		t.Errorf("server saw %d policy requests, want 3 (none for an empty id list)", n)
	}
}

// List asks every selection of both versions and hands back the server's answer too.
func TestList(t *testing.T) {
	srv := policyclienttest.NewServer(t)
	c := client(t, srv.URL, srv.Files, 2*time.Second)
	ab, cd := twoPolicies()
	srv.Set([]models.Policy{ab, cd})
	tests := []struct {
		name     string
		q        policyclient.Query
		want     []models.Policy
		bodyPart string
	}{
		{"v0 all", policyclient.Query{All: true}, []models.Policy{ab, cd}, `"port":9000,"ports":{"start":9000,"end":9010}`},
		{"v0 filtered", policyclient.Query{IDs: []string{"app-d"}}, []models.Policy{cd}, `"port":9000`},
		{"v0 no ids asks and gets none", policyclient.Query{IDs: nil}, []models.Policy{}, `{"policies":[]}`},
		{"v1 all", policyclient.Query{V1: true, All: true}, []models.Policy{ab, cd}, `"total_policies":2`},
		{"v1 filtered", policyclient.Query{V1: true, IDs: []string{"app-a"}}, []models.Policy{ab}, `"ports":{"start":8080,"end":8080}`},
	}
	for _, tt := range tests {
		before := srv.PolicyRequests.Load()
		got, body, err := c.List(t.Context(), tt.q)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: List = %+v, want %+v", tt.name, got, tt.want)
		}
		if !strings.Contains(string(body), tt.bodyPart) {
			t.Errorf("%s: body %s does not contain %s", tt.name, body, tt.bodyPart)
		}
		if srv.PolicyRequests.Load() != before+1 {
			t.Errorf("%s: the server was not asked exactly once", tt.name)
		}
	}
}

func TestErrorsAreReported(t *testing.T) {
	srv := policyclienttest.NewServer(t)
	c := client(t, srv.URL, srv.Files, 2*time.Second)
	srv.SetDown(true)
	_, err := c.Poll(t.Context(), []string{"a"}, "", 0)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "database unavailable") {
		t.Errorf("Poll from a failing server = %v, want the status and the server's message", err)
	}
}

func TestEveryCallHasATimeout(t *testing.T) {
	files, _ := mutualtlstest.WriteFiles(t, t.TempDir())
	cfg, err := mutualtls.ServerConfig(files.ServerCert, files.ServerKey, files.CACert)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	hs.TLS = cfg
	hs.StartTLS()
	defer hs.Close()
	defer close(release)

	// A listener that accepts and never speaks TLS: the handshake must time out too.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			conn, err := silent.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()

	for _, url := range []string{hs.URL, "https://" + silent.Addr().String()} {
		c := client(t, url, files, 300*time.Millisecond)
		start := time.Now()
		_, err := c.Poll(context.Background(), []string{"a"}, "", 0)
		if err == nil {
			t.Fatalf("%s: a server that never answers gave no error", url)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s: call took %v with a 300ms timeout", url, took)
		}
		if _, _, err := c.List(context.Background(), policyclient.Query{All: true}); err == nil {
			t.Errorf("%s: List from a server that never answers gave no error", url)
		}
	}
}

func TestTLSPinIsRespected(t *testing.T) {
	srv := policyclienttest.NewServer(t)
	other, _ := mutualtlstest.WriteFiles(t, t.TempDir())

	// A client certificate from another CA: the server refuses the handshake.
	cfg, err := mutualtls.ClientConfig(other.ClientCert, other.ClientKey, srv.Files.CACert)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := policyclient.New(srv.URL, cfg, 2*time.Second)
	if _, err := c.Poll(t.Context(), []string{"a"}, "", 0); err == nil {
		t.Error("a client certificate from another CA was accepted")
	}
	// A server certificate from another CA: the client refuses it.
	c = client(t, srv.URL, mutualtlstest.Files{ClientCert: srv.Files.ClientCert, ClientKey: srv.Files.ClientKey, CACert: other.CACert}, 2*time.Second)
	if _, err := c.Poll(t.Context(), []string{"a"}, "", 0); err == nil {
		t.Error("a server certificate from another CA was trusted")
	}
	// A server that offers only TLS 1.3 (which would bypass the cipher pin) is refused.
	tls13, err := mutualtls.ServerConfig(srv.Files.ServerCert, srv.Files.ServerKey, srv.Files.CACert)
	if err != nil {
		t.Fatal(err)
	}
	tls13.MinVersion, tls13.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	hs := httptest.NewUnstartedServer(http.NotFoundHandler())
	hs.TLS = tls13
	hs.StartTLS()
	defer hs.Close()
	c = client(t, hs.URL, srv.Files, 2*time.Second)
	if _, err := c.Poll(t.Context(), []string{"a"}, "", 0); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("a TLS 1.3-only server: %v, want a protocol version failure", err)
	}
	// The connection that works is TLS 1.2 with the pinned suite.
	good, err := mutualtls.ClientConfig(srv.Files.ClientCert, srv.Files.ClientKey, srv.Files.CACert)
	if err != nil {
		t.Fatal(err)
	}
	var state tls.ConnectionState
	good.VerifyConnection = func(cs tls.ConnectionState) error { state = cs; return nil }
	c, _ = policyclient.New(srv.URL, good, 2*time.Second)
	if _, err := c.Poll(t.Context(), []string{"a"}, "", 0); err != nil {
		t.Fatal(err)
	}
	if state.Version != tls.VersionTLS12 || state.CipherSuite != tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 {
		t.Errorf("negotiated %s / %s", tls.VersionName(state.Version), tls.CipherSuiteName(state.CipherSuite))
	}
}

func TestNewRefusesBadInput(t *testing.T) {
	for _, tt := range []struct {
		url string
		cfg *tls.Config
		d   time.Duration
	}{
		{"http://127.0.0.1:4003", &tls.Config{}, time.Second},
		{"https://", &tls.Config{}, time.Second},
		{"https://127.0.0.1:4003", nil, time.Second},
		{"https://127.0.0.1:4003", &tls.Config{}, 0},
	} {
		if _, err := policyclient.New(tt.url, tt.cfg, tt.d); err == nil {
			t.Errorf("New(%q, %v, %v) accepted", tt.url, tt.cfg != nil, tt.d)
		}
	}
}

// TestPoll: the first answer carries an ETag; sending it back gets NotModified; with a
// wait, the request is held until the policies change and then answered with them;
// against a server without ETags every Poll is a full answer.
func TestPoll(t *testing.T) {
	srv := policyclienttest.NewServer(t)
	ab, cd := twoPolicies()
	srv.Set([]models.Policy{ab})
	c := client(t, srv.URL, srv.Files, 2*time.Second)
	ids := []string{"app-a", "app-c"}

	first, err := c.Poll(t.Context(), ids, "", 0)
	if err != nil || first.NotModified || first.ETag == "" || len(first.Policies) != 1 {
		t.Fatalf("first Poll = %+v, %v", first, err)
	}
	again, err := c.Poll(t.Context(), ids, first.ETag, 0)
	if err != nil || !again.NotModified || again.Policies != nil || again.ETag != first.ETag {
		t.Fatalf("Poll with the current ETag = %+v, %v; want NotModified", again, err)
	}
	// A wait longer than the client's timeout is allowed: the call's deadline grows by it.
	start := time.Now()
	held, err := c.Poll(t.Context(), ids, first.ETag, 2500*time.Millisecond)
	if err != nil || !held.NotModified || time.Since(start) < 2500*time.Millisecond {
		t.Fatalf("long poll without a change = %+v, %v after %s; want NotModified after the wait", held, err, time.Since(start))
	}
	done := make(chan policyclient.Answer, 1)
	go func() {
		a, err := c.Poll(t.Context(), ids, first.ETag, time.Minute)
		if err != nil {
			t.Error(err)
		}
		done <- a
	}()
	srv.Set([]models.Policy{ab, cd})
	if a := <-done; a.NotModified || len(a.Policies) != 2 || a.ETag == first.ETag {
		t.Fatalf("long poll across a change = %+v", a)
	}
	if a, err := c.Poll(t.Context(), nil, "", 0); err != nil || a.Policies == nil || len(a.Policies) != 0 {
		t.Fatalf("Poll of no ids = %+v, %v; want an empty list without asking", a, err)
	}

	plain := policyclienttest.NewServer(t)
	plain.WithoutETags()
	plain.Set([]models.Policy{ab})
	pc := client(t, plain.URL, plain.Files, 2*time.Second)
	for range 2 {
		a, err := pc.Poll(t.Context(), ids, "", time.Minute)
		if err != nil || a.NotModified || a.ETag != "" || len(a.Policies) != 1 {
			t.Fatalf("Poll of a server without ETags = %+v, %v", a, err)
		}
	}
}
