package agent

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"netman/lib/policyclient"
	"netman/lib/rules"
)

// Metrics are the agent's Prometheus series, in a registry of their own. Every name
// starts with netman_agent_; docs/operations.md lists them with their labels.
type Metrics struct {
	Registry *prometheus.Registry

	cycle           *prometheus.HistogramVec
	enforce         prometheus.Histogram
	rules           prometheus.Gauge
	rulesWritten    prometheus.Counter
	rulesChanged    prometheus.Counter
	pollErrors      prometheus.Counter
	datastoreErrors prometheus.Counter
	enforceErrors   prometheus.Counter
	containers      prometheus.Gauge
	policies        prometheus.Gauge
	lastApplied     prometheus.Gauge
	serverRequests  *prometheus.CounterVec
	serverDuration  *prometheus.HistogramVec

	// confirmed returns when the rules were last confirmed to be the server's and the
	// time now, both on the agent's clock (agent.New sets it; nil before).
	confirmed func() (last, now time.Time)
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
		rules:           gauge("netman_agent_rules", "Rules in netman's chains after the last apply."),
		rulesWritten:    counter("netman_agent_rules_written_total", "Rules sent to iptables-restore (all rules of each chain that changed)."),
		rulesChanged:    counter("netman_agent_rules_changed_total", "Rules added or removed by applies."),
		pollErrors:      counter("netman_agent_poll_errors_total", "Cycles that failed because the policy server could not be asked (see netman_agent_server_requests_total for why)."),
		datastoreErrors: counter("netman_agent_datastore_errors_total", "Cycles that failed reading the wrapper's datastore."),
		enforceErrors:   counter("netman_agent_enforce_errors_total", "Cycles whose iptables-restore failed."),
		containers:      gauge("netman_agent_containers", "Containers in the datastore at the last fetch."),
		policies:        gauge("netman_agent_policies", "Policies concerning local containers at the last fetch."),
		lastApplied:     gauge("netman_agent_last_applied_timestamp_seconds", "Unix time of the last apply that changed rules."),
		serverRequests: auto.NewCounterVec(prometheus.CounterOpts{
			Name: "netman_agent_server_requests_total",
			Help: "Requests to the policy server's internal API by route and outcome (success, client_error, server_error, timeout, network_error).",
		}, []string{"route", "outcome"}),
		serverDuration: auto.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "netman_agent_server_request_duration_seconds",
			Help:    "Duration of requests to the policy server's internal API by route and outcome.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "outcome"}),
	}
	reg.MustRegister(ruleAge{m})
	// Every outcome of the policies route the agent polls is exported from the start, so
	// a scrape sees 0 rather than no series and error ratios are defined before the
	// first error.
	for _, o := range []string{policyclient.OutcomeSuccess, policyclient.OutcomeClientError,
		policyclient.OutcomeServerError, policyclient.OutcomeTimeout, policyclient.OutcomeNetwork} {
		m.serverRequests.WithLabelValues(policyclient.PoliciesPath, o)
	}
	return m
}

// ObserveRequest records one request to the policy server (policyclient.Observer).
func (m *Metrics) ObserveRequest(route, outcome string, took time.Duration) {
	m.serverRequests.WithLabelValues(route, outcome).Inc()
	m.serverDuration.WithLabelValues(route, outcome).Observe(took.Seconds())
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

// ruleAge exports netman_agent_rules_age_seconds at scrape time: how long ago the
// enforced rules were last confirmed to match the server's policies. It grows while the
// server is unreachable or cycles fail, so it is the one series to alert on for
// enforcement falling behind. Before the first confirmation there is no series.
type ruleAge struct{ m *Metrics }

var ruleAgeDesc = prometheus.NewDesc("netman_agent_rules_age_seconds",
	"Seconds since the enforced rules were last confirmed to match the policy server's policies.", nil, nil)

func (r ruleAge) Describe(ch chan<- *prometheus.Desc) { ch <- ruleAgeDesc }

func (r ruleAge) Collect(ch chan<- prometheus.Metric) {
	if r.m.confirmed == nil {
		return
	}
	last, now := r.m.confirmed()
	if last.IsZero() {
		return
	}
	ch <- prometheus.MustNewConstMetric(ruleAgeDesc, prometheus.GaugeValue, max(0, now.Sub(last).Seconds()))
}

// MetricsHandler serves /metrics.
func (m *Metrics) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	return mux
}
