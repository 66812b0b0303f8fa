package agent

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"netman/lib/rules"
)

// Metrics are the agent's Prometheus series, in a registry of their own.
type Metrics struct {
	Registry *prometheus.Registry

	cycle        *prometheus.HistogramVec
	enforce      prometheus.Histogram
	rules        prometheus.Gauge
	rulesWritten prometheus.Counter
	rulesChanged prometheus.Counter
	pollErrors   *prometheus.CounterVec
	containers   prometheus.Gauge
	policies     prometheus.Gauge
	lastApplied  prometheus.Gauge
}

// NewMetrics creates the series and registers them, with the Go and process collectors.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	auto := promauto.With(reg)
	gauge := func(name, help string) prometheus.Gauge {
		return auto.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	counter := func(name, help string) prometheus.Counter {
		return auto.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &Metrics{
		Registry: reg,
		cycle: auto.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "netman_agent_cycle_duration_seconds",
			Help:    "Duration of enforcement cycles by outcome (skipped, unchanged, applied, failed).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"outcome"}),
		enforce: auto.NewHistogram(prometheus.HistogramOpts{
			Name:    "netman_agent_enforce_duration_seconds",
			Help:    "Duration of applying a changed rule set (one iptables-restore).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		rules:        gauge("netman_agent_rules", "Rules in netman's chains after the last apply."),
		rulesWritten: counter("netman_agent_rules_written_total", "Rules sent to iptables-restore (all rules of each chain that changed)."),
		rulesChanged: counter("netman_agent_rules_changed_total", "Rules added or removed by applies."),
		pollErrors: auto.NewCounterVec(prometheus.CounterOpts{
			Name: "netman_agent_poll_errors_total",
			Help: "Failed cycles by what failed: datastore, policy_server or iptables.",
		}, []string{"source"}),
		containers:  gauge("netman_agent_containers", "Containers in the datastore at the last fetch."),
		policies:    gauge("netman_agent_policies", "Policies concerning local containers at the last fetch."),
		lastApplied: gauge("netman_agent_last_applied_timestamp_seconds", "Unix time of the last apply that changed rules."),
	}
	// Every source is exported from the start, so a scrape sees 0 rather than no series.
	for _, source := range []string{"datastore", "policy_server", "iptables"} {
		m.pollErrors.WithLabelValues(source)
	}
	return m
}

func (m *Metrics) observeCycle(out Outcome, d time.Duration) {
	m.cycle.WithLabelValues(string(out)).Observe(d.Seconds())
}

func (m *Metrics) applied(res rules.Result) {
	m.rules.Set(float64(res.Rules))
	m.rulesWritten.Add(float64(res.RulesWritten))
	m.rulesChanged.Add(float64(res.RulesChanged))
	m.lastApplied.SetToCurrentTime()
}

// MetricsHandler serves /metrics.
func (m *Metrics) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	return mux
}

// HealthHandler serves GET /health: 200 once the agent has enforced rules at least once
// (it stays 200 while the policy server is away: the last rules are still enforced, and a
// restart would not help), 503 before that. The body is the Status either way.
func (a *Agent) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		s := a.Status()
		w.Header().Set("Content-Type", "application/json")
		if !s.Enforcing {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(s)
	})
	return mux
}
