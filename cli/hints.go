package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
)

// The hints name the default ports of the BOSH jobs (docs/operations.md).
const (
	externalPortHint = "the external API listens on listen_port (4002 by default)"
	internalPortHint = "the internal API listens on internal_listen_port (4003 by default)"
	tokenHint        = `get a new token: NETMAN_TOKEN="$(cf oauth-token)", or NETMAN_TOKEN="$(netman dev-token --key FILE)" for a local server with uaa_key_file`
)

// explain prefixes err with where it happened (method and URL) and adds a hint for the
// mistakes behind the usual transport errors: a wrong port, a wrong scheme, a missing CA.
// internal says the URL is meant to be the internal (mutual TLS) API. An empty where
// adds no prefix (the error names the URL already).
func explain(where string, err error, internal bool) error {
	wrapped := err
	if where != "" {
		wrapped = fmt.Errorf("%s: %w", where, err)
	}
	if hint := transportHint(err, internal); hint != "" {
		return hinted{wrapped, hint}
	}
	return wrapped
}

func transportHint(err error, internal bool) string {
	wrongPort := externalPortHint
	if internal {
		wrongPort = internalPortHint
	}
	var recordErr tls.RecordHeaderError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var alert tls.AlertError
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nothing listens there: is the policy server running, and is the port right? " + wrongPort
	case errors.As(err, &recordErr) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		if internal {
			return "the server does not speak TLS on that port; " + internalPortHint
		}
		return "the server does not speak TLS on that port: use http://, or the port where it serves HTTPS; " + wrongPort
	case errors.As(err, &unknownCA):
		if internal {
			return "--ca must be the CA that signed the server's certificate (the policy server's ca_cert_file)"
		}
		return "the server's certificate is not signed by a CA this machine trusts: pass --ca FILE with the CA that signed it"
	case errors.As(err, &hostErr):
		return "the server's certificate is not for this host name: use a name its certificate holds"
	case errors.As(err, &alert) || strings.Contains(err.Error(), "remote error: tls:"):
		if internal {
			return "the server refused the TLS handshake: check --cert and --key (a client certificate signed by the server's CA) and that the port is the internal API's; " + internalPortHint
		}
		return "the server refused the TLS handshake: this looks like the internal API, which needs a client certificate (see netman internal policies); " + externalPortHint
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		if internal {
			return "the server closed the connection: is the port the internal API's? " + internalPortHint
		}
		return "the server closed the connection: this happens when plain http:// reaches a TLS port such as the internal API's (4003); " + externalPortHint + ", and with external_server_cert_file it speaks https://"
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout():
		return "no answer in time: check that the host and port are right and reachable, or raise --timeout"
	}
	return ""
}

// statusHint advises on an HTTP error status from the server.
func statusHint(status int, msg string) string {
	switch {
	case status == 400 && strings.Contains(msg, "HTTP request to an HTTPS server"):
		return "the server speaks HTTPS on that port: use https:// (and --ca FILE when its certificate is not signed by a CA this machine trusts)"
	case status == 401 && strings.Contains(msg, "expired"):
		return "the token has expired; " + tokenHint
	case status == 401:
		return "the server did not accept the token; " + tokenHint
	case status == 404:
		return "is the URL the policy server's external API? " + externalPortHint
	}
	return ""
}
