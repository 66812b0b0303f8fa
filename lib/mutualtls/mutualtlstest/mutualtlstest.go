// Package mutualtlstest issues throwaway certificate authorities and certificates for
// tests that need real TLS handshakes.
package mutualtlstest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ServerName is the name the policy server's certificate is issued for.
const ServerName = "policy-server.service.cf.internal"

// Authority is a certificate authority that lives for one test.
type Authority struct {
	Cert    *x509.Certificate
	Key     *rsa.PrivateKey
	CertPEM []byte
}

// Leaf describes a certificate to issue.
type Leaf struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	Client     bool      // clientAuth extended key usage instead of serverAuth
	NotBefore  time.Time // zero: an hour ago
	NotAfter   time.Time // zero: a day from now
}

// NewAuthority creates a self-signed CA.
func NewAuthority(t testing.TB, name string) *Authority {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("creating CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &Authority{Cert: cert, Key: key, CertPEM: encodeCert(der)}
}

// Pool is a certificate pool holding only a's certificate: what a client that trusts a
// verifies servers with.
func (a *Authority) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(a.Cert)
	return pool
}

// IssueTLS is Issue, ready for a tls.Config.
func (a *Authority) IssueTLS(t testing.TB, l Leaf) tls.Certificate {
	t.Helper()
	certPEM, keyPEM := a.Issue(t, l)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// Issue signs a certificate as described by l and returns it and its key as PEM.
func (a *Authority) Issue(t testing.TB, l Leaf) (certPEM, keyPEM []byte) {
	t.Helper()
	key := newKey(t)
	notBefore, notAfter := l.NotBefore, l.NotAfter
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	usage := x509.ExtKeyUsageServerAuth
	if l.Client {
		usage = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: l.CommonName},
		DNSNames:     l.DNSNames,
		IPAddresses:  l.IPs,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, &key.PublicKey, a.Key)
	if err != nil {
		t.Fatalf("issuing certificate for %s: %v", l.CommonName, err)
	}
	return encodeCert(der), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
}

// ServerLeaf is the policy server's certificate as scripts/generate-certs issues it.
func ServerLeaf() Leaf {
	return Leaf{
		CommonName: ServerName,
		DNSNames:   []string{"*." + ServerName, ServerName, "localhost"},
		IPs:        []net.IP{net.IPv4(127, 0, 0, 1)},
	}
}

// ClientLeaf is an agent's certificate as scripts/generate-certs issues it.
func ClientLeaf() Leaf {
	return Leaf{CommonName: "policy-agent", Client: true}
}

// Files are the paths of a CA, server and client certificate set written to disk.
type Files struct {
	CACert, CAKey         string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

// WriteFiles issues a CA, a server and a client certificate and writes them into dir
// under the names scripts/generate-certs uses.
func WriteFiles(t testing.TB, dir string) (Files, *Authority) {
	t.Helper()
	ca := NewAuthority(t, "netman test CA")
	f := Files{
		CACert: filepath.Join(dir, "ca.crt"), CAKey: filepath.Join(dir, "ca.key"),
		ServerCert: filepath.Join(dir, "server.crt"), ServerKey: filepath.Join(dir, "server.key"),
		ClientCert: filepath.Join(dir, "client.crt"), ClientKey: filepath.Join(dir, "client.key"),
	}
	write(t, f.CACert, ca.CertPEM)
	write(t, f.CAKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(ca.Key)}))
	c, k := ca.Issue(t, ServerLeaf())
	write(t, f.ServerCert, c)
	write(t, f.ServerKey, k)
	c, k = ca.Issue(t, ClientLeaf())
	write(t, f.ClientCert, c)
	write(t, f.ClientKey, k)
	return f, ca
}

func write(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func newKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("generating RSA key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
