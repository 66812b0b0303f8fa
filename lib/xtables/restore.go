package xtables

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Restore runs the iptables-restore at path with input, without flushing what input does
// not name, waiting up to 10 seconds for the xtables lock. The child runs in the network
// namespace of the calling thread.
func Restore(ctx context.Context, path string, input []byte) error {
	cmd := exec.CommandContext(ctx, path, "-w", "10", "--noflush")
	cmd.Stdin = bytes.NewReader(input)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("iptables-restore: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
