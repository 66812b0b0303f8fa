package ccclient

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics count and time every attempt against CC and UAA, by endpoint ("apps",
// "roles", "security_groups", "asg_latest_update", "uaa_token") and outcome (the
// HTTP status, "error" for no answer, "bad_body" for an undecodable one).
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "netman_cc_requests_total",
			Help: "Requests to Cloud Controller and UAA, retries included, by endpoint and outcome.",
		}, []string{"endpoint", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "netman_cc_request_duration_seconds",
			Help:    "Time of one request to Cloud Controller or UAA, by endpoint.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"endpoint"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration)
	}
	return m
}

func (m *metrics) observe(endpoint, outcome string, d time.Duration) {
	m.requests.WithLabelValues(endpoint, outcome).Inc()
	m.duration.WithLabelValues(endpoint).Observe(d.Seconds())
}
