package httpserver

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"
)

// tlsListener does the TLS handshakes itself, each in its own goroutine, so that a
// connection speaking HTTP/1.1 reaches net/http as a jsonErrorConn over TLS (net/http
// then treats it as a plain connection, and its own plain-text answers can be
// rewritten), while one that negotiated HTTP/2 reaches it as the *tls.Conn its HTTP/2
// server needs. HTTP/2 has its own framing and error answers.
type tlsListener struct {
	inner   net.Listener
	config  *tls.Config
	timeout time.Duration // for one handshake
	onFail  func(remote, reason string)

	conns     chan net.Conn
	ctx       context.Context // ended by Close, which also ends handshakes under way
	stop      context.CancelFunc
	closeOnce sync.Once
	failed    chan struct{}
	err       error // set before failed is closed
}

func newTLSListener(inner net.Listener, config *tls.Config, timeout time.Duration, failed func(remote, reason string)) *tlsListener {
	l := &tlsListener{inner: inner, config: config, timeout: timeout, onFail: failed,
		conns: make(chan net.Conn), failed: make(chan struct{})}
	l.ctx, l.stop = context.WithCancel(context.Background())
	go l.acceptLoop()
	return l
}

func (l *tlsListener) acceptLoop() {
	var backoff time.Duration
	for {
		raw, err := l.inner.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// As net/http's own loop does, e.g. for EMFILE: wait and retry.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(backoff):
					continue
				case <-l.ctx.Done():
					return
				}
			}
			l.err = err
			close(l.failed)
			return
		}
		backoff = 0
		go l.handshake(raw)
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

func (l *tlsListener) handshake(raw net.Conn) {
	tc := tls.Server(raw, l.config)
	ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		l.onFail(raw.RemoteAddr().String(), err.Error())
		raw.Close()
		return
	}
	var c net.Conn = jsonErrorConn{tc}
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		c = tc
	}
	select {
	case l.conns <- c:
	case <-l.ctx.Done():
		raw.Close()
	}
}

func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	case <-l.failed:
		return nil, l.err
	}
}

func (l *tlsListener) Close() error {
	err := net.ErrClosed
	l.closeOnce.Do(func() {
		l.stop()
		err = l.inner.Close()
	})
	return err
}

func (l *tlsListener) Addr() net.Addr { return l.inner.Addr() }
