package containerrules

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"

	"netman/lib/xtables"
)

// ReplaceEgress gives containers new egress chains (each handle's chains from
// EgressChains), in ONE iptables-restore under the cell's iptables lock. Only containers
// whose egress chain exists are changed: the wrapper makes it at ADD when it enforces
// egress, and DEL removes it under the same lock, so a container deleted meanwhile is
// left alone rather than given chains nobody jumps to. Those handles come back in
// missing. The jumps in FORWARD and every other container's rules stay as they are.
func (a *Applier) ReplaceEgress(ctx context.Context, chains map[string][]Chain) (missing []string, err error) {
	if len(chains) == 0 {
		return nil, nil
	}
	unlock, err := xtables.Lock(ctx, a.lockFile)
	if err != nil {
		return nil, err
	}
	defer unlock()
	existing, err := a.filterChains(ctx)
	if err != nil {
		return nil, err
	}
	handles := make([]string, 0, len(chains))
	for h := range chains {
		handles = append(handles, h)
	}
	slices.Sort(handles)
	var b strings.Builder
	b.WriteString("*filter\n")
	var written []string
	for _, h := range handles {
		if !existing[EgressChain(h)] {
			missing = append(missing, h)
			continue
		}
		written = append(written, h)
		owned := []string{EgressChain(h), chainName(kindLog, h), chainName(kindRej, h)}
		// Declaring a chain empties it (and creates one that is missing).
		for _, c := range owned {
			b.WriteString(":" + c + " - [0:0]\n")
		}
		have := map[string]bool{}
		for _, c := range chains[h] {
			if c.Table != "filter" || !slices.Contains(owned, c.Name) {
				return nil, fmt.Errorf("container %s: chain %s %s is not one of its egress chains", h, c.Table, c.Name)
			}
			have[c.Name] = true
			for _, r := range c.Rules {
				b.WriteString("-A " + c.Name + " " + r + "\n")
			}
		}
		for _, c := range owned {
			if !have[c] {
				b.WriteString("-X " + c + "\n")
			}
		}
	}
	b.WriteString("COMMIT\n")
	if len(written) == 0 {
		return missing, nil
	}
	if err := a.run(ctx, []byte(b.String())); err != nil {
		return nil, fmt.Errorf("replacing the egress rules of %d containers: %w", len(written), err)
	}
	return missing, nil
}

// filterChains lists the user chains of the filter table.
func (a *Applier) filterChains(ctx context.Context) (map[string]bool, error) {
	out, err := exec.CommandContext(ctx, a.iptables, "-w", "10", "-t", "filter", "-S").Output()
	if err != nil {
		return nil, fmt.Errorf("listing the filter table's chains: %w", err)
	}
	chains := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if name, ok := strings.CutPrefix(line, "-N "); ok {
			chains[strings.TrimSpace(name)] = true
		}
	}
	return chains, nil
}
