// Package agent is the policy agent's loop: every poll interval it reads the cell's
// containers from the wrapper's datastore, asks the policy server for the policies of their
// groups, and has the rules package enforce them.
//
// Each cycle reads the datastore's version file (the containers only when it moved) and
// polls the server with the ETag of its last answer: while the containers are unchanged
// the request is a long poll that the server answers as soon as one of their groups'
// policies changes, and an unchanged answer is a 304 that costs nothing more. Only when
// the computed rules differ from the applied ones does it call iptables. Every Resync
// interval (5 minutes) it rewrites the whole set regardless, so rules another program
// removed come back. When anything fails the rules in the kernel stay as they are, the
// cycle is retried with capped exponential backoff, and the failure is logged when it
// starts and when it ends, not on every attempt.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"netman/lib/datastore"
	"netman/lib/logattr"
	"netman/lib/models"
	"netman/lib/policyclient"
	"netman/lib/rules"
)

// PolicySource is the policy server as the agent uses it (lib/policyclient.Client).
type PolicySource interface {
	// Poll asks for the policies of ids; with etag, an unchanged answer is NotModified,
	// and with wait as well the server holds the request until the answer changes.
	Poll(ctx context.Context, ids []string, etag string, wait time.Duration) (policyclient.Answer, error)
}

// Enforcer applies rule sets (lib/rules.Enforcer).
type Enforcer interface {
	Apply(ctx context.Context, rs rules.Ruleset) (rules.Result, error)
	// Resync makes the next Apply rewrite everything from what the kernel holds.
	Resync()
}

// minCycleGap is the least time between two cycles while long polls answer at once
// (the agent's groups' policies change all the time): the rules then follow at most ten
// times a second.
const minCycleGap = 100 * time.Millisecond

// Options configure an Agent.
type Options struct {
	Datastore string
	// PollInterval is how often the datastore is read. Against a server with long polls
	// each cycle waits that long for a policy change (so changes apply as soon as the
	// server has them); against one without, the agent fetches the policies that often.
	PollInterval time.Duration
	// MaxBackoff caps the wait between failed cycles (default: 8 poll intervals, at most a minute).
	MaxBackoff time.Duration
	// Resync is how often the whole rule set is fetched and rewritten even when nothing
	// changed, repairing rules another program removed (default 5 minutes).
	Resync time.Duration
	// CycleTimeout bounds one cycle, waiting for the iptables lock included (default a minute).
	CycleTimeout time.Duration
	Source       PolicySource
	Enforcer     Enforcer
	Logger       *slog.Logger
	Metrics      *Metrics
	// Now is the clock (tests).
	Now func() time.Time
	// Overlay is the cell's VXLAN device, whose traffic from other cells is judged too.
	Overlay rules.Overlay

	// DegradedAfter is how long the policy server may be unreachable before /health
	// answers degraded (default DefaultDegradedAfter).
	DegradedAfter time.Duration
}

// Agent runs enforcement cycles. Cycle is not safe for concurrent use; Run calls it from
// one goroutine, and Status may be read from any.
type Agent struct {
	opts Options

	// Last successful cycle's inputs; valid while synced.
	synced     bool
	dsVersion  uint64
	containers []rules.Container
	ids        []string        // the groups asked about
	etag       string          // of the answer for ids ("" when the server sends none)
	policies   []models.Policy // that answer
	lastResync time.Time
	applied    *rules.Ruleset
	// held: the last cycle's request was a long poll the server held or answered with a
	// change, so Run need not wait before the next one.
	held bool

	status statusBox
	// force carries ForceCycle's requests to Run.
	force chan forceRequest
	// interrupt ends a long poll under way, so that a forced cycle need not wait for it.
	interrupt chan struct{}
	// forcing: Run is running a forced cycle, which must not long-poll.
	forcing bool
}

// New checks opts and returns an Agent.
func New(opts Options) (*Agent, error) {
	if opts.Datastore == "" || opts.Source == nil || opts.Enforcer == nil {
		return nil, errors.New("agent: datastore, policy source and enforcer are required")
	}
	if opts.PollInterval <= 0 {
		return nil, fmt.Errorf("agent: poll interval %v must be positive", opts.PollInterval)
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = min(8*opts.PollInterval, time.Minute)
	}
	if opts.CycleTimeout <= 0 {
		opts.CycleTimeout = time.Minute
	}
	if opts.Resync <= 0 {
		opts.Resync = 5 * time.Minute
	}
	if opts.DegradedAfter <= 0 {
		opts.DegradedAfter = DefaultDegradedAfter
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	a := &Agent{opts: opts, force: make(chan forceRequest), interrupt: make(chan struct{}, 1)}
	// The rule age is the status's last success, so it needs no copy of its own.
	opts.Metrics.confirmed = func() (time.Time, time.Time) { return a.Status().LastSuccess, a.opts.Now() }
	return a, nil
}

// Outcome says what a cycle did.
type Outcome string

// Outcomes of a cycle.
const (
	Skipped   Outcome = "skipped"   // nothing changed: the server answered 304
	Unchanged Outcome = "unchanged" // fetched, but the rules came out the same
	Applied   Outcome = "applied"   // new rules are in the kernel
	Failed    Outcome = "failed"
)

// Cycle runs one enforcement cycle.
func (a *Agent) Cycle(ctx context.Context) (Outcome, rules.Result, error) {
	start := time.Now()
	out, res, err := a.cycle(ctx)
	a.opts.Metrics.observeCycle(out, time.Since(start))
	a.status.record(a.opts.Now(), out, err)
	return out, res, err
}

func (a *Agent) cycle(ctx context.Context) (Outcome, rules.Result, error) {
	log := a.opts.Logger
	now := a.opts.Now()
	if a.synced && now.Sub(a.lastResync) >= a.opts.Resync {
		a.synced, a.applied = false, nil
		a.opts.Enforcer.Resync()
	}
	version, err := datastore.Version(a.opts.Datastore)
	if err != nil {
		a.opts.Metrics.datastoreErrors.Inc()
		return Failed, rules.Result{}, fmt.Errorf("reading datastore version: %w", err)
	}
	containers := a.containers
	dsChanged := !a.synced || version != a.dsVersion
	if dsChanged {
		records, v, err := datastore.Snapshot(a.opts.Datastore)
		if err != nil {
			a.opts.Metrics.datastoreErrors.Inc()
			return Failed, rules.Result{}, fmt.Errorf("reading datastore: %w", err)
		}
		version = v
		containers = local(records)
	}

	// The ETag stands for the answer about exactly these groups, as of one version of
	// the server's snapshot: a 304 means that answer is still exact, so no trust window
	// is needed. With the groups unchanged the agent long-polls: the server answers as
	// soon as a policy of these groups changes.
	ids := groupIDs(containers)
	etag, wait := "", time.Duration(0)
	if a.synced && slices.Equal(ids, a.ids) {
		etag = a.etag
		if !dsChanged && !a.forcing {
			wait = a.opts.PollInterval
		}
	}
	a.held = false
	select {
	case <-a.interrupt: // a force that came before this cycle is served by it
	default:
	}
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	if wait > 0 {
		go func() {
			select {
			case <-a.interrupt:
				stopPoll()
			case <-pollCtx.Done():
			}
		}()
	}
	pollStart := time.Now()
	answer, err := a.opts.Source.Poll(pollCtx, ids, etag, wait)
	if err != nil && wait > 0 && pollCtx.Err() != nil && ctx.Err() == nil {
		// A forced cycle is waiting (a container came or went): end this one now
		// with nothing changed; Run starts the forced one at once.
		return Skipped, rules.Result{}, nil
	}
	if err != nil {
		a.opts.Metrics.pollErrors.Inc()
		a.status.serverUnreachable(now)
		return Failed, rules.Result{}, fmt.Errorf("fetching policies: %w", err)
	}
	a.status.serverReached()
	// Held for most of the wait, or answered early with a change: the server long-polls.
	a.held = wait > 0 && (!answer.NotModified || time.Since(pollStart) >= wait/2)
	if answer.Unconfirmed {
		log.Warn("the policy server could not confirm its policies with its database; they may be behind")
	}
	policies := answer.Policies
	if answer.NotModified {
		if !dsChanged {
			return Skipped, rules.Result{}, nil
		}
		policies = a.policies
	}
	rs, problems := rules.Build(containers, policies, a.opts.Overlay)
	if len(problems) > 0 {
		log.Warn("records left out of enforcement", "count", len(problems), "first", problems[0].Error())
	}
	a.opts.Metrics.containers.Set(float64(len(containers)))
	a.opts.Metrics.policies.Set(float64(len(policies)))

	out := Unchanged
	var res rules.Result
	if a.applied == nil || !rs.Equal(*a.applied) {
		enforceStart := time.Now()
		res, err = a.opts.Enforcer.Apply(ctx, rs)
		took := time.Since(enforceStart)
		a.opts.Metrics.enforce.Observe(took.Seconds())
		if err != nil {
			a.opts.Metrics.enforceErrors.Inc()
			a.applied = nil
			return Failed, res, fmt.Errorf("enforcing: %w", err)
		}
		a.applied = &rs
		out = Applied
		a.opts.Metrics.applied(res)
		log.Info("rules applied", "containers", len(containers), "policies", len(policies),
			"rules", res.Rules, "rules_written", res.RulesWritten, "rules_changed", res.RulesChanged,
			"stale_chains", res.ChainsStale, logattr.Duration(took))
	}
	if !a.synced {
		a.lastResync = now
	}
	a.synced = true
	a.dsVersion, a.containers = version, containers
	a.ids, a.etag, a.policies = ids, answer.ETag, policies
	return out, res, nil
}

// local turns datastore records into containers.
func local(records map[string]datastore.Container) []rules.Container {
	cs := make([]rules.Container, 0, len(records))
	for handle, r := range records {
		if r.IP == "" {
			continue
		}
		group, _ := r.Metadata["policy_group_id"].(string)
		cs = append(cs, rules.Container{Handle: handle, IP: r.IP, GroupID: group})
	}
	return cs
}

// groupIDs is the sorted, distinct policy_group_ids of containers: what the agent asks
// the policy server about.
func groupIDs(cs []rules.Container) []string {
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		if c.GroupID != "" {
			ids = append(ids, c.GroupID)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// interruptLongPoll ends the long poll of the cycle under way, if any.
func (a *Agent) interruptLongPoll() {
	select {
	case a.interrupt <- struct{}{}:
	default:
	}
}

// Run cycles until a signal arrives (an ifrit.Runner). The first cycle runs at once; ready
// is closed after it, whatever its outcome, so the health and debug servers come up even
// while the policy server is away. A ForceCycle request starts the next cycle at once.
func (a *Agent) Run(signals <-chan os.Signal, ready chan<- struct{}) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-signals
		cancel()
	}()
	log := a.opts.Logger
	failures := 0
	var forced []forceRequest
	for {
		cctx, cancelCycle := context.WithTimeout(ctx, a.opts.CycleTimeout)
		a.forcing = len(forced) > 0
		out, _, err := a.Cycle(cctx)
		cancelCycle()
		for _, req := range forced {
			req.done <- forceResult{out, err}
		}
		forced = forced[:0]
		if ready != nil {
			close(ready)
			ready = nil
		}
		if ctx.Err() != nil {
			log.Info("stopping; the last applied rules stay in place")
			return nil
		}
		wait := jitter(a.opts.PollInterval)
		if err == nil && a.held {
			wait = minCycleGap // the long poll was the wait
		}
		if err != nil {
			failures++
			if failures == 1 {
				log.Error("enforcement cycle failed; keeping the last applied rules and retrying with backoff", "error", err.Error())
			} else {
				log.Debug("enforcement cycle failed again", "error", err.Error(), "failures", failures)
			}
			wait = backoff(a.opts.PollInterval, a.opts.MaxBackoff, failures)
		} else if failures > 0 {
			log.Info("enforcement cycle recovered", "failures", failures)
			failures = 0
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			log.Info("stopping; the last applied rules stay in place")
			return nil
		case <-timer.C:
		case req := <-a.force:
			timer.Stop()
			// Every request waiting now is answered by the same cycle: it starts after
			// each of them arrived.
			forced = append(forced, req)
			forced = a.drainForced(forced)
		}
	}
}

// jitter spreads polls of many cells over ±10% of the interval.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// backoff doubles the interval with every consecutive failure, up to max, with jitter.
func backoff(interval, maxWait time.Duration, failures int) time.Duration {
	d := interval
	for i := 1; i < failures && d < maxWait; i++ {
		d *= 2
	}
	return jitter(min(d, maxWait))
}

// Status is the agent's state for /health.
type Status struct {
	Enforcing           bool      `json:"enforcing"` // rules have been applied or confirmed at least once
	LastSuccess         time.Time `json:"last_success,omitzero"`
	LastOutcome         Outcome   `json:"last_outcome,omitempty"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	LastError           string    `json:"last_error,omitempty"`
	// ServerUnreachableSince is when the policy server stopped answering, zero while
	// it answers.
	ServerUnreachableSince time.Time `json:"server_unreachable_since,omitzero"`
}

// Status returns a copy of the current status.
func (a *Agent) Status() Status { return a.status.get() }

type statusBox struct {
	mu sync.Mutex
	s  Status
}

func (b *statusBox) record(now time.Time, out Outcome, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.s.LastOutcome = out
	if err != nil {
		b.s.ConsecutiveFailures++
		b.s.LastError = err.Error()
		return
	}
	b.s.Enforcing = true
	b.s.LastSuccess = now
	b.s.ConsecutiveFailures = 0
	b.s.LastError = ""
}

// serverUnreachable records a failed request to the policy server at now; the first
// failure after an answer starts the outage.
func (b *statusBox) serverUnreachable(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.s.ServerUnreachableSince.IsZero() {
		b.s.ServerUnreachableSince = now
	}
}

// serverReached records an answer from the policy server, ending any outage.
func (b *statusBox) serverReached() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.s.ServerUnreachableSince = time.Time{}
}

func (b *statusBox) get() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.s
}
