// Package mutualtls builds the TLS configurations both ends of the policy server's
// internal API use. The settings are pinned, not negotiated: TLS 1.2 only, one cipher
// suite, and client certificates required and verified against one CA. TLS 1.3 is
// excluded on purpose: Go does not let a caller choose TLS 1.3 cipher suites, so allowing
// it would silently bypass the cipher pin. CAPool is what the other clients (of UAA,
// Cloud Controller, the external API), which only verify the server, share with them.
package mutualtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// CipherSuite is the only cipher suite either side offers or accepts.
const CipherSuite = tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256

// ServerConfig returns a server configuration that presents the certificate in
// certFile/keyFile and requires every client to present a certificate signed by the
// CA in caFile.
func ServerConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, pool, err := loadFiles(certFile, keyFile, caFile)
	if err != nil {
		return nil, err
	}
	return server(cert, pool), nil
}

// ClientConfig returns a client configuration that presents the certificate in
// certFile/keyFile and trusts only servers whose certificate the CA in caFile signed.
func ClientConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, pool, err := loadFiles(certFile, keyFile, caFile)
	if err != nil {
		return nil, err
	}
	return client(cert, pool), nil
}

// ServerConfigPEM is ServerConfig for PEM data already in memory.
func ServerConfigPEM(certPEM, keyPEM, caPEM []byte) (*tls.Config, error) {
	cert, pool, err := parse(certPEM, keyPEM, caPEM, "certificate", "key", "CA certificate")
	if err != nil {
		return nil, err
	}
	return server(cert, pool), nil
}

// ClientConfigPEM is ClientConfig for PEM data already in memory.
func ClientConfigPEM(certPEM, keyPEM, caPEM []byte) (*tls.Config, error) {
	cert, pool, err := parse(certPEM, keyPEM, caPEM, "certificate", "key", "CA certificate")
	if err != nil {
		return nil, err
	}
	return client(cert, pool), nil
}

func server(cert tls.Certificate, pool *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		MaxVersion:   tls.VersionTLS12,
		CipherSuites: []uint16{CipherSuite},
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}
}

func client(cert tls.Certificate, pool *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		MaxVersion:   tls.VersionTLS12,
		CipherSuites: []uint16{CipherSuite},
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
	}
}

func loadFiles(certFile, keyFile, caFile string) (tls.Certificate, *x509.CertPool, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("reading certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		// The error names the file; its contents never reach a message.
		return tls.Certificate{}, nil, fmt.Errorf("reading key: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("reading CA certificate: %w", err)
	}
	return parse(certPEM, keyPEM, caPEM, certFile, keyFile, caFile)
}

// parse names the inputs certName, keyName and caName in its errors.
func parse(certPEM, keyPEM, caPEM []byte, certName, keyName, caName string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("loading key pair %s / %s: %w", certName, keyName, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return tls.Certificate{}, nil, fmt.Errorf("loading CA certificate %s: %w", caName, errNoCerts)
	}
	return cert, pool, nil
}

var errNoCerts = errors.New("no PEM certificate found")

// CAPool reads the PEM certificates in caFile into a pool to verify servers against.
func CAPool(caFile string) (*x509.CertPool, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("loading CA certificate %s: %w", caFile, errNoCerts)
	}
	return pool, nil
}
