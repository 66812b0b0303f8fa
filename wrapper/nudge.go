package wrapper

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"netman/lib/apiwire"
)

// NudgeTimeout bounds the wrapper's request to the policy agent after ADD and DEL. The
// agent answers once its cycle has run, so the container's rules are usually in place
// when ADD returns; an agent that is slow or away costs the runtime at most this long.
const NudgeTimeout = time.Second

// nudgeAgent asks the policy agent at addr (host:port) to run a cycle now, as silk's
// wrapper does. It is best effort: the agent polls anyway, so a failure is logged by the
// caller and never fails the command.
func nudgeAgent(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, NudgeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+apiwire.ForcePollPath, nil)
	if err != nil {
		return err
	}
	// No proxy from the environment: the agent is on this cell.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("agent answered %s: %s", resp.Status, body)
	}
	return nil
}

// nudge runs nudgeAgent when an address is configured and logs its failure.
func (p *Plugin) nudge(ctx context.Context, cfg *Config, command, containerID string) {
	if cfg.PolicyAgentForcePollAddress == "" {
		return
	}
	if err := nudgeAgent(ctx, cfg.PolicyAgentForcePollAddress); err != nil {
		p.Logger.Warn("policy agent not nudged; it applies the change on its next poll",
			"command", command, "container", containerID, "address", cfg.PolicyAgentForcePollAddress, "error", err.Error())
	}
}
