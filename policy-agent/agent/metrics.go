package agent

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		cycle: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "netman_agent_cycle_duration_seconds",
			Help:    "Duration of enforcement cycles by outcome (skipped, unchanged, applied, failed).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"outcome"}),
		enforce: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "netman_agent_enforce_duration_seconds",
			Help:    "Duration of applying a changed rule set (one iptables-restore).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		rules: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "netman_agent_rules",
			Help: "Rules in netman's chains after the last apply.",
		}),
		rulesWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "netman_agent_rules_written_total",
			Help: "Rules sent to iptables-restore (all rules of each chain that changed).",
		}),
		rulesChanged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "netman_agent_rules_changed_total",
			Help: "Rules added or removed by applies.",
		}),
		pollErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "netman_agent_poll_errors_total",
			Help: "Failed cycles by what failed: datastore, policy_server or iptables.",
		}, []string{"source"}),
		containers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "netman_agent_containers",
			Help: "Containers in the datastore at the last fetch.",
		}),
		policies: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "netman_agent_policies",
			Help: "Policies concerning local containers at the last fetch.",
		}),
		lastApplied: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "netman_agent_last_applied_timestamp_seconds",
			Help: "Unix time of the last apply that changed rules.",
		}),
	}
	for _, source := range []string{"datastore", "policy_server", "iptables"} {
		m.pollErrors.WithLabelValues(source)
	}
	m.Registry.MustRegister(m.cycle, m.enforce, m.rules, m.rulesWritten, m.rulesChanged,
		m.pollErrors, m.containers, m.policies, m.lastApplied,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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
