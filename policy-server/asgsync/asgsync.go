// Package asgsync copies Cloud Controller's application security groups into the
// policy server's database, where the internal API serves them to the cells' agents
// (GET /networking/v1/internal/security_groups). It does the work of cf-networking's
// policy-server-asg-syncer job inside the policy server.
//
// Every replica runs a Syncer; the store's RunPeriodic makes one of them do each
// round (a transaction-scoped advisory lock plus the time of the last round), so n
// replicas cost CC what one does. A round asks CC's internal API for the groups'
// last_update first and lists the groups only when it moved; the store writes only
// when the listed groups differ from the stored ones.
package asgsync

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"netman/lib/logattr"
	"netman/policy-server/ccclient"
	"netman/policy-server/store"
)

// CC is what a sync needs from Cloud Controller.
type CC interface {
	LatestSecurityGroupUpdate(ctx context.Context) (time.Time, error)
	SecurityGroups(ctx context.Context, before time.Time) ([]ccclient.SecurityGroup, time.Time, error)
}

// Store is what a sync needs from the policy store.
type Store interface {
	RunPeriodic(ctx context.Context, job store.Job, every time.Duration, fn func(ctx context.Context, state string) (string, error)) (bool, error)
	ReplaceSecurityGroups(ctx context.Context, groups []store.SecurityGroup) (bool, error)
}

// Result says what one SyncOnce did.
type Result struct {
	Ran     bool // false: another replica did this round, or did it moments ago
	Fetched bool // the groups were listed (CC's last_update had moved)
	Changed bool // the stored groups changed
	Groups  int  // how many groups were listed
}

// Syncer syncs on an interval. Its zero value is not usable; fill every field but
// Logger, Registerer and OnResult.
type Syncer struct {
	CC       CC
	Store    Store
	Interval time.Duration // asg_poll_interval_seconds
	// Timeout bounds one round (CC calls and the write); when zero, Interval but at
	// least a minute.
	Timeout time.Duration
	// MinBackoff is the first wait after a failed round (one second when zero).
	MinBackoff time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// OnResult, when set, is called after every round (tests wait on it).
	OnResult func(Result, error)
}

// SyncOnce does one round if no replica did it within the last half interval.
func (s *Syncer) SyncOnce(ctx context.Context) (Result, error) {
	var res Result
	ran, err := s.Store.RunPeriodic(ctx, store.JobSecurityGroupSync, s.Interval, func(ctx context.Context, state string) (string, error) {
		latest, err := s.CC.LatestSecurityGroupUpdate(ctx)
		if err != nil {
			return "", err
		}
		if !latest.IsZero() && state == stamp(latest) {
			return state, nil
		}
		groups, consistentAt, err := s.CC.SecurityGroups(ctx, latest)
		if err != nil {
			return "", err
		}
		res.Fetched, res.Groups = true, len(groups)
		rows, err := toStore(groups)
		if err != nil {
			return "", err
		}
		if res.Changed, err = s.Store.ReplaceSecurityGroups(ctx, rows); err != nil {
			return "", err
		}
		return stamp(consistentAt), nil
	})
	res.Ran = ran
	return res, err
}

// stamp is how CC's last_update is kept between rounds; the zero time (CC did not
// say) never matches, so such rounds always list.
func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// toStore converts CC's groups to rows, the rules to the JSON array the agents get.
func toStore(groups []ccclient.SecurityGroup) ([]store.SecurityGroup, error) {
	rows := make([]store.SecurityGroup, len(groups))
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // descriptions keep their < > & as CC has them
	for i, g := range groups {
		buf.Reset()
		if err := enc.Encode(g.Rules); err != nil {
			return nil, fmt.Errorf("encoding the rules of security group %s: %w", g.GUID, err)
		}
		rows[i] = store.SecurityGroup{
			GUID: g.GUID, Name: g.Name, Rules: string(bytes.TrimSpace(buf.Bytes())),
			StagingDefault: g.StagingDefault, RunningDefault: g.RunningDefault,
			StagingSpaces: g.StagingSpaces, RunningSpaces: g.RunningSpaces,
		}
	}
	return rows, nil
}

// Run syncs at once and then every Interval until ctx ends. A failed round is retried
// with exponential backoff from MinBackoff up to Interval; the groups already stored
// keep being served meanwhile.
func (s *Syncer) Run(ctx context.Context) error {
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := newMetrics(s.Registerer)
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = max(s.Interval, time.Minute)
	}
	minBackoff := s.MinBackoff
	if minBackoff <= 0 {
		minBackoff = time.Second
	}
	backoff := time.Duration(0)
	for {
		start := time.Now()
		roundCtx, cancel := context.WithTimeout(ctx, timeout)
		res, err := s.SyncOnce(roundCtx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		m.observe(res, err, time.Since(start))
		if s.OnResult != nil {
			s.OnResult(res, err)
		}
		wait := s.Interval
		if err != nil {
			backoff = min(max(2*backoff, minBackoff), s.Interval)
			wait = backoff
			log.Error("syncing security groups from Cloud Controller; keeping the stored ones", "error", err, logattr.Millis("retry_in_ms", wait))
		} else {
			backoff = 0
			if res.Changed {
				log.Info("security groups synced from Cloud Controller", "groups", res.Groups)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

type metrics struct {
	rounds      *prometheus.CounterVec
	duration    prometheus.Histogram
	groups      prometheus.Gauge
	lastSuccess prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "netman_asg_sync_rounds_total",
			Help: "Security group sync rounds of this replica, by result (skipped, unchanged, fetched, changed, failed).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "netman_asg_sync_duration_seconds",
			Help:    "Time of one security group sync round, CC calls and database writes included.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		groups: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "netman_asg_sync_groups",
			Help: "Security groups in the last listing this replica fetched from CC.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "netman_asg_sync_last_success_timestamp_seconds",
			Help: "Unix time of this replica's last successful round (skips included: another replica synced).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.rounds, m.duration, m.groups, m.lastSuccess)
	}
	return m
}

func (m *metrics) observe(res Result, err error, d time.Duration) {
	result := "unchanged"
	switch {
	case err != nil:
		result = "failed"
	case !res.Ran:
		result = "skipped"
	case res.Changed:
		result = "changed"
	case res.Fetched:
		result = "fetched"
	}
	m.rounds.WithLabelValues(result).Inc()
	if err != nil {
		return
	}
	m.duration.Observe(d.Seconds())
	m.lastSuccess.SetToCurrentTime()
	if res.Fetched {
		m.groups.Set(float64(res.Groups))
	}
}
