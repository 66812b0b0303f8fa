// Package cleanup deletes the policies of apps Cloud Controller no longer has, as
// cf-networking's policy cleaner does: on POST /networking/v1/external/policies/cleanup
// and every cleanup_interval. Deleting goes through the store's Delete, so the tags of
// groups left without policies are freed into the store's queue of freed tags, which
// hands them out again only after every never-used tag (the quarantine that keeps an
// agent's stale rules from matching a new app).
package cleanup

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"netman/lib/models"
	"netman/policy-server/store"
)

// CC says which apps exist (ccclient.Client).
type CC interface {
	AppSpaces(ctx context.Context, appGUIDs []string) (map[string]string, error)
}

// Store is what the cleaner needs from the policy store.
type Store interface {
	All(ctx context.Context) ([]models.Policy, error)
	Tags(ctx context.Context) ([]models.Tag, error)
	Delete(ctx context.Context, policies []models.Policy) error
	RunPeriodic(ctx context.Context, job store.Job, every time.Duration, fn func(ctx context.Context, state string) (string, error)) (bool, error)
}

// implausiblyAllGone is how many apps CC must deny at once, none left, for the
// cleaner to distrust the answer.
const implausiblyAllGone = 10

// Cleaner deletes stale policies. Fill CC, Store and, for Run, Interval.
type Cleaner struct {
	CC         CC
	Store      Store
	Interval   time.Duration // cleanup_interval_seconds
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// DeleteStale deletes every policy whose source or destination is an app group CC
// does not have, and returns them. Groups of other types (EnsureTag's, for example)
// are not apps and are never stale. When CC cannot answer, nothing is deleted.
func (c *Cleaner) DeleteStale(ctx context.Context) ([]models.Policy, error) {
	policies, err := c.Store.All(ctx)
	if err != nil {
		return nil, fmt.Errorf("cleanup: %w", err)
	}
	if len(policies) == 0 {
		return []models.Policy{}, nil
	}
	tags, err := c.Store.Tags(ctx)
	if err != nil {
		return nil, fmt.Errorf("cleanup: %w", err)
	}
	var apps []string
	isApp := map[string]bool{}
	for _, t := range tags {
		if t.Type == "app" {
			isApp[t.ID] = true
			apps = append(apps, t.ID)
		}
	}
	live, err := c.CC.AppSpaces(ctx, apps)
	if err != nil {
		return nil, fmt.Errorf("cleanup: asking Cloud Controller which apps exist: %w", err)
	}
	if len(live) == 0 && len(apps) >= implausiblyAllGone {
		// A client without cloud_controller.admin_read_only sees no apps: deleting on
		// that answer would drop every policy.
		return nil, fmt.Errorf("cleanup: Cloud Controller says none of the %d apps of policies exists; "+
			"not deleting (does uaa_client have the authority cloud_controller.admin_read_only?)", len(apps))
	}
	stale := func(id string) bool {
		_, ok := live[id]
		return isApp[id] && !ok
	}
	out := []models.Policy{}
	for _, p := range policies {
		if stale(p.Source.ID) || stale(p.Destination.ID) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return out, nil
	}
	if err := c.Store.Delete(ctx, out); err != nil {
		return nil, fmt.Errorf("cleanup: deleting %d stale policies: %w", len(out), err)
	}
	return out, nil
}

// Run cleans up every Interval until ctx ends; with several replicas, one of them
// does each round (store.RunPeriodic). A failed round is logged and retried at the
// next tick: deleting late is harmless.
func (c *Cleaner) Run(ctx context.Context) error {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	deleted := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "netman_policy_cleanup_deleted_total",
		Help: "Policies of apps Cloud Controller no longer has, deleted by the periodic cleanup of this replica.",
	})
	failures := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "netman_policy_cleanup_failures_total",
		Help: "Periodic cleanup rounds of this replica that failed (CC or database unavailable).",
	})
	if c.Registerer != nil {
		c.Registerer.MustRegister(deleted, failures)
	}
	ticker := time.NewTicker(c.Interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		_, err := c.Store.RunPeriodic(ctx, store.JobPolicyCleanup, c.Interval, func(ctx context.Context, state string) (string, error) {
			gone, err := c.DeleteStale(ctx)
			if err != nil {
				return "", err
			}
			deleted.Add(float64(len(gone)))
			if len(gone) > 0 {
				log.Info("deleted the policies of apps Cloud Controller no longer has", "count", len(gone), "policies", gone)
			}
			return state, nil
		})
		if err != nil && ctx.Err() == nil {
			failures.Inc()
			log.Error("periodic policy cleanup failed; retrying at the next interval", "error", err)
		}
	}
}
