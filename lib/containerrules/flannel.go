package containerrules

import (
	"fmt"
	"os"
	"strings"
)

// FlannelNetwork reads FLANNEL_NETWORK, the range flannel's network spans across every
// cell, from the subnet file the flannel daemon writes: the overlay of a flannel cell
// when overlay_network is not set. The wrapper and the agent read it the same way.
func FlannelNetwork(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the flannel subnet file: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "FLANNEL_NETWORK="); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("%s has no FLANNEL_NETWORK", path)
}
