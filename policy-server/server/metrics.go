package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// countsCollector reports the number of policies and tags at scrape time. The store
// answers from cheap counts, not full scans.
type countsCollector struct {
	store    Store
	policies *prometheus.Desc
	tags     *prometheus.Desc
}

func newCountsCollector(store Store) *countsCollector {
	return &countsCollector{
		store:    store,
		policies: prometheus.NewDesc("netman_server_policies", "Policies in the database.", nil, nil),
		tags:     prometheus.NewDesc("netman_server_tags", "Policy groups holding a tag in the database.", nil, nil),
	}
}

func (c *countsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.policies
	ch <- c.tags
}

func (c *countsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	policies, groups, err := c.store.Counts(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.policies, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.policies, prometheus.GaugeValue, float64(policies))
	ch <- prometheus.MustNewConstMetric(c.tags, prometheus.GaugeValue, float64(groups))
}

// cacheMetrics observes the policy cache.
type cacheMetrics struct {
	version   prometheus.Gauge
	size      prometheus.Gauge
	rebuild   prometheus.Histogram
	apply     prometheus.Histogram
	fallbacks prometheus.Counter
}

func newCacheMetrics(reg prometheus.Registerer) *cacheMetrics {
	m := &cacheMetrics{
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "netman_server_cache_version", Help: "Database policy version of the served snapshot.",
		}),
		size: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "netman_server_cache_policies", Help: "Policies in the served snapshot.",
		}),
		rebuild: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "netman_server_cache_rebuild_duration_seconds",
			Help:    "Time to load all policies into a new snapshot (at start, after a gap in the change log, and in the periodic full check).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
		apply: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "netman_server_cache_apply_duration_seconds",
			Help:    "Time to read the logged changes and apply them to a new snapshot.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "netman_server_cache_fallbacks_total",
			Help: "Requests that found the snapshot unconfirmed for longer than its maximum age and waited for a shared check (or were answered unconfirmed).",
		}),
	}
	reg.MustRegister(m.version, m.size, m.rebuild, m.apply, m.fallbacks)
	return m
}

func (m *cacheMetrics) Rebuilt(version int64, policies int, took time.Duration) {
	m.version.Set(float64(version))
	m.size.Set(float64(policies))
	m.rebuild.Observe(took.Seconds())
}

func (m *cacheMetrics) Applied(version int64, policies, _ int, took time.Duration) {
	m.version.Set(float64(version))
	m.size.Set(float64(policies))
	m.apply.Observe(took.Seconds())
}

func (m *cacheMetrics) Fallback() { m.fallbacks.Inc() }

// cacheAge exports netman_server_cache_age_seconds at scrape time: how long ago the
// served snapshot was confirmed current. It stays below the check interval (200 ms)
// while the database answers; past MaxAge (900 ms) polls go to the database.
func cacheAge(confirmed func() time.Time) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "netman_server_cache_age_seconds",
		Help: "Seconds since the served policy snapshot was last confirmed to be the database's (0 before the first).",
	}, func() float64 {
		t := confirmed()
		if t.IsZero() {
			return 0
		}
		return time.Since(t).Seconds()
	})
}
