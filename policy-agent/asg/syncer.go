package asg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"netman/lib/containerrules"
	"netman/lib/datastore"
	"netman/lib/policyclient"
)

// Source is the policy server as the syncer uses it (lib/policyclient.Client).
type Source interface {
	SecurityGroups(ctx context.Context, spaces []string) ([]policyclient.SecurityGroup, error)
}

// Writer replaces containers' egress chains (lib/containerrules.Applier).
type Writer interface {
	ReplaceEgress(ctx context.Context, chains map[string][]containerrules.Chain) (missing []string, err error)
}

// Options configure a Syncer. Overlay and Egress (its Deny and logging settings; Rules
// and Workload are per container) must be what the wrapper builds the chains with.
type Options struct {
	Datastore string
	Interval  time.Duration
	// DatastoreCheck is how often Run reads the datastore's version between rounds, so
	// that a container the wrapper just recorded gets its set at once rather than at the
	// next interval (0: only every Interval). The agent passes its poll interval.
	DatastoreCheck time.Duration
	Source         Source
	Writer         Writer
	Overlay        []netip.Prefix
	// FlannelSubnetFile, when Overlay is empty, is where FLANNEL_NETWORK (the overlay)
	// is read every cycle, as the wrapper reads it at ADD.
	FlannelSubnetFile string
	Egress            containerrules.Egress
	Logger            *slog.Logger
}

// Syncer keeps the cell's containers' egress chains equal to their security groups.
// Cycle is not safe for concurrent use; Run calls it from one goroutine.
type Syncer struct {
	opts Options
	// applied is, per handle, the egress chains last written, as restore text.
	applied map[string]string
	// dsVersion is the datastore version the last round read.
	dsVersion uint64
}

// New checks opts and returns a Syncer.
func New(opts Options) (*Syncer, error) {
	if opts.Datastore == "" || opts.Source == nil || opts.Writer == nil {
		return nil, errors.New("asg: datastore, policy source and writer are required")
	}
	if opts.Interval <= 0 {
		return nil, fmt.Errorf("asg: interval %v must be positive", opts.Interval)
	}
	if len(opts.Overlay) == 0 && opts.FlannelSubnetFile == "" {
		return nil, errors.New("asg: the overlay network or the flannel subnet file is required: the egress chains return traffic to the overlay")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Syncer{opts: opts, applied: map[string]string{}}, nil
}

// Result says what a cycle did.
type Result struct {
	Containers int      // containers with a space_id
	Changed    []string // handles whose egress chains were rewritten
	Missing    []string // handles whose egress chain is not in the kernel (left alone)
}

// Cycle reads the datastore, fetches the security groups of its spaces, and rewrites the
// egress chains of the containers whose rules differ from what was last written. When
// the policy server cannot be asked, nothing is changed.
func (s *Syncer) Cycle(ctx context.Context) (Result, error) {
	records, version, err := datastore.Snapshot(s.opts.Datastore)
	if err != nil {
		return Result{}, fmt.Errorf("reading datastore: %w", err)
	}
	s.dsVersion = version
	type container struct{ handle, ip, space, workload string }
	var cs []container
	var spaces []string
	for handle, r := range records {
		space, _ := r.Metadata["space_id"].(string)
		if space == "" {
			// As silk: without a space there is no set to apply; the ADD rules stay.
			continue
		}
		workload, _ := r.Metadata["container_workload"].(string)
		cs = append(cs, container{handle, r.IP, space, workload})
		spaces = append(spaces, space)
	}
	slices.Sort(spaces)
	spaces = slices.Compact(spaces)
	res := Result{Containers: len(cs)}
	for h, text := range s.applied {
		if r, ok := records[h]; !ok || !strings.HasPrefix(text, r.IP+"\n") {
			delete(s.applied, h)
		}
	}
	if len(cs) == 0 {
		return res, nil
	}
	overlay, err := s.overlay()
	if err != nil {
		return res, err
	}
	groups, err := s.opts.Source.SecurityGroups(ctx, spaces)
	if err != nil {
		return res, fmt.Errorf("fetching security groups: %w", err)
	}
	sets := NewSets(groups)
	pending := map[string][]containerrules.Chain{}
	texts := map[string]string{}
	for _, c := range cs {
		rules, problems := containerrules.FromSecurityGroupRules(sets.For(c.space, c.workload))
		e := s.opts.Egress
		e.Rules, e.Workload = rules, c.workload
		chains, more := containerrules.EgressChains(c.handle, overlay, e)
		if problems = append(problems, more...); len(problems) > 0 {
			s.opts.Logger.Warn("security group rules skipped: they allow nothing", "container", c.handle,
				"count", len(problems), "first", problems[0].Error())
		}
		// The address is part of what was written: a container re-created under the same
		// handle between two cycles has the wrapper's rules again and needs rewriting.
		text := c.ip + "\n" + render(chains)
		if s.applied[c.handle] == text {
			continue
		}
		pending[c.handle], texts[c.handle] = chains, text
	}
	if len(pending) == 0 {
		return res, nil
	}
	missing, err := s.opts.Writer.ReplaceEgress(ctx, pending)
	if err != nil {
		return res, fmt.Errorf("replacing egress rules: %w", err)
	}
	res.Missing = missing
	for h := range pending {
		if slices.Contains(missing, h) {
			continue
		}
		s.applied[h] = texts[h]
		res.Changed = append(res.Changed, h)
	}
	slices.Sort(res.Changed)
	return res, nil
}

func (s *Syncer) overlay() ([]netip.Prefix, error) {
	if len(s.opts.Overlay) > 0 {
		return s.opts.Overlay, nil
	}
	network, err := containerrules.FlannelNetwork(s.opts.FlannelSubnetFile)
	if err != nil {
		return nil, fmt.Errorf("finding the overlay: %w", err)
	}
	p, err := netip.ParsePrefix(network)
	if err != nil || !p.Addr().Is4() {
		return nil, fmt.Errorf("finding the overlay: FLANNEL_NETWORK %q in %s is not an IPv4 CIDR", network, s.opts.FlannelSubnetFile)
	}
	return []netip.Prefix{p.Masked()}, nil
}

func render(chains []containerrules.Chain) string {
	var b strings.Builder
	for _, c := range chains {
		b.WriteString(c.Table + " " + c.Name + "\n")
		for _, r := range c.Rules {
			b.WriteString(r + "\n")
		}
	}
	return b.String()
}

// Run cycles every interval until signalled (an ifrit.Runner), and also as soon as the
// datastore's version moves (checked every DatastoreCheck). A failed cycle keeps the
// rules in the kernel as they are and is retried at the next interval; the failure is
// logged when it starts and when it ends.
func (s *Syncer) Run(signals <-chan os.Signal, ready chan<- struct{}) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	close(ready)
	log := s.opts.Logger
	failing := false
	ticker := time.NewTicker(s.opts.Interval)
	defer ticker.Stop()
	var check <-chan time.Time
	if s.opts.DatastoreCheck > 0 {
		t := time.NewTicker(s.opts.DatastoreCheck)
		defer t.Stop()
		check = t.C
	}
	for {
		cctx, cancelCycle := context.WithTimeout(ctx, max(s.opts.Interval, time.Minute))
		res, err := s.Cycle(cctx)
		cancelCycle()
		switch {
		case err != nil && !failing:
			failing = true
			log.Error("security group sync failed; keeping the applied egress rules", "error", err.Error())
		case err != nil:
			log.Debug("security group sync failed again", "error", err.Error())
		case failing:
			failing = false
			log.Info("security group sync recovered")
		}
		if err == nil && len(res.Changed) > 0 {
			log.Info("security groups applied", "containers", res.Containers, "changed", len(res.Changed))
		}
	wait:
		for {
			select {
			case <-signals:
				return nil
			case <-ticker.C:
				break wait
			case <-check:
				// Between rounds only a change of the cell's containers starts one; a failing
				// round waits for the interval.
				if v, err := datastore.Version(s.opts.Datastore); err == nil && v != s.dsVersion && !failing {
					break wait
				}
			}
		}
	}
}
