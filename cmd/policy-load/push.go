package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
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

	"netman/lib/apiwire"
	"netman/lib/models"
	"netman/policy-server/store"
)

// writeFunc creates (or deletes) one policy, as an operator would.
type writeFunc func(ctx context.Context, create bool, p models.Policy) error

// storeWriter writes through the store (no server involved).
func storeWriter(st *store.Store) writeFunc {
	return func(ctx context.Context, create bool, p models.Policy) error {
		if create {
			return st.Create(ctx, []models.Policy{p})
		}
		return st.Delete(ctx, []models.Policy{p})
	}
}

// externalWriter writes through a replica's external v1 API with a bearer token.
func externalWriter(base, token string, tlsConfig *tls.Config) writeFunc {
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig.Clone()}, Timeout: 30 * time.Second}
	return func(ctx context.Context, create bool, p models.Policy) error {
		body, _ := json.Marshal(apiwire.PoliciesRequestV1{Policies: []apiwire.PolicyV1{apiwire.PolicyV1Of(p)}})
		u := strings.TrimSuffix(base, "/") + "/networking/v1/external/policies"
		if !create {
			u += "/delete"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("POST %s: %s: %s", u, resp.Status, b)
		}
		return nil
	}
}

// writeLog maps each store version the writer produced to when its write was sent,
// when it was committed (when Postgres tracks commit timestamps) and when it returned.
type writeLog struct {
	mu    sync.Mutex
	times map[since]map[int64]time.Time
}

// since names the moment of a write a delay is counted from.
type since int

const (
	sinceReturned since = iota
	sinceSent
	sinceCommitted
)

func newWriteLog() *writeLog {
	return &writeLog{times: map[since]map[int64]time.Time{sinceReturned: {}, sinceSent: {}, sinceCommitted: {}}}
}

func (l *writeLog) at(v int64, from since) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.times[from][v]
	return t, ok
}

// writer commits one change every interval until stop, which returns how many it made:
// a policy between seeded apps on a port the seed does not use, deleted on the next
// tick. After each write it reads the store version, so every version it produced is
// paired with the moment its write returned.
func writer(ctx context.Context, db *sql.DB, write writeFunc, groups []string, interval time.Duration, log *writeLog) (stop func() int) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	// The version, and when the transaction that last wrote it committed: the row is
	// written by the trigger of every change, and Postgres knows the commit time of a
	// row's transaction when track_commit_timestamp is on (scripts/with-postgres turns
	// it on; elsewhere the commit time is unknown).
	version := func() (int64, time.Time) {
		var v int64
		var committed sql.NullTime
		if err := db.QueryRowContext(context.Background(), `SELECT version, pg_xact_commit_timestamp(xmin) FROM store_meta`).Scan(&v, &committed); err != nil {
			_ = db.QueryRowContext(context.Background(), `SELECT version FROM store_meta`).Scan(&v)
		}
		return v, committed.Time
	}
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		n := 0
		last, _ := version()
		var pending *models.Policy
		for {
			select {
			case <-ctx.Done():
				if pending != nil {
					_ = write(context.Background(), false, *pending)
				}
				done <- n
				return
			case <-t.C:
			}
			var err error
			sent := time.Now()
			if pending != nil {
				err = write(ctx, false, *pending)
				pending = nil
			} else {
				p := models.Policy{
					Source:      models.Source{ID: groups[n%len(groups)]},
					Destination: models.Destination{ID: groups[(n*7+1)%len(groups)], Protocol: models.ProtocolTCP, Ports: models.Ports{Start: 9999, End: 9999}},
				}
				if err = write(ctx, true, p); err == nil {
					pending = &p
				}
			}
			returned := time.Now()
			if err != nil {
				if ctx.Err() == nil {
					fmt.Fprintf(os.Stderr, "policy-load: changing a policy: %v\n", err)
				}
				continue
			}
			n++
			now, committed := version()
			log.mu.Lock()
			for v := last + 1; v <= now; v++ {
				log.times[sinceSent][v], log.times[sinceReturned][v] = sent, returned
				if !committed.IsZero() && v == now {
					log.times[sinceCommitted][v] = committed
				}
			}
			log.mu.Unlock()
			last = now
		}
	}()
	return func() int { cancel(); return <-done }
}

// sighting is a client learning of version v at time t.
type sighting struct {
	v int64
	t time.Time
}

// latencies turns sightings into delays from the moment from of the write (0 when the
// client saw the change before, as it can before the write's answer reached the writer).
func latencies(log *writeLog, seen []sighting, from since) []time.Duration {
	var out []time.Duration
	for _, s := range seen {
		if w, ok := log.at(s.v, from); ok {
			out = append(out, max(0, s.t.Sub(w)))
		}
	}
	slices.Sort(out)
	return out
}

type latencySummary struct {
	Scenario string  `json:"scenario"`
	Samples  int     `json:"samples"`
	Errors   int64   `json:"errors"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	Maxms    float64 `json:"max_ms"`
}

func summarize(name string, ds []time.Duration, errors int64) latencySummary {
	s := latencySummary{Scenario: name, Samples: len(ds), Errors: errors}
	if n := len(ds); n > 0 {
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		s.P50ms, s.P99ms, s.Maxms = ms(ds[n/2]), ms(ds[min(n-1, n*99/100)]), ms(ds[n-1])
	}
	return s
}

func (s latencySummary) print(asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(s)
		fmt.Println(string(b))
		return
	}
	fmt.Printf("%-44s %6d samples  p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms  %d errors\n", s.Scenario, s.Samples, s.P50ms, s.P99ms, s.Maxms, s.Errors)
}

// longPoller long-polls one URL with If-None-Match and wait, as netman's agent does,
// and reports each answer's version. versionOf reads it from the answer.
type longPoller struct {
	client    *http.Client
	url       string
	versionOf func(resp *http.Response, body []byte) (int64, bool)
	errors    *atomic.Int64
	firstErr  *atomic.Pointer[string] // the first failure, for the report
}

func (lp *longPoller) fail(msg string) {
	lp.errors.Add(1)
	if lp.firstErr != nil {
		lp.firstErr.CompareAndSwap(nil, &msg)
	}
	time.Sleep(100 * time.Millisecond)
}

// run reports every 200 answer; first is set for the first one (no change behind it).
func (lp *longPoller) run(ctx context.Context, report func(s sighting, first bool)) {
	etag := ""
	for ctx.Err() == nil {
		u := lp.url
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
			req.URL.RawQuery = strings.TrimPrefix(req.URL.RawQuery+"&"+apiwire.WaitParam+"=30", "&")
		}
		resp, err := lp.client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				lp.fail(err.Error())
			}
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		now := time.Now()
		switch {
		case err != nil || resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotModified:
			if ctx.Err() == nil {
				lp.fail(fmt.Sprintf("%s: %v %s", resp.Status, err, bytes.TrimSpace(body)))
			}
		case resp.StatusCode == http.StatusOK:
			first := etag == ""
			etag = resp.Header.Get("ETag")
			if v, ok := lp.versionOf(resp, body); ok {
				report(sighting{v, now}, first)
			}
		}
	}
}

func etagVersion(resp *http.Response, _ []byte) (int64, bool) {
	v, err := strconv.ParseInt(strings.Trim(resp.Header.Get("ETag"), `"`), 10, 64)
	return v, err == nil
}

// watchReplicas long-polls policies_last_updated on every replica until ctx ends and
// returns, per replica, when it saw each version.
func watchReplicas(ctx context.Context, bases []*url.URL, tlsConfig *tls.Config, errs *atomic.Int64) func() [][]sighting {
	seen := make([][]sighting, len(bases))
	var wg sync.WaitGroup
	for i, b := range bases {
		lp := &longPoller{
			client: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig.Clone()}},
			url:    b.JoinPath(apiwire.InternalLastUpdatedV1Path).String(),
			// The version a replica serves is the body; every version up to it is visible.
			versionOf: func(_ *http.Response, body []byte) (int64, bool) {
				v, err := strconv.ParseInt(strings.TrimSpace(string(body)), 10, 64)
				return v, err == nil
			},
			errors: errs,
		}
		var last int64
		wg.Go(func() {
			lp.run(ctx, func(s sighting, first bool) {
				if !first {
					for v := last + 1; v <= s.v; v++ {
						seen[i] = append(seen[i], sighting{v, s.t})
					}
				}
				last = s.v
			})
		})
	}
	return func() [][]sighting { wg.Wait(); return seen }
}

// agents starts n simulated agents, each with its own connection and its own 10-50 app
// ids, long-polling the v0 list on the replicas in turn, until ctx ends. warm is closed
// once every agent has its first answer; done returns, once ctx ended, when each learnt
// of a change that concerned it, and how many requests failed while the agents
// connected and afterwards.
func agents(ctx context.Context, n int, bases []*url.URL, groups []string, tlsConfig *tls.Config, seed uint64) (warm <-chan struct{}, done func() (seen []sighting, connecting, running int64)) {
	var mu sync.Mutex
	var seen []sighting
	var errs atomic.Int64
	var firstErr atomic.Pointer[string]
	var wg, warming sync.WaitGroup
	warming.Add(n)
	for i := range n {
		rng := rand.New(rand.NewPCG(seed+7, uint64(i)))
		ids := make([]string, 10+rng.IntN(41))
		for j := range ids {
			ids[j] = groups[rng.IntN(len(groups))]
		}
		lp := &longPoller{
			client:    &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig.Clone(), MaxIdleConnsPerHost: 1}},
			url:       bases[i%len(bases)].JoinPath(apiwire.InternalPoliciesV0Path).String() + "?id=" + strings.Join(ids, ","),
			versionOf: etagVersion,
			errors:    &errs,
			firstErr:  &firstErr,
		}
		var once sync.Once
		wg.Go(func() {
			defer lp.client.CloseIdleConnections()
			defer once.Do(warming.Done)
			lp.run(ctx, func(s sighting, first bool) {
				if first {
					once.Do(warming.Done)
					return
				}
				mu.Lock()
				seen = append(seen, s)
				mu.Unlock()
			})
		})
	}
	warmed := make(chan struct{})
	var connecting int64
	go func() { warming.Wait(); connecting = errs.Load(); close(warmed) }()
	return warmed, func() ([]sighting, int64, int64) {
		wg.Wait()
		<-warmed
		if e := firstErr.Load(); e != nil {
			fmt.Fprintf(os.Stderr, "policy-load: first agent error: %.300s\n", *e)
		}
		return seen, connecting, errs.Load() - connecting
	}
}

// fallbacks sums the cache fallback counters the replicas' /metrics report (0 when no
// metrics URL was given).
func fallbacks(urls []string) (float64, error) {
	var total float64
	for _, u := range urls {
		resp, err := http.Get(u)
		if err != nil {
			return 0, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return 0, err
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			name, value, ok := strings.Cut(line, " ")
			if ok && strings.HasSuffix(name, "cache_fallbacks_total") {
				f, _ := strconv.ParseFloat(strings.TrimSpace(value), 64)
				total += f
			}
		}
	}
	return total, nil
}
