// Command overlaydemo is the two-cell part of `make demo`: it builds a simulated
// foundation (internal/testsupport/foundation) with two cells on a flannel VXLAN overlay
// with GBP, shows where each cell's overlay subnet came from and the containers' MTU,
// and checks that app A on cell 1 reaches app B on cell 2 only while a policy allows it.
// Every step checks its result; the exit status is 1 when one is wrong, 130 when
// interrupted, and everything it created is removed in every case.
//
//	overlaydemo -root . -bin bin -cni-path .cache/cni/bin -overlay-bin .cache/overlay/bin
//
// It needs root and DATABASE_URL (a Postgres user that may create databases).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"netman/internal/testsupport/foundation"
)

const (
	appA = "d5bbc5ed-886a-44e6-945d-67df1013fa16"
	appB = "eb95ff20-cba8-4edc-8f4a-cf80d0669faf"
	port = "8080"
)

func main() {
	root := flag.String("root", ".", "the netman checkout")
	bin := flag.String("bin", "bin", "directory of the netman binaries")
	cniPath := flag.String("cni-path", ".cache/cni/bin", "directory of the CNI plugins")
	overlayBin := flag.String("overlay-bin", ".cache/overlay/bin", "directory of flanneld and etcd")
	step := flag.Int("step", 7, "number of the first step printed")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, *step, foundation.Options{
		Cells: 2, DatabaseURL: os.Getenv("DATABASE_URL"), Root: *root, Bin: *bin,
		CNIPath: *cniPath, OverlayBin: *overlayBin, Progress: indent{os.Stdout},
	})
	interrupted := ctx.Err() != nil
	stop()
	switch {
	case interrupted:
		fmt.Fprintln(os.Stderr, "overlaydemo: interrupted; everything it made is removed")
		os.Exit(130)
	case err != nil:
		fmt.Fprintf(os.Stderr, "\033[31mFAIL\033[0m %v\n", err)
		os.Exit(1)
	}
}

type indent struct{ w io.Writer }

func (i indent) Write(p []byte) (int, error) {
	_, err := fmt.Fprint(i.w, "   "+strings.ReplaceAll(strings.TrimRight(string(p), "\n"), "\n", "\n   ")+"\n")
	return len(p), err
}

func header(n int, s string) { fmt.Printf("\n\033[1m== %d. %s\033[0m\n", n, s) }
func info(format string, a ...any) {
	fmt.Printf("   "+format+"\n", a...)
}
func pass(format string, a ...any) { fmt.Printf("   \033[32mok\033[0m "+format+"\n", a...) }

func run(ctx context.Context, n int, opts foundation.Options) (err error) {
	header(n, "Two cells on a flannel VXLAN overlay (GBP), etcd on the underlay")
	f, err := foundation.New(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("removing the foundation: %w", cerr))
		}
	}()
	leases, err := f.Leases(ctx)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(leases))
	for k := range leases {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	info("flanneld's leases in etcd (%s/subnets):", f.EtcdPrefix())
	for _, k := range keys {
		info("  %s = %s", k, leases[k])
	}
	for _, c := range f.Cells {
		l, err := c.Lease()
		if err != nil {
			return err
		}
		info("cell %d (%s, underlay %s): subnet file FLANNEL_SUBNET=%s FLANNEL_MTU=%d", c.Index, c.NS, c.UnderlayIP, l.Subnet, l.MTU)
		if l.MTU != foundation.UnderlayMTU-50 {
			return fmt.Errorf("cell %d: FLANNEL_MTU %d, want %d on a %d underlay", c.Index, l.MTU, foundation.UnderlayMTU-50, foundation.UnderlayMTU)
		}
	}
	if len(leases) != 2 {
		return fmt.Errorf("%d leases in etcd, want one per cell", len(leases))
	}
	pass("each cell leased its own /24 of %s from etcd", foundation.OverlayCIDR)

	n++
	header(n, "App A on cell 1, app B on cell 2, through the wrapper (flannel delegate)")
	a, err := f.Cells[0].AddContainer(ctx, "a", appA)
	if err != nil {
		return err
	}
	b, err := f.Cells[1].AddContainer(ctx, "b", appB)
	if err != nil {
		return err
	}
	for _, ct := range []*foundation.Container{a, b} {
		info("%s on cell %d (app %s): ip %s, eth0 mtu %d", ct.Name, ct.Cell.Index, ct.App, ct.IP, ct.MTU)
		if ct.MTU != 1450 {
			return fmt.Errorf("%s has MTU %d, want 1450 (1500 underlay - 50 VXLAN)", ct.Name, ct.MTU)
		}
	}
	pass("container MTU 1450 on the 1500 underlay")
	gw, _, _ := strings.Cut(mustLease(f.Cells[1]).Subnet, "/")
	if out, err := a.Exec(ctx, "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1422", gw); err != nil {
		return fmt.Errorf("full-size DF ping from A to cell 2 (%s): %w\n%s", gw, err, out)
	}
	pass("a 1450-byte packet with DF set crosses from A to cell 2 (%s)", gw)

	stopServe, err := serve(b)
	if err != nil {
		return err
	}
	defer stopServe()

	n++
	header(n, "Policy across cells: marks carried in VXLAN GBP, judged by cell 2's agent")
	to := net.JoinHostPort(b.IP, port)
	if err := expect(ctx, a, to, false, "no policy"); err != nil {
		return err
	}
	for _, verb := range []string{"add", "remove"} {
		args := []string{"policies", verb, appA, appB, "--protocol", "tcp", "--port", port}
		info("$ netman %s", strings.Join(args, " "))
		out, err := f.Netman(ctx, args...)
		if err != nil {
			return err
		}
		info("%s", strings.TrimSpace(string(out)))
		if err := expect(ctx, a, to, verb == "add", "after netman policies "+verb); err != nil {
			return err
		}
	}
	return nil
}

func mustLease(c *foundation.Cell) foundation.Lease {
	l, _ := c.Lease()
	return l
}

// serve answers "ok" on TCP port 8080 inside B.
func serve(b *foundation.Container) (func(), error) {
	var ln net.Listener
	if err := foundation.Do(b.NS, func() error {
		var err error
		ln, err = net.Listen("tcp4", ":"+port)
		return err
	}); err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("ok"))
			c.Close()
		}
	}()
	return func() { ln.Close() }, nil
}

// reach says "allowed" when A opens a TCP connection to addr and gets B's answer,
// "refused" when the connection is reset (netman rejects; it never drops), and anything
// else (a timeout: a broken network) as it is.
func reach(ctx context.Context, a *foundation.Container, addr string) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := foundation.DialIn(ctx, a.NS, "tcp4", addr)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return "refused"
	}
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 2)
	if _, err = io.ReadFull(c, buf); err != nil || string(buf) != "ok" {
		return fmt.Sprintf("no answer (%v)", err)
	}
	return "allowed"
}

// expect polls until A -> B is allowed (or refused) as wanted, for up to 15 s (a few
// agent cycles and the server's one-second freshness).
func expect(ctx context.Context, a *foundation.Container, addr string, want bool, what string) error {
	verdict := map[bool]string{true: "allowed", false: "refused"}
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := reach(ctx, a, addr)
		if got == verdict[want] {
			pass("%s: A (cell 1) -> B (cell 2) :%s %s", what, port, got)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: A (cell 1) -> B (cell 2) :%s is %s, expected %s", what, port, got, verdict[want])
		}
		time.Sleep(300 * time.Millisecond)
	}
}
