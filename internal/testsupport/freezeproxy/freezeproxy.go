// Package freezeproxy is a TCP proxy in front of a real server (Postgres in the tests)
// that a test can freeze: while frozen it accepts connections and reads nothing and
// forwards nothing, in either direction, so the client sees exactly what a server that
// was stopped with SIGSTOP, or a link that went dead, looks like: open connections that
// never answer. Thaw resumes forwarding. It exists because stopping the shared test
// cluster itself would stall every other test using it.
package freezeproxy

import (
	"net"
	"net/url"
	"sync"
	"testing"
)

// Proxy forwards connections from its own loopback listener to a target address.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	frozen bool
	thawed chan struct{} // closed while not frozen
	conns  map[net.Conn]struct{}
}

// New starts a proxy to target (host:port) and stops it when the test ends.
func New(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("freezeproxy: %v", err)
	}
	p := &Proxy{ln: ln, target: target, thawed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(p.thawed)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// ForDSN starts a proxy to the host of the Postgres URL dsn and returns the URL that
// goes through it.
func ForDSN(t testing.TB, dsn string) (*Proxy, string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("freezeproxy: parsing %q: %v", dsn, err)
	}
	p := New(t, u.Host)
	u.Host = p.Addr()
	return p, u.String()
}

// Addr is the proxy's listening address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Freeze stops all forwarding; connections stay open.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.frozen {
		p.frozen = true
		p.thawed = make(chan struct{})
	}
}

// Thaw resumes forwarding.
func (p *Proxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen {
		p.frozen = false
		close(p.thawed)
	}
}

func (p *Proxy) gate() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.thawed
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	<-p.gate()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	p.mu.Lock()
	p.conns[client], p.conns[server] = struct{}{}, struct{}{}
	p.mu.Unlock()
	go p.pipe(server, client)
	p.pipe(client, server)
}

// pipe copies src to dst, waiting before every write while frozen.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			<-p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // io.EOF or a closed connection: close the other side too
			return
		}
	}
}

func (p *Proxy) close() {
	p.ln.Close()
	p.Thaw()
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}
