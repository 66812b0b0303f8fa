package rules

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"

	"netman/lib/xtables"
)

// Enforcer applies Rulesets to the filter table of the network namespace it runs in. It
// remembers what it applied so that each change rewrites only the chains that differ.
// An Enforcer is not safe for concurrent use; the agent has one loop that owns it.
type Enforcer struct {
	ipt      *iptables.IPTables
	restore  string
	lockFile string

	// synced is false until the kernel's state has been read (at start and after a
	// failed restore); applied and jump are only trusted while it is true.
	synced  bool
	applied map[string][]string
	jump    bool
}

// Result says what one Apply did.
type Result struct {
	Rules        int  // rules in the applied set
	RulesWritten int  // rules sent to iptables-restore (those of the chains that changed)
	RulesChanged int  // rules added or removed compared with the previous set
	ChainsStale  int  // netman chains deleted because nothing refers to them any more
	Restored     bool // false when the kernel already had exactly this set
}

// NewEnforcer finds iptables and iptables-restore on PATH (the backend, nf_tables or
// legacy, that the alternatives system gives every component of the cell) and prepares
// to hold lockFile, the flock shared with the cell's other iptables writers, around each
// change.
func NewEnforcer(lockFile string) (*Enforcer, error) {
	return NewEnforcerWith(lockFile, Binaries{IPTables: "iptables", Restore: "iptables-restore"})
}

// Binaries names the iptables programs of one backend, as names to look up on PATH or
// as paths.
type Binaries struct {
	IPTables string // "iptables", "iptables-legacy", "iptables-nft"
	Restore  string // the matching iptables-restore
}

// NewEnforcerWith is NewEnforcer with a chosen backend.
func NewEnforcerWith(lockFile string, bin Binaries) (*Enforcer, error) {
	if lockFile == "" {
		return nil, errors.New("iptables lock file: no path given")
	}
	ipt, err := iptables.New(iptables.Path(bin.IPTables), iptables.Timeout(10))
	if err != nil {
		return nil, fmt.Errorf("finding %s: %w", bin.IPTables, err)
	}
	restore, err := exec.LookPath(bin.Restore)
	if err != nil {
		return nil, fmt.Errorf("finding %s: %w", bin.Restore, err)
	}
	return &Enforcer{ipt: ipt, restore: restore, lockFile: lockFile}, nil
}

// Apply makes netman's chains hold exactly rs, in one iptables-restore transaction.
func (e *Enforcer) Apply(ctx context.Context, rs Ruleset) (Result, error) {
	unlock, err := xtables.Lock(ctx, e.lockFile)
	if err != nil {
		return Result{}, err
	}
	defer unlock()

	if !e.synced {
		if err := e.sync(); err != nil {
			return Result{}, err
		}
	}
	input, res := e.plan(rs)
	res.Rules = rs.RuleCount()
	if input == nil {
		return res, nil
	}
	if err := e.run(ctx, input); err != nil {
		// The transaction was refused as a whole, but what the kernel now holds is not
		// ours to assume: read it again next time.
		e.synced = false
		return res, err
	}
	e.applied = copyChains(rs.Chains)
	e.jump = true
	res.Restored = true
	return res, nil
}

// Resync forgets what the enforcer believes is applied: the next Apply reads which netman
// chains exist and rewrites every chain, repairing whatever someone else changed.
func (e *Enforcer) Resync() { e.synced = false }

// sync learns which netman chains exist and whether FORWARD jumps to netman-forward. It
// runs at start and after a failure only: listing a table with thousands of rules costs more
// than a whole no-change cycle may.
func (e *Enforcer) sync() error {
	names, err := e.ipt.ListChains(table)
	if err != nil {
		return fmt.Errorf("listing chains of the %s table: %w", table, err)
	}
	e.applied = map[string][]string{}
	for _, n := range names {
		if strings.HasPrefix(n, Prefix) {
			// Content unknown: nil never equals a wanted chain, so it is rewritten.
			e.applied[n] = nil
		}
	}
	e.jump = false
	if _, ok := e.applied[ForwardChain]; ok {
		if e.jump, err = e.ipt.Exists(table, "FORWARD", "-j", ForwardChain); err != nil {
			return fmt.Errorf("looking for the FORWARD jump: %w", err)
		}
	}
	e.synced = true
	return nil
}

// plan writes the iptables-restore input that turns what is applied into rs, or nil when
// nothing differs.
func (e *Enforcer) plan(rs Ruleset) ([]byte, Result) {
	var res Result
	var changed, stale []string
	for name, rules := range rs.Chains {
		old, ok := e.applied[name]
		if ok && old != nil && slices.Equal(old, rules) {
			continue
		}
		changed = append(changed, name)
		res.RulesWritten += len(rules)
		res.RulesChanged += diffCount(old, rules)
	}
	for name, old := range e.applied {
		if _, ok := rs.Chains[name]; !ok {
			stale = append(stale, name)
			res.RulesChanged += len(old)
		}
	}
	res.ChainsStale = len(stale)
	if len(changed) == 0 && len(stale) == 0 && e.jump {
		return nil, res
	}
	slices.Sort(changed)
	slices.Sort(stale)

	var b bytes.Buffer
	b.WriteString("*filter\n")
	// Declaring a chain creates it or, with --noflush, empties it: all of them come before
	// the first rule so that any rule may jump to any chain.
	for _, name := range changed {
		fmt.Fprintf(&b, ":%s - [0:0]\n", name)
	}
	for _, name := range changed {
		for _, r := range rs.Chains[name] {
			fmt.Fprintf(&b, "-A %s %s\n", name, r)
		}
	}
	// A chain must be empty to be deleted; the chains that referred to it were emptied and
	// refilled above, in the same transaction.
	for _, name := range stale {
		fmt.Fprintf(&b, "-F %s\n-X %s\n", name, name)
	}
	if !e.jump {
		fmt.Fprintf(&b, "-I FORWARD 1 -j %s\n", ForwardChain)
	}
	b.WriteString("COMMIT\n")
	return b.Bytes(), res
}

func (e *Enforcer) run(ctx context.Context, input []byte) error {
	return xtables.Restore(ctx, e.restore, input)
}

// Cleanup removes the FORWARD jump and every netman chain from the filter table: for
// uninstalling, and for tests. Running enforcement never calls it: an agent that stops
// leaves the last rules in place.
func (e *Enforcer) Cleanup(ctx context.Context) error {
	unlock, err := xtables.Lock(ctx, e.lockFile)
	if err != nil {
		return err
	}
	defer unlock()
	e.synced = false
	if err := e.sync(); err != nil {
		return err
	}
	e.synced = false
	if len(e.applied) == 0 {
		return nil
	}
	// One transaction, like every change: the jump goes, then every chain is emptied
	// before any is deleted, because they refer to each other.
	var b bytes.Buffer
	b.WriteString("*filter\n")
	if e.jump {
		fmt.Fprintf(&b, "-D FORWARD -j %s\n", ForwardChain)
	}
	names := slices.Sorted(maps.Keys(e.applied))
	for _, n := range names {
		fmt.Fprintf(&b, "-F %s\n", n)
	}
	for _, n := range names {
		fmt.Fprintf(&b, "-X %s\n", n)
	}
	b.WriteString("COMMIT\n")
	if err := e.run(ctx, b.Bytes()); err != nil {
		return fmt.Errorf("removing netman's chains: %w", err)
	}
	return nil
}

// diffCount is the number of rules in one list and not the other.
func diffCount(old, rules []string) int {
	seen := make(map[string]int, len(old))
	for _, r := range old {
		seen[r]++
	}
	n := 0
	for _, r := range rules {
		if seen[r] > 0 {
			seen[r]--
		} else {
			n++
		}
	}
	for _, c := range seen {
		n += c
	}
	return n
}

func copyChains(c map[string][]string) map[string][]string {
	out := make(map[string][]string, len(c))
	for k, v := range c {
		out[k] = slices.Clone(v)
	}
	return out
}
