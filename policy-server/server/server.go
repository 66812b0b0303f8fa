// Package server assembles the policy server's processes (the internal mutual-TLS API,
// the health and debug servers, the policy cache and its change watcher) as ifrit
// members, so cmd/policy-server only loads configuration and runs them.
package server

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/tedsuo/ifrit"
	"github.com/tedsuo/ifrit/grouper"

	"netman/lib/httpapi"
	"netman/lib/httpserver"
	"netman/lib/logattr"
	"netman/lib/ratelog"
	"netman/policy-server/api/internalapi"
	"netman/policy-server/config"
	"netman/policy-server/policycache"
)

// Store is what the server needs from the policy store.
type Store interface {
	policycache.Store
	internalapi.Store
	Counts(ctx context.Context) (policies, groups int64, err error)
	// Ping is the health check; it returns when ctx ends even if the database hangs.
	Ping(ctx context.Context) error
	Watch(ctx context.Context, dsn string, pollInterval time.Duration, onChange func(version int64)) error
}

// Deps are the parts the members are built from.
type Deps struct {
	Config   *config.Config
	TLS      *tls.Config // server side of mutual TLS for the internal API
	DB       *sql.DB
	Store    Store
	DSN      string // for the store's LISTEN connection; never logged
	Logger   *slog.Logger
	Registry *prometheus.Registry
	// ExternalRoutes, when set, are served on listen_port (the external API), over
	// TLS when ExternalTLS is set.
	ExternalRoutes []httpapi.Route
	ExternalTLS    *tls.Config
	// Extra members (the Cloud Controller integration's loops) start after the API
	// servers and stop before them.
	Extra grouper.Members
}

// Members returns the ifrit members in start order: debug, policy cache, change
// watcher, internal API, external API (when it has routes), health. Health comes last so that it only answers once the
// API serves; an ordered group stops them in reverse, so health goes first and the API
// drains before the cache and the database go away.
func Members(d Deps) (grouper.Members, error) {
	c := d.Config
	start := time.Now()
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	reg := d.Registry
	for _, col := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewDBStatsCollector(d.DB, "policy_server"),
		newCountsCollector(d.Store),
	} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	httpMetrics := httpapi.NewMetrics(reg)
	cacheMetrics := newCacheMetrics(reg)

	cache := policycache.New(d.Store, policycache.Options{
		QueryTimeout: c.RequestTimeout(),
		Encoding:     internalapi.Encoding(),
		Logger:       d.Logger.With("component", "policy-cache"),
		Observe:      cacheMetrics,
	})
	if err := reg.Register(cacheAge(func() time.Time { _, confirmed := cache.Current(); return confirmed })); err != nil {
		return nil, fmt.Errorf("registering metrics: %w", err)
	}

	// Agents poll the internal API and monitors the health routes: their successes are
	// sampled. Every other external request (people and scripts changing policies) is logged.
	internalMW := httpapi.Middleware{Server: "internal", Logger: d.Logger, Metrics: httpMetrics, Timeout: c.RequestTimeout(), Access: httpapi.NewAccessLog(true)}
	// /health on every listener, as in Cloud Foundry, so a load balancer in front of
	// either API can check it.
	routes := append(internalapi.Routes(cache, d.Store, c.MaxPolicyGroupIDs), HealthRoutes(d.Store.Ping)...)
	internal := &http.Server{
		Addr:      net.JoinHostPort(c.ListenHost, strconv.Itoa(c.InternalListenPort)),
		Handler:   httpapi.NewMux(internalMW, routes),
		TLSConfig: d.TLS,
		// A poll may name up to max_policy_group_ids ids in its URL.
		MaxHeaderBytes: max(1<<20, c.MaxPolicyGroupIDs*48+64<<10),
	}
	healthMW := httpapi.Middleware{Server: "health", Logger: d.Logger, Metrics: httpMetrics, Timeout: c.RequestTimeout(), Access: httpapi.NewAccessLog(true)}
	health := &http.Server{
		Addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(c.HealthCheckPort)),
		Handler: httpapi.NewMux(healthMW, HealthServerRoutes(start, d.Store.Ping)),
	}
	debug := &http.Server{
		Addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(c.DebugServerPort)),
		Handler: DebugHandler(reg),
	}
	names := map[*http.Server]string{internal: "internal", health: "health", debug: "debug"}
	servers := []*http.Server{internal, health, debug}
	var external *http.Server
	if len(d.ExternalRoutes) > 0 {
		externalMW := httpapi.Middleware{Server: "external", Logger: d.Logger, Metrics: httpMetrics, Timeout: c.RequestTimeout(), Access: httpapi.NewAccessLog(false, "health", "uptime")}
		external = &http.Server{
			Addr:      net.JoinHostPort(c.ListenHost, strconv.Itoa(c.ListenPort)),
			Handler:   httpapi.NewMux(externalMW, append(ExternalServerRoutes(start, d.Store.Ping), d.ExternalRoutes...)),
			TLSConfig: d.ExternalTLS,
		}
		servers = append(servers, external)
		names[external] = "external"
	}
	// The runner does the TLS handshakes and reports the failures here.
	handshakeLogs := map[string]func(remote, reason string){}
	for _, s := range servers {
		SetTimeouts(s, c.RequestTimeout())
		name := names[s]
		if s.TLSConfig != nil {
			httpMetrics.ExpectTLS(name)
		}
		// Failed handshakes are structured and bounded: a scanner or a misconfigured
		// client cannot flood the log; the metric counts every one.
		lim := &ratelog.Limiter{Burst: handshakeBurst, Every: handshakeEvery}
		count := func(suppressed bool) { httpMetrics.HandshakeFailed(name, suppressed) }
		s.ErrorLog = ratelog.ServerErrorLog(d.Logger, name, lim, count)
		handshakeLogs[name] = ratelog.HandshakeLogger(d.Logger, name, lim, count)
	}
	// The profile endpoint streams for as long as asked (30s by default).
	debug.WriteTimeout = 0
	drain := c.RequestTimeout() + 5*time.Second

	members := grouper.Members{
		{Name: "debug-server", Runner: &httpserver.Runner{Name: "debug", Server: debug, Drain: drain, Logger: d.Logger}},
		{Name: "policy-cache", Runner: cacheRunner(cache, d.Logger)},
		{Name: "policy-watch", Runner: watchRunner(d.Store, d.DSN, cache, d.Logger)},
		{Name: "internal-server", Runner: &httpserver.Runner{Name: "internal", Server: internal, Drain: drain, Logger: d.Logger, HandshakeFailed: handshakeLogs["internal"]}},
	}
	if external != nil {
		members = append(members, grouper.Member{Name: "external-server", Runner: &httpserver.Runner{Name: "external", Server: external, Drain: drain, Logger: d.Logger, HandshakeFailed: handshakeLogs["external"]}})
	}
	members = append(members, d.Extra...)
	return append(members, grouper.Member{Name: "health-server", Runner: &httpserver.Runner{Name: "health", Server: health, Drain: drain, Logger: d.Logger}}), nil
}

// A listener logs at most handshakeBurst failed TLS handshakes in a row, then one per
// handshakeEvery (docs/operations.md).
const (
	handshakeBurst = 5
	handshakeEvery = 10 * time.Second
)

// SetTimeouts bounds every phase of a connection so a slow or stalled client cannot
// hold one open forever. Writes get the request timeout plus time to send a large
// body (the full policy list is megabytes).
func SetTimeouts(s *http.Server, requestTimeout time.Duration) {
	s.ReadHeaderTimeout = 10 * time.Second
	s.ReadTimeout = 30 * time.Second
	s.WriteTimeout = requestTimeout + 30*time.Second
	s.IdleTimeout = 120 * time.Second
}

// cacheRunner loads the first snapshot before reporting ready, so the internal API
// starts with policies to serve.
func cacheRunner(cache *policycache.Cache, logger *slog.Logger) ifrit.Runner {
	return ifrit.RunFunc(func(signals <-chan os.Signal, ready chan<- struct{}) error {
		if err := cache.Refresh(context.Background()); err != nil {
			logger.Error("loading the first policy snapshot; the internal API answers 503 until it loads", "error", err)
		}
		// The first load leaves garbage as large as half the snapshot (the rows as
		// read), which the runtime would return to the system only bit by bit: return
		// it now, so the resident size starts at what serving needs.
		debug.FreeOSMemory()
		return contextRunner(cache.Run).Run(signals, ready)
	})
}

// watchRunner keeps the store's change feed running, reconnecting after failures.
// The cache polls too, so a broken feed delays nothing beyond the cache's check
// interval.
func watchRunner(store Store, dsn string, cache *policycache.Cache, logger *slog.Logger) ifrit.Runner {
	return contextRunner(func(ctx context.Context) error {
		backoff := 100 * time.Millisecond
		for {
			err := store.Watch(ctx, dsn, time.Second, cache.Changed)
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = errors.New("watch ended")
			}
			logger.Warn("policy change feed interrupted; retrying", "error", err, logattr.Millis("retry_in_ms", backoff))
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
		}
	})
}

// contextRunner runs a loop that stops when its context ends as an ifrit member: the
// context ends at the member's signal, and the member ends when the loop returns.
func contextRunner(run func(ctx context.Context) error) ifrit.Runner {
	return ifrit.RunFunc(func(signals <-chan os.Signal, ready chan<- struct{}) error {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- run(ctx) }()
		close(ready)
		select {
		case <-signals:
			cancel()
			return <-done
		case err := <-done:
			return err
		}
	})
}
