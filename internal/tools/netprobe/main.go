// Command netprobe answers and asks "can I reach you?" over TCP or UDP, so the demo can
// show policy taking effect between two containers without depending on nc or socat.
//
//	netprobe listen -proto tcp -port 8080       # answers every connection or datagram with "ok"
//	netprobe dial -proto tcp -addr 10.0.0.3:8080 # exit 0 when the answer came back
//	netprobe forward -netns /run/netns/cell -listen 127.0.0.1:4003 -to 127.0.0.1:4003
//
// forward listens inside another network namespace and connects out from this one, so a
// process in a throwaway "cell" namespace can reach a server on the host's loopback.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: netprobe listen|dial|forward [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "listen":
		err = listen(os.Args[2:])
	case "dial":
		err = dial(os.Args[2:])
	case "forward":
		err = forward(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (want listen, dial or forward)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "netprobe:", err)
		os.Exit(1)
	}
}

func listen(args []string) error {
	fs := flag.NewFlagSet("listen", flag.ContinueOnError)
	proto := fs.String("proto", "tcp", "tcp or udp")
	port := fs.Int("port", 8080, "port to listen on (all addresses)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	addr := ":" + strconv.Itoa(*port)
	switch *proto {
	case "tcp":
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		for {
			c, err := l.Accept()
			if err != nil {
				return err
			}
			c.Write([]byte("ok\n"))
			c.Close()
		}
	case "udp":
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		buf := make([]byte, 512)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return err
			}
			pc.WriteTo([]byte("ok\n"), from)
		}
	}
	return fmt.Errorf("unknown protocol %q", *proto)
}

func dial(args []string) error {
	fs := flag.NewFlagSet("dial", flag.ContinueOnError)
	proto := fs.String("proto", "tcp", "tcp or udp")
	addr := fs.String("addr", "", "host:port to reach")
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *proto != "tcp" && *proto != "udp" {
		return fmt.Errorf("unknown protocol %q", *proto)
	}
	c, err := net.DialTimeout(*proto, *addr, *timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(*timeout))
	if *proto == "udp" {
		if _, err := c.Write([]byte("hello\n")); err != nil {
			return err
		}
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != "ok\n" {
		return errors.New("unexpected answer")
	}
	return nil
}

func forward(args []string) error {
	fs := flag.NewFlagSet("forward", flag.ContinueOnError)
	netnsPath := fs.String("netns", "", "network namespace to listen in (path)")
	listenAddr := fs.String("listen", "127.0.0.1:4003", "address to listen on inside -netns")
	to := fs.String("to", "127.0.0.1:4003", "address to connect to from this namespace")
	if err := fs.Parse(args); err != nil {
		return err
	}
	target, err := ns.GetNS(*netnsPath)
	if err != nil {
		return err
	}
	var l net.Listener
	// A socket stays in the namespace it was created in, whatever thread uses it later.
	if err := target.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", *listenAddr)
		return err
	}); err != nil {
		return fmt.Errorf("listening in %s: %w", *netnsPath, err)
	}
	for {
		in, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer in.Close()
			out, err := net.DialTimeout("tcp", *to, 5*time.Second)
			if err != nil {
				return
			}
			defer out.Close()
			go func() {
				io.Copy(out, in)
				// The client is done sending: pass that on, and keep its answer coming.
				out.(*net.TCPConn).CloseWrite()
			}()
			io.Copy(in, out)
		}()
	}
}
