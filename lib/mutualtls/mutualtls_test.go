package mutualtls_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"netman/lib/mutualtls"
	"netman/lib/mutualtls/mutualtlstest"
)

// startServer serves "ok" over a listener configured by ServerConfig and counts the
// requests that reached the handler.
func startServer(t *testing.T, f mutualtlstest.Files) (url string, served *atomic.Int64) {
	t.Helper()
	cfg, err := mutualtls.ServerConfig(f.ServerCert, f.ServerKey, f.CACert)
	if err != nil {
		t.Fatalf("ServerConfig: %v", err)
	}
	served = new(atomic.Int64)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		st := r.TLS
		if st.Version != tls.VersionTLS12 || st.CipherSuite != mutualtls.CipherSuite {
			t.Errorf("negotiated version %x cipher %x", st.Version, st.CipherSuite)
		}
		io.WriteString(w, "ok")
	}))
	srv.TLS = cfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL, served
}

func get(cfg *tls.Config, url string) (string, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestHandshakes(t *testing.T) {
	dir := t.TempDir()
	f, ca := mutualtlstest.WriteFiles(t, dir)
	url, served := startServer(t, f)

	good, err := mutualtls.ClientConfig(f.ClientCert, f.ClientKey, f.CACert)
	if err != nil {
		t.Fatalf("ClientConfig: %v", err)
	}
	good.ServerName = mutualtlstest.ServerName

	otherCA := mutualtlstest.NewAuthority(t, "another CA")
	foreignCert, foreignKey := otherCA.Issue(t, mutualtlstest.ClientLeaf())
	expiredLeaf := mutualtlstest.ClientLeaf()
	expiredLeaf.NotBefore = time.Now().Add(-48 * time.Hour)
	expiredLeaf.NotAfter = time.Now().Add(-24 * time.Hour)
	expiredCert, expiredKey := ca.Issue(t, expiredLeaf)

	withCert := func(certPEM, keyPEM []byte) *tls.Config {
		cfg, err := mutualtls.ClientConfigPEM(certPEM, keyPEM, ca.CertPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.ServerName = mutualtlstest.ServerName
		return cfg
	}
	tweak := func(change func(*tls.Config)) *tls.Config {
		cfg := good.Clone()
		change(cfg)
		return cfg
	}

	cases := []struct {
		name   string
		client *tls.Config
		ok     bool
	}{
		{"the pinned settings and a client cert from the CA", good, true},
		{"no client certificate", tweak(func(c *tls.Config) { c.Certificates = nil }), false},
		{"client certificate from another CA", withCert(foreignCert, foreignKey), false},
		{"expired client certificate", withCert(expiredCert, expiredKey), false},
		{"TLS 1.3 only", tweak(func(c *tls.Config) {
			c.MinVersion, c.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
		}), false},
		{"TLS 1.1 only", tweak(func(c *tls.Config) {
			c.MinVersion, c.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
			c.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, mutualtls.CipherSuite}
		}), false},
		{"another TLS 1.2 cipher", tweak(func(c *tls.Config) {
			c.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}
		}), false},
		{"TLS 1.2 and 1.3 offered, default ciphers", tweak(func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS13
			c.CipherSuites = nil
		}), true}, // the server picks 1.2 and the pinned suite
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := served.Load()
			body, err := get(tc.client, url)
			if tc.ok {
				if err != nil || body != "ok" {
					t.Fatalf("want success, got body %q err %v", body, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("handshake succeeded, want refusal (body %q)", body)
			}
			if served.Load() != before {
				t.Fatalf("a refused client reached the handler")
			}
		})
	}
}

func TestClientRefusesServerFromAnotherCA(t *testing.T) {
	f, _ := mutualtlstest.WriteFiles(t, t.TempDir())
	url, _ := startServer(t, f)
	other, _ := mutualtlstest.WriteFiles(t, t.TempDir())
	cfg, err := mutualtls.ClientConfig(other.ClientCert, other.ClientKey, other.CACert)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ServerName = mutualtlstest.ServerName
	if _, err := get(cfg, url); err == nil {
		t.Fatal("client trusted a server certificate its CA did not sign")
	}
}

func TestConfigErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	f, _ := mutualtlstest.WriteFiles(t, dir)
	notPEM := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	cases := []struct {
		name                string
		cert, key, ca, want string
	}{
		{"missing certificate", missing, f.ServerKey, f.CACert, missing},
		{"missing key", f.ServerCert, missing, f.CACert, missing},
		{"missing CA", f.ServerCert, f.ServerKey, missing, missing},
		{"key does not match certificate", f.ServerCert, f.ClientKey, f.CACert, f.ClientKey},
		{"CA file without a certificate", f.ServerCert, f.ServerKey, notPEM, notPEM},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for name, build := range map[string]func(string, string, string) (*tls.Config, error){
				"server": mutualtls.ServerConfig, "client": mutualtls.ClientConfig,
			} {
				_, err := build(tc.cert, tc.key, tc.ca)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s: error %v does not name %s", name, err, tc.want)
				}
			}
		})
	}
}

func TestPinnedSettings(t *testing.T) {
	f, _ := mutualtlstest.WriteFiles(t, t.TempDir())
	srv, err := mutualtls.ServerConfig(f.ServerCert, f.ServerKey, f.CACert)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := mutualtls.ClientConfig(f.ClientCert, f.ClientKey, f.CACert)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*tls.Config{"server": srv, "client": cli} {
		if c.MinVersion != tls.VersionTLS12 || c.MaxVersion != tls.VersionTLS12 {
			t.Errorf("%s: versions %x..%x, want TLS 1.2 only", name, c.MinVersion, c.MaxVersion)
		}
		if len(c.CipherSuites) != 1 || c.CipherSuites[0] != tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 {
			t.Errorf("%s: cipher suites %v", name, c.CipherSuites)
		}
	}
	if srv.ClientAuth != tls.RequireAndVerifyClientCert || srv.ClientCAs == nil {
		t.Errorf("server does not require and verify client certificates")
	}
}

// TestCAPool: the pool verifies what the CA signed; a missing file or one without a
// certificate is an error naming the file.
func TestCAPool(t *testing.T) {
	dir := t.TempDir()
	f, ca := mutualtlstest.WriteFiles(t, dir)
	pool, err := mutualtls.CAPool(f.CACert)
	if err != nil {
		t.Fatal(err)
	}
	if !pool.Equal(ca.Pool()) {
		t.Error("the pool does not hold exactly the CA's certificate")
	}
	notPEM := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{filepath.Join(dir, "missing.pem"), notPEM} {
		if _, err := mutualtls.CAPool(file); err == nil || !strings.Contains(err.Error(), file) {
			t.Errorf("CAPool(%s): error %v does not name the file", file, err)
		}
	}
}
