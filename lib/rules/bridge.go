package rules

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// BridgeNFCallIPTables is the setting that sends bridged IPv4 frames through iptables.
// Recent kernels keep it per network namespace, so it is read and written in the
// namespace the agent runs in.
const BridgeNFCallIPTables = "/proc/sys/net/bridge/bridge-nf-call-iptables"

// ErrNoBridgeNetfilter means the kernel cannot pass bridged traffic to iptables here, so
// containers on one bridge would reach each other whatever the policies say.
var ErrNoBridgeNetfilter = errors.New("br_netfilter is not available: traffic between containers on the same bridge would bypass iptables")

// EnableBridgeNetfilter makes sure bridged traffic traverses iptables: it loads
// br_netfilter when the setting is missing (modprobe, when there is one) and sets
// net.bridge.bridge-nf-call-iptables to 1. It returns ErrNoBridgeNetfilter, wrapped with
// what was tried, when that is impossible (no module, no modprobe, a sandbox refusing it).
func EnableBridgeNetfilter(ctx context.Context) error {
	if _, err := os.Stat(BridgeNFCallIPTables); errors.Is(err, os.ErrNotExist) {
		modprobe, lookErr := exec.LookPath("modprobe")
		if lookErr != nil {
			return fmt.Errorf("%w (%s is missing and there is no modprobe to load the module)", ErrNoBridgeNetfilter, BridgeNFCallIPTables)
		}
		out, runErr := exec.CommandContext(ctx, modprobe, "br_netfilter").CombinedOutput()
		if runErr != nil {
			return fmt.Errorf("%w (modprobe br_netfilter: %v: %s)", ErrNoBridgeNetfilter, runErr, strings.TrimSpace(string(out)))
		}
		if _, err := os.Stat(BridgeNFCallIPTables); err != nil {
			return fmt.Errorf("%w (module loaded but %s: %v)", ErrNoBridgeNetfilter, BridgeNFCallIPTables, err)
		}
	}
	cur, err := os.ReadFile(BridgeNFCallIPTables)
	if err != nil {
		return fmt.Errorf("reading %s: %w", BridgeNFCallIPTables, err)
	}
	if string(bytes.TrimSpace(cur)) == "1" {
		return nil
	}
	if err := os.WriteFile(BridgeNFCallIPTables, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("%w (setting %s to 1: %v)", ErrNoBridgeNetfilter, BridgeNFCallIPTables, err)
	}
	return nil
}
