package foundation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// ip runs one iproute2 command and returns its error with the command's output.
func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// inNS runs a command in the named network namespace (with its /etc/netns files) and
// returns its combined output.
func inNS(ctx context.Context, name string, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", name}, argv...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("in %s: %s: %w: %s", name, strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

func nsPath(name string) string { return "/run/netns/" + name }

// Do runs f on a thread inside the named network namespace. Sockets f opens stay in
// that namespace after it returns.
func Do(name string, f func() error) error {
	n, err := ns.GetNS(nsPath(name))
	if err != nil {
		return fmt.Errorf("opening namespace %s: %w", name, err)
	}
	defer n.Close()
	return n.Do(func(ns.NetNS) error { return f() })
}

// DialIn opens a connection from inside the named namespace ("" for this one).
func DialIn(ctx context.Context, name, network, addr string) (net.Conn, error) {
	var d net.Dialer
	if name == "" {
		return d.DialContext(ctx, network, addr)
	}
	var conn net.Conn
	err := Do(name, func() error {
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// process is a long-running program of the foundation, its output in a log file.
type process struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startIn starts argv in the named namespace (this one when ns is ""), output appended
// to logFile.
func startIn(nsName, name, logFile string, argv ...string) (*process, error) {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if nsName != "" {
		argv = append([]string{"ip", "netns", "exec", nsName}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: an interrupt of the test run reaches the foundation's
	// cleanup, which stops the programs in order, instead of killing them mid-way.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	if nsName != "" {
		name += " in " + nsName
	}
	p := &process{name: name, log: logFile, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// stop sends SIGTERM and waits, SIGKILL after 10 s.
func (p *process) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s ignored SIGTERM for 10s", p.name)
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Tail is the end of the process's log.
func (p *process) Tail(lines int) string {
	b, _ := os.ReadFile(p.log)
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// forwarder listens on listenAddr inside listenNS and connects each connection to
// dialAddr from inside dialNS ("" is this process's namespace). It carries bytes only:
// TLS stays end to end. The foundation uses it where a simulated machine needs what only
// the host has (Postgres) or the host needs a simulated machine's port (the external API).
type forwarder struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func forward(listenNS, listenAddr, dialNS, dialAddr string) (*forwarder, error) {
	var ln net.Listener
	listen := func() error {
		var err error
		ln, err = net.Listen("tcp", listenAddr)
		return err
	}
	var err error
	if listenNS == "" {
		err = listen()
	} else {
		err = Do(listenNS, listen)
	}
	if err != nil {
		return nil, fmt.Errorf("forwarder listening on %s in %q: %w", listenAddr, listenNS, err)
	}
	f := &forwarder{ln: ln, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.pipe(c, dialNS, dialAddr)
			}()
		}
	}()
	return f, nil
}

func (f *forwarder) track(c net.Conn, add bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if add {
		f.conns[c] = struct{}{}
	} else {
		delete(f.conns, c)
	}
}

func (f *forwarder) pipe(c net.Conn, dialNS, dialAddr string) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	up, err := DialIn(ctx, dialNS, "tcp", dialAddr)
	cancel()
	if err != nil {
		return
	}
	defer up.Close()
	f.track(c, true)
	f.track(up, true)
	defer f.track(c, false)
	defer f.track(up, false)
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	<-done
}

// Addr is where the forwarder listens.
func (f *forwarder) Addr() string { return f.ln.Addr().String() }

func (f *forwarder) close() {
	_ = f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// waitReady calls ready every 100 ms until it succeeds, the process exits (the end of
// its log is the error) or limit passes.
func (p *process) waitReady(ctx context.Context, limit time.Duration, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited: %s", p.name, p.Tail(20))
		}
		select {
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("%s not ready: %w", p.name, ctx.Err()), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
