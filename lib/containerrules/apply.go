package containerrules

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"netman/lib/xtables"
)

// Applier installs and removes container rule sets in the network namespace it runs in.
// It keeps no state: every call stands alone, as one CNI command does.
type Applier struct {
	lockFile string
	iptables string
	restore  string
}

// NewApplier finds iptables and iptables-restore on PATH (the backend the cell's
// alternatives give every component) and will hold lockFile, the flock the cell's
// iptables writers share, around each change.
func NewApplier(lockFile string) (*Applier, error) {
	if lockFile == "" {
		return nil, errors.New("iptables lock file: no path given")
	}
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		return nil, fmt.Errorf("finding iptables: %w", err)
	}
	restore, err := exec.LookPath("iptables-restore")
	if err != nil {
		return nil, fmt.Errorf("finding iptables-restore: %w", err)
	}
	return &Applier{lockFile: lockFile, iptables: ipt, restore: restore}, nil
}

// Add installs the set in one iptables-restore. When that fails, whatever part of it
// the kernel took (iptables commits table by table) is removed before Add returns.
func (a *Applier) Add(ctx context.Context, s Set) error {
	unlock, err := xtables.Lock(ctx, a.lockFile)
	if err != nil {
		return err
	}
	defer unlock()
	if err := a.run(ctx, s.restoreInput()); err != nil {
		if rerr := a.remove(ctx, s.Handle); rerr != nil {
			return fmt.Errorf("%w; removing what was installed also failed: %v", err, rerr)
		}
		return err
	}
	return nil
}

// Remove deletes every rule and chain of the container: the jumps to its chains however
// many there are, then the chains. Nothing to remove is success.
func (a *Applier) Remove(ctx context.Context, handle string) error {
	unlock, err := xtables.Lock(ctx, a.lockFile)
	if err != nil {
		return err
	}
	defer unlock()
	return a.remove(ctx, handle)
}

func (a *Applier) remove(ctx context.Context, handle string) error {
	owned := tableChains(handle)
	lists, err := a.listBuiltins(ctx)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, table := range []string{"nat", "filter"} {
		b.WriteString("*" + table + "\n")
		for i, bi := range builtins {
			if bi.table != table {
				continue
			}
			for _, rule := range lists[i] {
				if jumpsTo(rule, owned[table]) {
					b.WriteString("-D" + strings.TrimPrefix(rule, "-A") + "\n")
				}
			}
		}
		// Declaring creates a missing chain and empties an existing one, so every chain
		// can then be deleted, whether or not an earlier ADD got as far as making it.
		for _, c := range owned[table] {
			b.WriteString(":" + c + " - [0:0]\n")
		}
		for _, c := range owned[table] {
			b.WriteString("-X " + c + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	if err := a.run(ctx, []byte(b.String())); err != nil {
		return fmt.Errorf("removing the rules of container %s: %w", handle, err)
	}
	return nil
}

// jumpsTo reports whether an iptables -S rule jumps or goes to one of chains.
func jumpsTo(rule string, chains []string) bool {
	f := strings.Fields(rule)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "-j" || f[i] == "-g" {
			for _, c := range chains {
				if f[i+1] == c {
					return true
				}
			}
		}
	}
	return false
}

// listBuiltins returns the rules of the built-in chains holding jumps, as iptables -S
// prints them ("-A ..."). The listings change nothing and are independent, so they run
// at once; every process is started from the calling goroutine because a child runs in
// the network namespace of the thread that forks it.
func (a *Applier) listBuiltins(ctx context.Context) ([][]string, error) {
	type listing struct {
		cmd            *exec.Cmd
		stdout, stderr bytes.Buffer
	}
	ls := make([]*listing, len(builtins))
	for i, b := range builtins {
		l := &listing{cmd: exec.CommandContext(ctx, a.iptables, "-w", "10", "-t", b.table, "-S", b.chain)}
		l.cmd.Stdout, l.cmd.Stderr = &l.stdout, &l.stderr
		if err := l.cmd.Start(); err != nil {
			return nil, fmt.Errorf("listing %s %s: %w", b.table, b.chain, err)
		}
		ls[i] = l
	}
	out := make([][]string, len(builtins))
	var errs []error
	for i, l := range ls {
		if err := l.cmd.Wait(); err != nil {
			errs = append(errs, fmt.Errorf("listing %s %s: %w: %s", builtins[i].table, builtins[i].chain, err, strings.TrimSpace(l.stderr.String())))
			continue
		}
		for _, line := range strings.Split(l.stdout.String(), "\n") {
			if strings.HasPrefix(line, "-A ") {
				out[i] = append(out[i], line)
			}
		}
	}
	return out, errors.Join(errs...)
}

func (a *Applier) run(ctx context.Context, input []byte) error {
	return xtables.Restore(ctx, a.restore, input)
}
