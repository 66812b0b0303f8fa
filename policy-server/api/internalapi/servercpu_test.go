package internalapi_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tedsuo/ifrit"

	"netman/internal/testsupport/serverlog"
	"netman/lib/httpserver"
	"netman/lib/mutualtls"
	"netman/lib/mutualtls/mutualtlstest"
	"netman/policy-server/api/internalapi"
	"netman/policy-server/server"
	"netman/policy-server/store"
)

// serverCPUEnv names the configuration file of the server BenchmarkPoll100IDsServerCPU
// starts: set, this test binary is that server instead of running tests.
const serverCPUEnv = "NETMAN_BENCH_SERVER_CPU_CONFIG"

// serverCPUProfileEnv, when set to a file name, has that server write a CPU profile of
// its rounds there.
const serverCPUProfileEnv = "NETMAN_BENCH_SERVER_CPUPROFILE"

// preEncodedPath is where the benchmark's server serves the pre-encoded answers, beside
// the real route on the same listener, mux and middleware.
const preEncodedPath = "/pre-encoded" + internalapi.PoliciesPath

// Rounds of BenchmarkPoll100IDsServerCPU: cpuBlocks blocks of four rounds (snapshot,
// pre-encoded, pre-encoded, snapshot) of cpuRoundRequests requests each, sent by
// cpuClients keep-alive connections at once.
const (
	cpuBlocks        = 4
	cpuRoundRequests = 2000
	cpuClients       = 4
)

// TestMain runs the tests, or is the server of BenchmarkPoll100IDsServerCPU.
func TestMain(m *testing.M) {
	if path := os.Getenv(serverCPUEnv); path != "" {
		os.Exit(serveForCPU(path))
	}
	os.Exit(m.Run())
}

// serverCPUConfig is what the benchmark hands its server, as JSON in a file.
type serverCPUConfig struct {
	DSN     string // the seeded database
	Certs   mutualtlstest.Files
	Targets []string // the polls to encode the pre-encoded answers of
}

// BenchmarkPoll100IDsServerCPU measures the server's CPU time per 100-id poll, the
// issue's own words ("server CPU per request ≤ 1.5x that of a handler writing a
// pre-encoded body"), where BenchmarkPoll100IDs measures both handlers in-process
// without TLS. The server is this test binary started again (TestMain), so that its CPU
// time, read from /proc, is the server's alone and not the clients'. It serves over the
// internal API's mutual TLS on one listener both the v0 route over a snapshot of
// 100,000 policies and, behind the same mux and middleware, a handler writing the exact
// bytes that route answers (preEncodedRoute), for the polls of poll100Targets. Four
// keep-alive clients send each round's requests; rounds alternate ABBA, and each
// handler's figure is the median of its rounds, the ratio the median of the ratios of
// adjacent rounds, so a neighbour's load on the machine weighs on both sides alike.
//
// It runs its rounds once whatever b.N is (seeding and starting take most of a
// minute): run it with -benchtime 1x:
//
//	scripts/with-postgres go test -run '^$' -bench Poll100IDsServerCPU -benchtime 1x ./policy-server/api/internalapi/
func BenchmarkPoll100IDsServerCPU(b *testing.B) {
	_, groups, dsn := seededStore(b)
	targets := poll100Targets(groups)
	dir := b.TempDir()
	certs, _ := mutualtlstest.WriteFiles(b, dir)
	srv := startCPUServer(b, dir, serverCPUConfig{DSN: dsn, Certs: certs, Targets: targets})

	tlsConfig, err := mutualtls.ClientConfig(certs.ClientCert, certs.ClientKey, certs.CACert)
	if err != nil {
		b.Fatal(err)
	}
	var dials atomic.Int64
	clients := make([]*http.Client, cpuClients)
	for i := range clients {
		// As lib/policyclient's transport: HTTP/1.1 over the pinned TLS, kept alive.
		clients[i] = &http.Client{Timeout: time.Minute, Transport: &http.Transport{
			TLSClientConfig: tlsConfig,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				dials.Add(1)
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
			MaxIdleConnsPerHost: 2,
			ForceAttemptHTTP2:   false,
		}}
		b.Cleanup(clients[i].CloseIdleConnections)
	}
	p := &cpuPoller{base: "https://" + srv.addr, clients: clients}

	// Both routes must answer every poll with the same bytes, or the comparison is of
	// two different jobs; their length is then what every answer of a round must have.
	var total int
	for i, target := range targets {
		_, query, _ := strings.Cut(target, "?")
		snap, err := get(clients[i%len(clients)], p.base+internalapi.PoliciesPath+"?"+query)
		if err != nil {
			b.Fatal(err)
		}
		pre, err := get(clients[i%len(clients)], p.base+preEncodedPath+"?"+query)
		if err != nil {
			b.Fatal(err)
		}
		if !bytes.Equal(snap, pre) {
			b.Fatalf("poll %d: the pre-encoded answer (%d bytes) differs from the snapshot's (%d bytes)", i, len(pre), len(snap))
		}
		p.queries = append(p.queries, query)
		p.lengths = append(p.lengths, int64(len(snap)))
		total += len(snap)
	}
	b.Logf("%d polls of 100 ids, answers of %d bytes on average", len(targets), total/len(targets))

	// One round of each unmeasured: the server's heap and the connections settle.
	for _, path := range []string{internalapi.PoliciesPath, preEncodedPath} {
		if _, err := p.round(srv.pid, path); err != nil {
			b.Fatal(err)
		}
	}
	var snapshot, preEncoded, ratios []float64
	for range cpuBlocks {
		var pair [2]float64 // this block's snapshot, pre-encoded round in progress
		for i, path := range []string{internalapi.PoliciesPath, preEncodedPath, preEncodedPath, internalapi.PoliciesPath} {
			cpu, err := p.round(srv.pid, path)
			if err != nil {
				b.Fatal(err)
			}
			perReq := float64(cpu.Nanoseconds()) / 1e3 / cpuRoundRequests
			if path == preEncodedPath {
				preEncoded = append(preEncoded, perReq)
				pair[1] = perReq
			} else {
				snapshot = append(snapshot, perReq)
				pair[0] = perReq
			}
			if i%2 == 1 { // rounds 1-2 and 3-4 of a block are the adjacent pairs
				ratios = append(ratios, pair[0]/pair[1])
			}
		}
	}
	// Every request of every round went over the connections the first polls opened.
	if n := dials.Load(); n != int64(len(clients)) {
		b.Fatalf("%d connections dialled for %d clients: keep-alive did not hold", n, len(clients))
	}
	// A few lines, not one per round: go test shows only ten lines of a benchmark's log
	// without -v.
	b.Logf("server CPU per request, µs, by round (%d requests each, ABBA order):", cpuRoundRequests)
	b.Logf("  snapshot     %s", figures(snapshot, "%.1f"))
	b.Logf("  pre-encoded  %s", figures(preEncoded, "%.1f"))
	b.Logf("  ratio        %s (adjacent rounds)", figures(ratios, "%.2f"))
	b.ReportMetric(0, "ns/op") // the wall time of the whole run says nothing
	b.ReportMetric(median(snapshot), "snapshot-cpu-us/req")
	b.ReportMetric(median(preEncoded), "pre-encoded-cpu-us/req")
	b.ReportMetric(median(ratios), "ratio")
}

// cpuPoller sends the benchmark's rounds.
type cpuPoller struct {
	base    string // https://host:port
	clients []*http.Client
	queries []string // of the polls, in order
	lengths []int64  // of their answers
}

// round sends cpuRoundRequests polls to path, spread over the clients, checks every
// answer and returns the CPU time the server (process pid) spent meanwhile.
func (p *cpuPoller) round(pid int, path string) (time.Duration, error) {
	var next atomic.Int64
	errs := make([]error, len(p.clients))
	before, err := threadCPU(pid)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	for c, client := range p.clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= cpuRoundRequests {
					return
				}
				k := i % len(p.queries)
				if errs[c] = poll(client, p.base+path+"?"+p.queries[k], p.lengths[k]); errs[c] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	after, err := threadCPU(pid)
	if err := errors.Join(append(errs, err)...); err != nil {
		return 0, err
	}
	var cpu time.Duration
	for tid, t := range before {
		a, ok := after[tid]
		if !ok {
			// Its time left with it: the round's figure would be short.
			return 0, fmt.Errorf("thread %d of the server ended during a round", tid)
		}
		cpu += a - t
	}
	for tid, a := range after {
		if _, ok := before[tid]; !ok {
			cpu += a
		}
	}
	return cpu, nil
}

// poll GETs url and checks it is a 200 of want bytes, reading the body as an agent does
// (the connection is then reused).
func poll(c *http.Client, url string, want int64) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	switch {
	case err != nil:
		return fmt.Errorf("reading an answer: %w", err)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("a poll of %s got status %d", resp.Request.URL.Path, resp.StatusCode)
	case n != want:
		return fmt.Errorf("a poll of %s got %d bytes, want %d", resp.Request.URL.Path, n, want)
	}
	return nil
}

func get(c *http.Client, url string) ([]byte, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: status %d: %.200s", resp.Request.URL.Path, resp.StatusCode, body)
	}
	return body, err
}

// threadCPU is the CPU time each thread of process pid has run, from the first field
// of /proc/<pid>/task/<tid>/schedstat (nanoseconds; /proc/<pid>/stat counts only clock
// ticks, 10 ms, too coarse for a round).
func threadCPU(pid int) (map[int]time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading the server's threads: %w", err)
	}
	cpu := make(map[int]time.Duration, len(entries))
	for _, e := range entries {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat"))
		if errors.Is(err, os.ErrNotExist) {
			continue // ended since the listing; round tells when it mattered
		}
		if err != nil {
			return nil, fmt.Errorf("reading the server's CPU time: %w", err)
		}
		fields := strings.Fields(string(data))
		if len(fields) == 0 {
			return nil, fmt.Errorf("%s/%d/schedstat: %q is not a schedstat line", dir, tid, data)
		}
		ns, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s/%d/schedstat: %w", dir, tid, err)
		}
		cpu[tid] = time.Duration(ns)
	}
	return cpu, nil
}

func figures(xs []float64, format string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(s, " ")
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// cpuServer is the benchmark's server process.
type cpuServer struct {
	addr string
	pid  int
}

// startCPUServer starts this test binary as the benchmark's server with cfg (written
// into dir) and returns once it listens. It ends when its stdin closes, which the
// benchmark's cleanup does, and the parent's own end does too, however it ends; a
// server that does not end then is killed.
func startCPUServer(b *testing.B, dir string, cfg serverCPUConfig) cpuServer {
	b.Helper()
	data, err := json.Marshal(cfg)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, "server.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), serverCPUEnv+"="+path)
	out := &serverlog.Log{}
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("starting the server: %v", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
			b.Errorf("the server did not end within 30s of its stdin closing; killed it")
		}
		if waitErr != nil && !b.Failed() {
			b.Errorf("the server ended with %v:\n%s", waitErr, out)
		}
		if b.Failed() {
			b.Logf("---- server output ----\n%s", out)
		}
	})
	// Loading 100,000 policies and encoding the answers takes a few seconds; a slow,
	// shared machine gets a generous bound.
	return cpuServer{addr: out.Addr(b, "internal", exited, 3*time.Minute), pid: cmd.Process.Pid}
}

// serveForCPU is the benchmark's server: the internal API's v0 route over a snapshot of
// the seeded database and the pre-encoded answers, over the internal API's mutual TLS,
// run by the server runner until stdin closes. Its log (the runner's "listening" line,
// failed handshakes) is on stdout, its failures on stderr.
func serveForCPU(path string) int {
	if err := runCPUServer(path); err != nil {
		fmt.Fprintln(os.Stderr, "benchmark server:", err)
		return 1
	}
	return 0
}

func runCPUServer(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg serverCPUConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	db, err := sql.Open("postgres", cfg.DSN)
	if err != nil {
		return err
	}
	defer db.Close()
	st, err := store.New(db, store.Options{})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	routes, err := snapshotRoutes(ctx, st)
	if err != nil {
		return err
	}
	pre, err := preEncodedRoute(benchMux(routes), preEncodedPath, cfg.Targets)
	if err != nil {
		return err
	}
	tlsConfig, err := mutualtls.ServerConfig(cfg.Certs.ServerCert, cfg.Certs.ServerKey, cfg.Certs.CACert)
	if err != nil {
		return err
	}
	if path := os.Getenv(serverCPUProfileEnv); path != "" {
		// Where the server's CPU goes, both handlers together (go tool pprof -focus
		// tells them apart).
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: benchMux(append(routes, pre)), TLSConfig: tlsConfig}
	server.SetTimeouts(srv, 5*time.Second) // the deadlines a production connection carries
	proc := ifrit.Invoke(&httpserver.Runner{Name: "internal", Server: srv, Listener: ln, Drain: 5 * time.Second,
		Logger: slog.New(slog.NewJSONHandler(os.Stdout, nil))})
	stdinClosed := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stdinClosed) }()
	select {
	case err := <-proc.Wait():
		return err
	case <-stdinClosed:
		proc.Signal(syscall.SIGTERM)
		return <-proc.Wait()
	}
}
