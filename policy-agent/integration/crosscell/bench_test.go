package crosscell_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"netman/internal/testsupport/foundation"
	"netman/internal/testsupport/testenv"
	"netman/lib/rules/rulestest"
)

// newBenchFoundation builds a foundation of its own for one benchmark.
func newBenchFoundation(b *testing.B, cells int) *foundation.Foundation {
	b.Helper()
	opts := foundation.Require(b)
	testenv.RequireCommand(b, "iperf3")
	opts.Bin, opts.Cells = b.TempDir(), cells
	if err := foundation.Build(opts.Bin); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f, err := foundation.New(ctx, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := f.Close(); err != nil {
			b.Error(err)
		}
	})
	return f
}

func benchContainer(b *testing.B, f *foundation.Foundation, cell int, name, app string) (*foundation.Container, ns.NetNS) {
	b.Helper()
	ct, err := f.Cells[cell-1].AddContainer(b.Context(), name, app)
	if err != nil {
		b.Fatal(err)
	}
	n, err := ns.GetNS("/run/netns/" + ct.NS)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { n.Close() })
	return ct, n
}

// BenchmarkCrossCellDataPath measures, side by side in one run, TCP throughput (iperf3,
// one stream, 2 s) and connection setup (connect + first byte) from A on cell 1 to B on
// cell 2 with netman's rules and 10,000 policies for B vs the same overlay with netman's
// FORWARD jump removed on both cells (no rules at all: no marks, no chains). The policy
// that admits A is the last of the 10,000 in B's chain (the others use lower ports), so a
// new connection is judged by the longest scan.
//
//	scripts/with-postgres go test -run '^$' -bench CrossCellDataPath -benchtime 3x ./policy-agent/integration/crosscell/
func BenchmarkCrossCellDataPath(b *testing.B) {
	f := newBenchFoundation(b, 2)
	appA, appB := newApp(b), newApp(b)
	a, nsA := benchContainer(b, f, 1, "a", appA)
	bb, nsB := benchContainer(b, f, 2, "b", appB)
	rulestest.Serve(b, nsB, 8080)
	iperf := exec.Command("ip", "netns", "exec", bb.NS, "iperf3", "-s", "-p", "5201")
	if err := iperf.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = iperf.Process.Kill(); _ = iperf.Wait() })

	ps := []foundation.Policy{{Source: appA, Destination: appB, Protocol: "tcp", Port: 5201}, {Source: appA, Destination: appB, Protocol: "tcp", Port: 8080}}
	for i := range 10000 - len(ps) {
		ps = append(ps, foundation.Policy{Source: newApp(b), Destination: appB, Protocol: "tcp", Port: 1024 + i%4000})
	}
	if err := f.AddPolicies(b.Context(), ps); err != nil {
		b.Fatal(err)
	}
	to := bb.IP + ":8080"
	rulestest.Until(b, nsA, "tcp", to, true, 2*time.Minute)
	// The policies arrive in two requests; wait for cell 2 to enforce all of them.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := f.Cells[1].Exec(b.Context(), "iptables-save", "-t", "filter")
		if err != nil {
			b.Fatal(err)
		}
		n := strings.Count(string(out), "-m mark --mark")
		if n == 10000 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("cell 2 holds %d allow rules, want 10,000", n)
		}
		time.Sleep(200 * time.Millisecond)
	}

	jump := func(on bool) {
		op := "-D"
		if on {
			op = "-I"
		}
		for _, c := range f.Cells[:2] {
			args := []string{"iptables", "-w", op, "FORWARD"}
			if on {
				args = append(args, "1")
			}
			if out, err := c.Exec(b.Context(), append(args, "-j", "netman-forward")...); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
		}
	}
	// b.N is how many rounds to run; each round is slow, so it is used as a count. A round
	// measures rules, none, none, rules (ABBA), so drift in what else the machine runs
	// cancels within the round; the ratios are the medians of the rounds' ratios.
	var tput = map[bool][]float64{}
	var setup = map[bool][]time.Duration{}
	var tputRatios, setupRatios []float64
	for i := 0; i < b.N; i++ {
		round := map[bool]float64{}
		roundSetup := map[bool][]time.Duration{}
		for _, rules := range []bool{true, false, false, true} {
			jump(rules)
			bps := throughput(b, a, bb.IP)
			ds := connectTimes(b, nsA, to, 100)
			tput[rules] = append(tput[rules], bps)
			setup[rules] = append(setup[rules], ds...)
			round[rules] += bps
			roundSetup[rules] = append(roundSetup[rules], ds...)
			if !rules {
				jump(true)
			}
		}
		tputRatios = append(tputRatios, round[true]/round[false])
		setupRatios = append(setupRatios, float64(percentile(roundSetup[true], 50))/float64(percentile(roundSetup[false], 50)))
	}
	withS, withoutS := percentile(setup[true], 50), percentile(setup[false], 50)
	b.ReportMetric(median(tput[true])/1e9, "Gbit/s-rules")
	b.ReportMetric(median(tput[false])/1e9, "Gbit/s-norules")
	b.ReportMetric(median(tputRatios), "throughput-ratio")
	b.ReportMetric(float64(withS.Microseconds()), "setup-p50-µs-rules")
	b.ReportMetric(float64(withoutS.Microseconds()), "setup-p50-µs-norules")
	b.ReportMetric(median(setupRatios), "setup-ratio")
	b.Logf("per-round throughput ratios %.3f, setup p50 ratios %.3f", tputRatios, setupRatios)
}

func throughput(b *testing.B, a *foundation.Container, ip string) float64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
	defer cancel()
	out, err := a.Exec(ctx, "iperf3", "-c", ip, "-p", "5201", "-t", "2", "-J")
	if err != nil {
		b.Fatalf("iperf3: %v", err)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.End.SumReceived.BitsPerSecond == 0 {
		b.Fatalf("iperf3 output: %v\n%s", err, out)
	}
	return r.End.SumReceived.BitsPerSecond
}

// connectTimes opens n connections from n to addr, one after another, each timed from
// connect to the server's first byte.
func connectTimes(b *testing.B, from ns.NetNS, addr string, n int) []time.Duration {
	b.Helper()
	var ds []time.Duration
	err := from.Do(func(ns.NetNS) error {
		buf := make([]byte, 2)
		for range n {
			start := time.Now()
			c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
			if err != nil {
				return err
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Read(buf); err != nil {
				c.Close()
				return err
			}
			ds = append(ds, time.Since(start))
			c.Close()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return ds
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := min(len(s)-1, len(s)*p/100)
	return s[i]
}

// BenchmarkConvergence measures how long after `POST /networking/v1/external/policies`
// returns a new policy is enforced on every cell: the source S runs on cell 1, the
// destination app D has one instance on each cell, and a prober per cell dials its
// instance every 20 ms; a sample is the time from the API's answer to that cell's first
// accepted connection. Every iteration adds one policy on a fresh port. Agents poll
// every second (the foundation's setting; the job's default is 5 s).
//
//	NETMAN_BENCH_CELLS=10 scripts/with-postgres go test -run '^$' -bench Convergence -benchtime 10x ./policy-agent/integration/crosscell/
func BenchmarkConvergence(b *testing.B) {
	cells := 10
	if v, err := strconv.Atoi(os.Getenv("NETMAN_BENCH_CELLS")); err == nil && v > 0 {
		cells = v
	}
	f := newBenchFoundation(b, cells)
	appS, appD := newApp(b), newApp(b)
	_, nsS := benchContainer(b, f, 1, "s", appS)
	dests := make([]*foundation.Container, cells)
	for i := range cells {
		ct, n := benchContainer(b, f, i+1, "d", appD)
		dests[i] = ct
		for p := 0; p < max(b.N, 1); p++ {
			rulestest.Serve(b, n, 20000+p)
		}
	}
	// Tags are assigned and every cell knows D before the first sample.
	warm := foundation.Policy{Source: appS, Destination: appD, Protocol: "udp", Port: 9}
	if err := f.AddPolicies(b.Context(), []foundation.Policy{warm}); err != nil {
		b.Fatal(err)
	}
	for _, c := range f.Cells {
		deadline := time.Now().Add(time.Minute)
		for {
			out, _ := c.Exec(b.Context(), "iptables-save", "-t", "filter")
			if strings.Contains(string(out), "--dport 9 -m mark") {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("cell %d did not apply the warm-up policy within a minute", c.Index)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	var samples []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		port := 20000 + i
		p := foundation.Policy{Source: appS, Destination: appD, Protocol: "tcp", Port: port}
		for _, d := range dests {
			if ok, _ := rulestest.Reach(nsS, "tcp", fmt.Sprintf("%s:%d", d.IP, port), time.Second); ok {
				b.Fatalf("%s:%d reachable before its policy", d.IP, port)
			}
		}
		if err := f.AddPolicies(b.Context(), []foundation.Policy{p}); err != nil {
			b.Fatal(err)
		}
		added := time.Now()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, d := range dests {
			wg.Add(1)
			go func() {
				defer wg.Done()
				addr := fmt.Sprintf("%s:%d", d.IP, port)
				for time.Since(added) < time.Minute {
					if ok, _ := rulestest.Reach(nsS, "tcp", addr, time.Second); ok {
						mu.Lock()
						samples = append(samples, time.Since(added))
						mu.Unlock()
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
		}
		wg.Wait()
	}
	b.StopTimer()
	if len(samples) != b.N*cells {
		b.Fatalf("%d of %d cells enforced the policies within a minute", len(samples), b.N*cells)
	}
	b.ReportMetric(float64(cells), "cells")
	b.ReportMetric(percentile(samples, 50).Seconds(), "p50-s")
	b.ReportMetric(percentile(samples, 99).Seconds(), "p99-s")
	b.ReportMetric(0, "ns/op")
}
