// Command policy-load measures a running policy server the way a foundation loads it:
// it seeds policies of a realistic shape into the server's database, then simulates
// agents that poll the internal API over mutual TLS with keep-alive, and reports
// throughput, latency percentiles, response sizes and the server's peak memory.
package main

import (
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/lib/pq" // database/sql driver "postgres"

	"netman/lib/apiwire"
	"netman/lib/buildinfo"
	"netman/lib/mutualtls"
	"netman/policy-server/store"
)

const usage = `Usage: policy-load [flags]

Seeds -policies policies into the database at -database-url (about N/2 apps with random
GUIDs, 1-3 destinations each, tcp 8080), waits until the server at -url serves them,
then runs each scenario for -duration and prints one line per scenario:

  filtered, concurrency C: C simulated agents, each on its own keep-alive mutual-TLS
                           connection, polling ?id= with -ids random app ids, back to back
  full list, concurrency 1: one client fetching all policies, back to back

-url may name several replicas (comma-separated) on one database; pollers spread
over them.

With -churn, each filtered scenario runs without writes for half of -duration, then
for -duration with a policy created or deleted every interval (through the first
replica's external API with -external-url and -token, else straight into the store),
then without writes again for half of -duration, and prints the ratio of the writes'
throughput to the mean of the two without.
During the writes, a client on every replica long-polls policies_last_updated and the
tool reports write committed -> answer (when Postgres has track_commit_timestamp on),
write returned -> answer and write sent -> answer, per replica. With -agents N as well, N simulated
agents (own connection, own 10-50 app ids each) long-poll the v0 list across the
replicas for -duration with the writer, after the filtered scenarios; the tool reports their errors and how long after a write
returned an agent whose answer it changed got the new answer. With -metrics-url (the
replicas' /metrics) it reports the cache fallbacks counted during the writes.

Reported: requests/s, p50/p90/p99/max latency, mean bytes per response, errors, and, with
-server-pid, the server's peak resident memory while the scenario ran (sampled VmRSS) and
its lifetime peak (VmHWM).

Example (server already running with the certificates of scripts/generate-certs):
  policy-load -database-url "$DATABASE_URL" -policies 100000 \
    -url https://127.0.0.1:4003 -ca-cert certs/ca.crt -client-cert certs/client.crt \
    -client-key certs/client.key -server-pid "$(pgrep -n policy-server)"

Flags:
`

type options struct {
	databaseURL  string
	policies     int
	seed         uint64
	url          string
	caCert       string
	clientCert   string
	clientKey    string
	serverPID    int
	ids          int
	concurrency  []int
	duration     time.Duration
	fullDuration time.Duration
	waitTimeout  time.Duration
	churn        time.Duration
	externalURL  string
	token        string
	metricsURLs  []string
	agents       int
	jsonOut      bool
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "policy-load: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var o options
	fs := flag.NewFlagSet("policy-load", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	fs.StringVar(&o.databaseURL, "database-url", os.Getenv("DATABASE_URL"), "Postgres `URL` of the server's database (default $DATABASE_URL)")
	fs.IntVar(&o.policies, "policies", 100000, "`N` policies to seed before loading; 0 seeds nothing and polls the apps already in the database")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed for the generated apps and the id sets")
	fs.StringVar(&o.url, "url", "https://127.0.0.1:4003", "base `URLs` of the servers' internal API (comma-separated replicas)")
	fs.StringVar(&o.caCert, "ca-cert", "", "CA certificate `file` the server's certificate is signed by (required)")
	fs.StringVar(&o.clientCert, "client-cert", "", "client certificate `file` (required)")
	fs.StringVar(&o.clientKey, "client-key", "", "client key `file` (required)")
	fs.IntVar(&o.serverPID, "server-pid", 0, "process id of the server, to report its memory (0: not reported)")
	fs.IntVar(&o.ids, "ids", 10, "`K` app ids per filtered poll")
	conc := fs.String("concurrency", "1,16", "comma-separated `list` of agent counts; one filtered scenario each")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long each filtered scenario runs")
	fs.DurationVar(&o.fullDuration, "full-duration", 10*time.Second, "how long the full-list scenario runs (0 skips it)")
	fs.DurationVar(&o.waitTimeout, "wait", 2*time.Minute, "how long to wait for the server to serve the seeded policies")
	fs.DurationVar(&o.churn, "churn", 0, "during the filtered scenarios, create or delete one policy through the store this often, as operators changing policies would (0: no changes)")
	fs.StringVar(&o.externalURL, "external-url", "", "base `URL` of the external API the -churn writes go through (needs -token; default: write into the store)")
	fs.StringVar(&o.token, "token", os.Getenv("NETMAN_TOKEN"), "bearer `token` with network.admin for -external-url (default $NETMAN_TOKEN)")
	metrics := fs.String("metrics-url", "", "comma-separated /metrics `URLs` of the replicas, to count cache fallbacks during the writes")
	fs.IntVar(&o.agents, "agents", 0, "`N` simulated long-polling agents during the writes (needs -churn)")
	fs.BoolVar(&o.jsonOut, "json", false, "print results as JSON lines instead of text")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *showVersion {
		fmt.Println(buildinfo.Line("policy-load"))
		return nil
	}
	if *metrics != "" {
		o.metricsURLs = strings.Split(*metrics, ",")
	}
	for s := range strings.SplitSeq(*conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-concurrency: %q is not a positive number", s)
		}
		o.concurrency = append(o.concurrency, n)
	}
	switch {
	case o.caCert == "" || o.clientCert == "" || o.clientKey == "":
		return errors.New("-ca-cert, -client-cert and -client-key are required")
	case o.databaseURL == "":
		return errors.New("-database-url (or $DATABASE_URL) is required")
	case o.ids < 1:
		return errors.New("-ids must be at least 1")
	case o.duration <= 0:
		return errors.New("-duration must be positive")
	}
	var bases []*url.URL
	for raw := range strings.SplitSeq(o.url, ",") {
		base, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || base.Scheme != "https" || base.Host == "" {
			return fmt.Errorf("-url %q is not an https URL", raw)
		}
		bases = append(bases, base)
	}
	if o.externalURL != "" && o.token == "" {
		return errors.New("-external-url needs -token (or $NETMAN_TOKEN)")
	}
	tlsConfig, err := mutualtls.ClientConfig(o.clientCert, o.clientKey, o.caCert)
	if err != nil {
		return err
	}
	return load(context.Background(), o, bases, tlsConfig)
}

func load(ctx context.Context, o options, bases []*url.URL, tlsConfig *tls.Config) error {
	db, err := sql.Open("postgres", o.databaseURL)
	if err != nil {
		return errors.New("opening the database: invalid -database-url")
	}
	defer db.Close()
	if err := store.Migrate(ctx, db); err != nil {
		return fmt.Errorf("migrating the database: %w", err)
	}
	rng := rand.New(rand.NewPCG(o.seed, o.seed^0x9e3779b97f4a7c15))

	var groups []string
	if o.policies > 0 {
		start := time.Now()
		groups, err = store.Seed(ctx, db, o.policies, rng)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "policy-load: seeded %d policies between %d apps in %s\n", o.policies, len(groups), time.Since(start).Round(time.Millisecond))
	} else {
		if err := db.QueryRowContext(ctx, `SELECT 1`).Scan(new(int)); err != nil {
			return fmt.Errorf("connecting to the database: %w", err)
		}
		st, err := store.New(db, store.Options{})
		if err != nil {
			return err
		}
		tags, err := st.Tags(ctx)
		if err != nil {
			return err
		}
		for _, t := range tags {
			groups = append(groups, t.ID)
		}
	}
	if len(groups) == 0 {
		return errors.New("no apps to poll for: seed some with -policies N")
	}
	var want int64
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM policies`).Scan(&want); err != nil {
		return fmt.Errorf("counting policies: %w", err)
	}

	for _, base := range bases {
		if err := waitForServer(ctx, tlsConfig, base.JoinPath(apiwire.InternalPoliciesV0Path).String(), int(want), o.waitTimeout); err != nil {
			return err
		}
	}
	policiesURL := func(rng *rand.Rand) string {
		return bases[rng.IntN(len(bases))].JoinPath(apiwire.InternalPoliciesV0Path).String()
	}
	write := writeFunc(nil)
	if o.churn > 0 {
		if o.externalURL != "" {
			write = externalWriter(o.externalURL, o.token, tlsConfig)
		} else {
			st, err := store.New(db, store.Options{})
			if err != nil {
				return err
			}
			write = storeWriter(st)
		}
	}

	var results []result
	replicas := fmt.Sprintf("%d replica(s)", len(bases))
	for _, c := range o.concurrency {
		filtered := func(rng *rand.Rand) string {
			ids := make([]string, o.ids)
			for i := range ids {
				ids[i] = groups[rng.IntN(len(groups))]
			}
			return policiesURL(rng) + "?id=" + strings.Join(ids, ",")
		}
		name := fmt.Sprintf("filtered ids=%d, %s", o.ids, replicas)
		if write == nil {
			quiet := runScenario(ctx, o, tlsConfig, name, c, o.duration, filtered)
			results = append(results, quiet)
			quiet.print(o.jsonOut)
			continue
		}
		// Without writes for half the time before the writes and half after (A B A),
		// so that a drift of the machine's speed counts alike on both sides of the
		// ratio.
		quiet := runScenario(ctx, o, tlsConfig, name+" (before the writes)", c, o.duration/2, filtered)
		results = append(results, quiet)
		quiet.print(o.jsonOut)
		// The same scenario with the writer, long-polling watchers on every replica
		// and, once, the simulated agents.
		log := newWriteLog()
		before, ferr := fallbacks(o.metricsURLs)
		wctx, stopWatch := context.WithCancel(ctx)
		var watchErrs atomic.Int64
		watched := watchReplicas(wctx, bases, tlsConfig, &watchErrs)
		stopWrites := writer(ctx, db, write, groups, o.churn, log)
		busy := runScenario(ctx, o, tlsConfig, fmt.Sprintf("filtered ids=%d, %s, writes every %s", o.ids, replicas, o.churn), c, o.duration, filtered)
		n := stopWrites()
		stopWatch()
		seen := watched()
		after, ferr2 := fallbacks(o.metricsURLs)
		results = append(results, busy)
		busy.print(o.jsonOut)
		quiet2 := runScenario(ctx, o, tlsConfig, name+" (after the writes)", c, o.duration/2, filtered)
		results = append(results, quiet2)
		quiet2.print(o.jsonOut)
		quietRate, quietP99 := (quiet.RequestsPerS+quiet2.RequestsPerS)/2, (quiet.P99ms+quiet2.P99ms)/2
		fmt.Printf("  with/without writes: throughput %.2fx, p99 %.2fx; %d changes committed", busy.RequestsPerS/quietRate, busy.P99ms/quietP99, n)
		if ferr == nil && ferr2 == nil && len(o.metricsURLs) > 0 {
			fmt.Printf("; cache fallbacks during the writes: %.0f", after-before)
		}
		fmt.Println()
		for i, s := range seen {
			took := "took no writes"
			if i == 0 && o.externalURL != "" {
				took = "took the writes"
			}
			for _, from := range []struct {
				since
				name string
			}{{sinceCommitted, "committed"}, {sinceReturned, "returned"}, {sinceSent, "sent"}} {
				if ds := latencies(log, s, from.since); len(ds) > 0 {
					summarize(fmt.Sprintf("  write %s -> long poll answer, replica %d (%s)", from.name, i+1, took), ds, watchErrs.Load()).print(o.jsonOut)
				}
			}
		}
	}
	if write != nil && o.agents > 0 {
		// The simulated agents, on their own, with the writer: how long after a write
		// an agent whose answer it changed has the new answer.
		log := newWriteLog()
		actx, stopAgents := context.WithCancel(ctx)
		warm, done := agents(actx, o.agents, bases, groups, tlsConfig, o.seed)
		start := time.Now()
		<-warm // every agent connected and has its first answer
		fmt.Fprintf(os.Stderr, "policy-load: %d agents connected and answered in %s\n", o.agents, time.Since(start).Round(time.Millisecond))
		stopWrites := writer(ctx, db, write, groups, o.churn, log)
		time.Sleep(o.duration)
		n := stopWrites()
		stopAgents()
		seen, connecting, errs := done()
		if connecting > 0 {
			// A real agent retries too; these happen only while a thousand TLS
			// handshakes queue on the server at once.
			fmt.Fprintf(os.Stderr, "policy-load: %d agent requests failed while the agents connected (retried)\n", connecting)
		}
		if ds := latencies(log, seen, sinceCommitted); len(ds) > 0 {
			summarize(fmt.Sprintf("%d long-polling agents, %s, %d changes: write committed -> new answer", o.agents, replicas, n), ds, errs).print(o.jsonOut)
		}
		summarize(fmt.Sprintf("%d long-polling agents, %s, %d changes: write returned -> new answer", o.agents, replicas, n), latencies(log, seen, sinceReturned), errs).print(o.jsonOut)
		if errs > 0 {
			return fmt.Errorf("%d long-polling agents' requests failed after they connected", errs)
		}
	}
	if o.fullDuration > 0 {
		r := runScenario(ctx, o, tlsConfig, "full list", 1, o.fullDuration, policiesURL)
		results = append(results, r)
		r.print(o.jsonOut)
	}
	for _, r := range results {
		if r.Errors > 0 {
			return fmt.Errorf("%d requests failed in scenario %q (first: %s)", r.Errors, r.Scenario, r.FirstError)
		}
	}
	return nil
}

// waitForServer polls the full list until it holds want policies: the server picks
// up the seeded policies through its change feed.
func waitForServer(ctx context.Context, tlsConfig *tls.Config, u string, want int, timeout time.Duration) error {
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		resp, err := client.Get(u)
		if err == nil {
			var body apiwire.InternalPoliciesV0
			err = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK && len(body.Policies) >= want {
				return nil
			}
			last = fmt.Sprintf("status %d, %d of %d policies", resp.StatusCode, len(body.Policies), want)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the server at %s did not serve the %d policies within %s (last: %s)", u, want, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

type result struct {
	Scenario      string  `json:"scenario"`
	Concurrency   int     `json:"concurrency"`
	Requests      int     `json:"requests"`
	Errors        int     `json:"errors"`
	FirstError    string  `json:"first_error,omitempty"`
	Seconds       float64 `json:"seconds"`
	RequestsPerS  float64 `json:"requests_per_second"`
	P50ms         float64 `json:"p50_ms"`
	P90ms         float64 `json:"p90_ms"`
	P99ms         float64 `json:"p99_ms"`
	Maxms         float64 `json:"max_ms"`
	BytesPerResp  float64 `json:"bytes_per_response"`
	PeakRSSMiB    float64 `json:"server_peak_rss_mib,omitempty"`
	LifetimeHWMiB float64 `json:"server_vmhwm_mib,omitempty"`
}

func (r result) print(asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
		return
	}
	mem := ""
	if r.PeakRSSMiB > 0 {
		mem = fmt.Sprintf("  server RSS peak %.1f MiB (VmHWM %.1f MiB)", r.PeakRSSMiB, r.LifetimeHWMiB)
	}
	fmt.Printf("%-18s concurrency %-3d %8.0f req/s  p50 %7.2f ms  p90 %7.2f ms  p99 %7.2f ms  max %7.2f ms  %9.0f B/resp  %d requests, %d errors%s\n",
		r.Scenario, r.Concurrency, r.RequestsPerS, r.P50ms, r.P90ms, r.P99ms, r.Maxms, r.BytesPerResp, r.Requests, r.Errors, mem)
}

type worker struct {
	latencies []time.Duration
	bytes     int64
	errors    int
	firstErr  string
}

func runScenario(ctx context.Context, o options, tlsConfig *tls.Config, name string, conc int, d time.Duration, next func(*rand.Rand) string) result {
	workers := make([]worker, conc)
	clients := make([]*http.Client, conc)
	for i := range clients {
		// One transport per agent: each keeps its own connection, as agents on
		// different cells do.
		clients[i] = &http.Client{
			Transport: &http.Transport{TLSClientConfig: tlsConfig.Clone(), MaxIdleConnsPerHost: 1, ForceAttemptHTTP2: false},
			Timeout:   30 * time.Second,
		}
		defer clients[i].CloseIdleConnections()
		// The handshake is not part of a poll: do it before the clock starts.
		poll(clients[i], next(rand.New(rand.NewPCG(o.seed, uint64(i)))), &worker{})
	}

	sampler := startRSSSampler(o.serverPID)
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(d)
	for i := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(o.seed+1, uint64(i)))
			w := &workers[i]
			for time.Now().Before(stop) && ctx.Err() == nil {
				poll(clients[i], next(rng), w)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	peak := sampler.stop()

	var all []time.Duration
	r := result{Scenario: name, Concurrency: conc, Seconds: elapsed.Seconds()}
	var bytes int64
	for _, w := range workers {
		all = append(all, w.latencies...)
		bytes += w.bytes
		r.Errors += w.errors
		if r.FirstError == "" {
			r.FirstError = w.firstErr
		}
	}
	slices.Sort(all)
	r.Requests = len(all)
	if n := len(all); n > 0 {
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		pct := func(p float64) float64 { return ms(all[min(n-1, int(float64(n)*p))]) }
		r.P50ms, r.P90ms, r.P99ms, r.Maxms = pct(0.50), pct(0.90), pct(0.99), ms(all[n-1])
		r.BytesPerResp = float64(bytes) / float64(n)
	}
	r.RequestsPerS = float64(r.Requests) / elapsed.Seconds()
	if o.serverPID > 0 {
		r.PeakRSSMiB = float64(peak) / 1024
		if hwm, err := procStatusKiB(o.serverPID, "VmHWM"); err == nil {
			r.LifetimeHWMiB = float64(hwm) / 1024
		}
	}
	return r
}

// poll does one request and records it. Only successful polls count toward latency.
func poll(c *http.Client, u string, w *worker) {
	start := time.Now()
	resp, err := c.Get(u)
	if err != nil {
		w.fail(err.Error())
		return
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		w.fail(err.Error())
		return
	}
	if resp.StatusCode != http.StatusOK {
		w.fail(resp.Status)
		return
	}
	w.latencies = append(w.latencies, took)
	w.bytes += n
}

func (w *worker) fail(msg string) {
	w.errors++
	if w.firstErr == "" {
		w.firstErr = msg
	}
}

type rssSampler struct {
	done chan struct{}
	peak chan int64
}

// startRSSSampler reads the server's VmRSS every 50ms until stop; stop returns the
// highest value seen, in KiB.
func startRSSSampler(pid int) *rssSampler {
	s := &rssSampler{done: make(chan struct{}), peak: make(chan int64, 1)}
	go func() {
		var peak int64
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if pid > 0 {
				if v, err := procStatusKiB(pid, "VmRSS"); err == nil {
					peak = max(peak, v)
				}
			}
			select {
			case <-s.done:
				s.peak <- peak
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) stop() int64 {
	close(s.done)
	return <-s.peak
}

// procStatusKiB reads one "Name:  123 kB" line of /proc/PID/status.
func procStatusKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
