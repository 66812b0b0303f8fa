package httpserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// net/http answers a request it cannot read (headers over MaxHeaderBytes: 431; a
// malformed request line or header, a bad Host: 400; an unknown transfer encoding:
// 501) itself, before any handler runs, in plain text written straight to the
// connection in one Write. The header block below is what marks such an answer: a
// handler's response has a Date header and sorted headers.
const plainErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// jsonErrorListener hands out connections that rewrite those answers as
// {"error": ...}, so a client gets JSON from every error path of the server.
type jsonErrorListener struct{ net.Listener }

func (l jsonErrorListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return jsonErrorConn{c}, nil
}

type jsonErrorConn struct{ net.Conn }

// CloseWrite lets net/http half-close after a 431, as it does on a bare TCP
// connection, so the client reads the answer before the connection goes.
func (c jsonErrorConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c jsonErrorConn) Write(b []byte) (int, error) {
	if out, ok := jsonError(b); ok {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// jsonError rewrites one of net/http's own plain-text answers; ok is false for
// anything else.
func jsonError(b []byte) (out []byte, ok bool) {
	if !bytes.HasPrefix(b, []byte("HTTP/1.1 ")) {
		return nil, false
	}
	end := bytes.IndexByte(b, '\r')
	if end < 0 || !bytes.HasPrefix(b[end:], []byte(plainErrorHeaders)) {
		return nil, false
	}
	statusLine := string(b[:end])
	text := string(b[end+len(plainErrorHeaders):])
	// The body repeats the status ("400 Bad Request: missing required Host header");
	// keep what it says beyond the code.
	if code := statusLine[len("HTTP/1.1 "):]; len(code) >= 3 {
		text = strings.TrimPrefix(text, code[:3]+" ")
	}
	msg, err := json.Marshal("the request could not be read: " + text)
	if err != nil { // cannot happen for a string
		return nil, false
	}
	body := append(append([]byte(`{"error":`), msg...), '}')
	out = append(out, statusLine...)
	out = append(out, "\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	out = append(out, "\r\n\r\n"...)
	return append(out, body...), true
}

type tlsStateKey struct{}

// withTLSState gives requests on a jsonErrorConn the r.TLS net/http sets only for a
// *tls.Conn it sees itself, so handlers and middleware read the client's certificate
// (the access line's client_cn) as on any TLS server.
func withTLSState(s *http.Server) {
	prev := s.ConnContext
	s.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if prev != nil {
			ctx = prev(ctx, c)
		}
		if jc, ok := c.(jsonErrorConn); ok {
			if tc, ok := jc.Conn.(*tls.Conn); ok {
				state := tc.ConnectionState()
				ctx = context.WithValue(ctx, tlsStateKey{}, &state)
			}
		}
		return ctx
	}
	h := s.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	s.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if state, ok := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok && r.TLS == nil {
			r.TLS = state
		}
		h.ServeHTTP(w, r)
	})
}
